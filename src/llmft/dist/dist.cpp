// The ranks of an MPI job; see dist.h. Built without MPI (LLMFT_HAVE_MPI unset) it is one rank.
#include "llmft/dist/dist.h"

#include <algorithm>
#include <cstdlib>
#include <limits>

#include "llmft/core/error.h"

#ifdef LLMFT_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace llmft::dist {

namespace {
int g_rank = 0, g_size = 1, g_local = 1;
bool g_mpi = false;

// A launcher's environment: Open MPI's mpirun, PMIx (srun --mpi=pmix) or PMI (MPICH, srun).
bool launched() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

#ifdef LLMFT_HAVE_MPI
// Sums in chunks of at most INT_MAX elements (MPI counts are int).
template <typename T>
void allreduce(T* x, size_t n, MPI_Datatype type, MPI_Op op) {
  constexpr size_t kChunk = std::numeric_limits<int>::max() / 2;
  for (size_t i = 0; i < n; i += kChunk) {
    const int count = static_cast<int>(std::min(kChunk, n - i));
    MPI_Allreduce(MPI_IN_PLACE, x + i, count, type, op, MPI_COMM_WORLD);
  }
}
#endif
}  // namespace

void init(int* argc, char*** argv) {
#ifdef LLMFT_HAVE_MPI
  if (g_mpi || !launched()) return;
  MPI_Init(argc, argv);
  g_mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &local);
  MPI_Comm_size(local, &g_local);
  MPI_Comm_free(&local);
  std::atexit(finalize);
#else
  (void)argc;
  (void)argv;
  if (launched() && std::getenv("OMPI_COMM_WORLD_SIZE") &&
      std::atoi(std::getenv("OMPI_COMM_WORLD_SIZE")) > 1)
    throw Error("this llmft was built without MPI, so it cannot run under mpirun",
                "install Open MPI (libopenmpi-dev) and build again");
#endif
}

void finalize() {
#ifdef LLMFT_HAVE_MPI
  if (!g_mpi) return;
  g_mpi = false;
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Finalize();
#endif
}

std::vector<size_t> share(std::span<const int64_t> costs) {
  std::vector<size_t> order(costs.size()), mine;
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (g_size == 1) return order;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<int64_t> load(static_cast<size_t>(g_size), 0);
  for (size_t i : order) {
    const auto r = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    load[r] += costs[i];
    if (static_cast<int>(r) == g_rank) mine.push_back(i);
  }
  std::sort(mine.begin(), mine.end());
  return mine;
}

int rank() { return g_rank; }
int size() { return g_size; }
int local_size() { return g_local; }

void sum(std::span<float> x) {
#ifdef LLMFT_HAVE_MPI
  if (g_size > 1) allreduce(x.data(), x.size(), MPI_FLOAT, MPI_SUM);
#else
  (void)x;
#endif
}

void sum(std::span<double> x) {
#ifdef LLMFT_HAVE_MPI
  if (g_size > 1) allreduce(x.data(), x.size(), MPI_DOUBLE, MPI_SUM);
#else
  (void)x;
#endif
}

double sum(double x) {
  sum(std::span<double>(&x, 1));
  return x;
}

bool any(bool x) {
#ifdef LLMFT_HAVE_MPI
  if (g_size > 1) {
    int v = x ? 1 : 0;
    allreduce(&v, 1, MPI_INT, MPI_MAX);
    return v != 0;
  }
#endif
  return x;
}

void broadcast(std::string& s) {
#ifdef LLMFT_HAVE_MPI
  if (g_size <= 1) return;
  auto n = static_cast<long long>(s.size());
  MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  s.resize(static_cast<size_t>(n));
  if (n > 0) MPI_Bcast(s.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
#else
  (void)s;
#endif
}

void abort(int code) {
#ifdef LLMFT_HAVE_MPI
  if (g_mpi && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

}  // namespace llmft::dist
