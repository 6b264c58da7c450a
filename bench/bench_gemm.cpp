// gemm_bf16 against OpenBLAS sgemm at gpt2-medium's shapes (C = 1024), measured in the same run,
// interleaved call by call: training products at N tokens (forward, output head, backward dinp
// and dW), whole-step sequences of products where every step has a different N, generation
// row counts, the portable path (what a CPU without AVX512-BF16 runs), the first-call
// (primitive creation) cost, and to_bf16's throughput. Results are checked against sgemm before
// timing. One JSON line per result, medians over repeats after a warm-up.
// Usage: bench_gemm [repeats] [N]      e.g. bench_gemm 5 450
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "llmft/model/kernels/bf16.h"
#include "common.h"
#include "llmft/model/kernels/matmul.h"

using namespace llmft::kernels;

namespace {

using llmft::bench::now_s;
using llmft::bench::median;

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}
long rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6)) / 1024;
  return -1;
}

struct Shape {
  const char* name;
  bool ta, tb;
  int64_t M, N, K;
  double flop() const { return 2.0 * static_cast<double>(M) * static_cast<double>(N) * K; }
};

// Operands big enough for every shape: the largest is the head weight (50257 x 1024) and its
// gradient; products read the leading part.
struct Buffers {
  std::vector<bf16> a, b;
  std::vector<float> af, bf, c;
  explicit Buffers(size_t n) : a(n), b(n), af(n), bf(n), c(n) {
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (size_t i = 0; i < n; ++i) {
      a[i] = float_to_bf16(d(rng));
      b[i] = float_to_bf16(0.02f * d(rng));
    }
    from_bf16(af, a);
    from_bf16(bf, b);
  }
};

void run_sgemm(const Shape& s, Buffers& buf, float beta) {
  llmft::kernels::sgemm(s.ta, s.tb, s.M, s.N, s.K, buf.af.data(), s.ta ? s.M : s.K, buf.bf.data(),
                        s.tb ? s.K : s.N, beta, buf.c.data(), s.N);
}
void run_bf16(const Shape& s, Buffers& buf, float beta) {
  gemm_bf16(s.ta, s.tb, s.M, s.N, s.K, buf.a.data(), s.ta ? s.M : s.K, buf.b.data(),
            s.tb ? s.K : s.N, beta, buf.c.data(), s.N);
}

// The products of one gpt2-medium training step at N tokens (L = 24), in the model's order.
std::vector<Shape> step_shapes(int64_t N) {
  const int64_t C = 1024, V = 50257;
  std::vector<Shape> v;
  for (int l = 0; l < 24; ++l) {
    v.push_back({"qkv", false, false, N, 3 * C, C});
    v.push_back({"attn_proj", false, false, N, C, C});
    v.push_back({"fc", false, false, N, 4 * C, C});
    v.push_back({"fc_proj", false, false, N, C, 4 * C});
  }
  v.push_back({"head", false, true, N, V, C});
  v.push_back({"head_dinp", false, false, N, C, V});
  v.push_back({"head_dw", true, false, V, C, N});
  for (int l = 0; l < 24; ++l) {
    v.push_back({"fc_proj_dinp", false, true, N, 4 * C, C});
    v.push_back({"fc_proj_dw", true, false, 4 * C, C, N});
    v.push_back({"fc_dinp", false, true, N, C, 4 * C});
    v.push_back({"fc_dw", true, false, C, 4 * C, N});
    v.push_back({"attn_proj_dinp", false, true, N, C, C});
    v.push_back({"attn_proj_dw", true, false, C, C, N});
    v.push_back({"qkv_dinp", false, true, N, C, 3 * C});
    v.push_back({"qkv_dw", true, false, C, 3 * C, N});
  }
  return v;
}

// Largest |bf16 - sgemm| relative to the largest |sgemm|: same exact products, fp32 sums in
// different orders, so ~1e-6; a wrong transpose or bf16 rounding would show as >1e-3.
double check(const Shape& s, Buffers& buf) {
  run_sgemm(s, buf, 0.0f);
  const size_t n = static_cast<size_t>(s.M * s.N);
  std::vector<float> ref(buf.c.begin(), buf.c.begin() + static_cast<long>(n));
  run_bf16(s, buf, 0.0f);
  double err = 0, mag = 0;
  for (size_t i = 0; i < n; ++i) {
    err = std::max(err, static_cast<double>(std::fabs(buf.c[i] - ref[i])));
    mag = std::max(mag, static_cast<double>(std::fabs(ref[i])));
  }
  return err / mag;
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::stoi(argv[1]) : 5;
  const int64_t N = argc > 2 ? std::stoll(argv[2]) : 450;
  Buffers buf(static_cast<size_t>(50257) * 1024);
  fmt::print("{{\"context\": \"bench_gemm\", \"threads\": {}, \"compiler\": \"{}\", "
             "\"bf16_native\": {}, \"repeats\": {}, \"N\": {}, \"loadavg_start\": \"{}\"}}\n",
             omp_get_max_threads(), __VERSION__, bf16_native(), repeats, N, loadavg());

  // First call of a new shape (oneDNN primitive creation) vs a cached call.
  {
    const Shape s{"qkv", false, false, 333, 3072, 1024};
    double t0 = now_s();
    run_bf16(s, buf, 1.0f);
    const double first = now_s() - t0;
    std::vector<double> t, tn;
    for (int r = 0; r < repeats; ++r) {
      t0 = now_s();
      run_bf16(s, buf, 1.0f);
      t.push_back(now_s() - t0);
    }
    // A shape not seen before, after the library's start-up: the cost of a new token count.
    for (int r = 0; r < repeats; ++r) {
      const Shape fresh{"qkv", false, false, 334 + r, 3072, 1024};
      t0 = now_s();
      run_bf16(fresh, buf, 1.0f);
      tn.push_back(now_s() - t0);
    }
    fmt::print("{{\"bench\": \"first_call\", \"shape\": \"{}x{}x{}\", \"process_first_ms\": {:.3f}, "
               "\"cached_ms\": {:.3f}, \"new_shape_ms\": {:.3f}}}\n",
               s.M, s.N, s.K, first * 1e3, median(t) * 1e3, median(tn) * 1e3);
  }

  // to_bf16 (activations (N, 4C), the head weight (V, C)) against the scalar rounding loop.
  for (size_t n : {static_cast<size_t>(N * 4096), static_cast<size_t>(50257) * 1024}) {
    std::span<const float> in(buf.c.data(), n);
    std::span<bf16> out(buf.a.data(), n);
    std::fill(buf.c.begin(), buf.c.begin() + static_cast<long>(n), 1.2345f);
    std::vector<double> tv, ts;
    for (int r = 0; r <= repeats; ++r) {
      double t0 = now_s();
      to_bf16(out, in);
      const double t1 = now_s();
      for (size_t i = 0; i < n; ++i) out[i] = float_to_bf16(in[i]);
      const double t2 = now_s();
      if (r > 0) {
        tv.push_back(t1 - t0);
        ts.push_back(t2 - t1);
      }
    }
    // Bytes read and written.
    fmt::print("{{\"bench\": \"to_bf16\", \"elements\": {}, \"gbytes_per_s\": {:.1f}, "
               "\"plain_loop_one_thread_gbytes_per_s\": {:.1f}}}\n",
               n, 6.0 * static_cast<double>(n) / median(tv) * 1e-9,
               6.0 * static_cast<double>(n) / median(ts) * 1e-9);
  }
  buf = Buffers(buf.a.size());

  // Single products at N tokens, then generation row counts.
  std::vector<Shape> shapes;
  for (const Shape& s : step_shapes(N)) {
    bool seen = false;
    for (const Shape& x : shapes) seen |= std::string(x.name) == s.name;
    if (!seen) shapes.push_back(s);
  }
  for (int64_t M : {1, 8, 64, 110}) {
    shapes.push_back({"gen_qkv", false, false, M, 3072, 1024});
    shapes.push_back({"gen_fc_proj", false, false, M, 1024, 4096});
    shapes.push_back({"gen_head", false, true, M, 50257, 1024});
  }
  for (const Shape& s : shapes) {
    const double err = check(s, buf);
    std::vector<double> ts, tb, tp, ratio;
    for (int r = 0; r <= repeats; ++r) {  // r = 0: warm-up
      double t0 = now_s();
      run_sgemm(s, buf, 1.0f);
      const double t1 = now_s();
      run_bf16(s, buf, 1.0f);
      const double t2 = now_s();
      set_bf16_native(false);
      run_bf16(s, buf, 1.0f);
      set_bf16_native(true);
      const double t3 = now_s();
      if (r > 0) {
        ts.push_back(t1 - t0);
        tb.push_back(t2 - t1);
        tp.push_back(t3 - t2);
        ratio.push_back((t1 - t0) / (t2 - t1));
      }
    }
    fmt::print("{{\"bench\": \"gemm\", \"name\": \"{}\", \"trans\": \"{}{}\", \"M\": {}, \"N\": {}, "
               "\"K\": {}, \"sgemm_gflops\": {:.1f}, \"bf16_gflops\": {:.1f}, \"ratio\": {:.2f}, "
               "\"portable_gflops\": {:.1f}, \"sgemm_ms\": {:.3f}, \"bf16_ms\": {:.3f}, "
               "\"max_rel_diff\": {:.1e}}}\n",
               s.name, s.ta ? 'T' : 'N', s.tb ? 'T' : 'N', s.M, s.N, s.K,
               s.flop() / median(ts) * 1e-9, s.flop() / median(tb) * 1e-9, median(ratio),
               s.flop() / median(tp) * 1e-9, median(ts) * 1e3, median(tb) * 1e3, err);
  }

  // Whole training steps' products, a different N each step (300..700), sgemm and bf16 steps
  // interleaved at the same N.
  {
    std::mt19937 rng(5);
    std::vector<double> gs, gb, ratio;
    const long rss0 = rss_mib();
    for (int step = 0; step <= repeats; ++step) {
      const int64_t n = 300 + static_cast<int64_t>(rng() % 401);
      const std::vector<Shape> seq = step_shapes(n);
      double flop = 0;
      for (const Shape& s : seq) flop += s.flop();
      double t0 = now_s();
      for (const Shape& s : seq) run_sgemm(s, buf, 1.0f);
      const double t1 = now_s();
      for (const Shape& s : seq) run_bf16(s, buf, 1.0f);
      const double t2 = now_s();
      fmt::print("{{\"bench\": \"step_products\", \"step\": {}, \"N\": {}, \"products\": {}, "
                 "\"sgemm_s\": {:.3f}, \"bf16_s\": {:.3f}, \"ratio\": {:.2f}}}\n",
                 step, n, seq.size(), t1 - t0, t2 - t1, (t1 - t0) / (t2 - t1));
      if (step > 0) {
        gs.push_back(flop / (t1 - t0) * 1e-9);
        gb.push_back(flop / (t2 - t1) * 1e-9);
        ratio.push_back((t1 - t0) / (t2 - t1));
      }
    }
    fmt::print("{{\"bench\": \"varying_n_steps\", \"steps\": {}, \"sgemm_gflops\": {:.1f}, "
               "\"bf16_gflops\": {:.1f}, \"ratio\": {:.2f}, \"rss_growth_mib\": {}}}\n",
               gs.size(), median(gs), median(gb), median(ratio), rss_mib() - rss0);
  }
  fmt::print("{{\"context\": \"bench_gemm\", \"loadavg_end\": \"{}\"}}\n", loadavg());
}
