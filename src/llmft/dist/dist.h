// Data-parallel processes (MPI): the ranks of `mpirun -np N llmft ...` (or srun). A program
// started without an MPI launcher, or built without MPI, is rank 0 of 1 and every call here is
// a no-op. Every rank runs the same program on the same data; a training step splits its batch
// across the ranks and sums their gradients (train/trainer.cpp, train/dpo.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace llmft::dist {

// Joins the launcher's job when there is one (MPI_Init); call once, first thing in main.
void init(int* argc, char*** argv);
// Leaves it (MPI_Finalize); called at exit by init's registration, safe to call twice.
void finalize();

int rank();
int size();
inline bool is_root() { return rank() == 0; }
// Ranks started on this machine (for the default thread count); 1 without a launcher.
int local_size();

// This rank's share of a batch of items with these costs (tokens): the items dealt longest first,
// each to the rank with the least so far (ties: the lower rank), returned as positions in
// `costs` in their batch order. One rank: every position, in order.
std::vector<size_t> share(std::span<const int64_t> costs);

// In place, elementwise, identical on every rank after the call.
void sum(std::span<float> x);
void sum(std::span<double> x);
double sum(double x);
// True on every rank when it is true on any (a stop request seen by one rank stops all).
bool any(bool x);
// Rank 0's value on every rank.
void broadcast(std::string& s);
// Ends every rank of the job at once with this exit code (after an error on one rank, so the
// others do not wait for it forever).
[[noreturn]] void abort(int code);

}  // namespace llmft::dist
