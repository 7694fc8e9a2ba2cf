// fastattn._C_blas: row-major GEMMs with cuBLASLt fused epilogues, on the caller's stream.
//
//   y (M, N) = epilogue(x (M, K) @ w(N, K)^T + bias) + beta * residual
//
// x and w are read through their strides (one of each pair must be 1: nn.Linear weights are row-major
// (N, K), GPT-2 Conv1D weights passed as .t() are column-major), y/residual have unit column stride.
// cuBLASLt is column-major, so we compute y^T (N x M) = w (N x K) . x^T (K x M): y's row-major memory is
// exactly y^T in column-major with ld = stride_ym, and the bias (length N) runs along D's rows, which is
// what CUBLASLT_EPILOGUE_BIAS broadcasts.
//
// Which GELU is CUBLASLT_EPILOGUE_GELU(_BIAS)? The tanh approximation. The cuBLAS documentation only
// says "GELU"; PyTorch, which reaches this epilogue through aten::_addmm_activation(use_gelu=True) on
// CUDA, states the semantics in its decomposition (pytorch/pytorch torch/_decomp/decompositions.py,
// `_addmm_activation`: `if self.is_cuda: return aten.gelu(out, approximate="tanh")`). So the epilogue is
// used only for approximate="tanh"; the exact-erf GELU runs as a BIAS epilogue plus fastattn._C's
// bias_act kernel (csrc/ffn/bias_act.cu). The GPU tests pin this: the fused epilogue must match
// F.gelu(approximate="tanh") and differ from approximate="none" by the expected ~4.7e-4 near |x|=2.7.
//
// No TF32: fp32 GEMMs use CUBLAS_COMPUTE_32F (CUBLAS_COMPUTE_32F_FAST_TF32 is never requested).
// The workspace is a caller-owned device buffer (torch allocation, cached per device and stream).
// Split-K partial sums are reduced in fp32 only (REDUCTION_SCHEME_NONE | COMPUTE_TYPE).
// Per-call cost: everything cuBLASLt needs besides the pointers -- the matmul descriptor, the four matrix
// layouts and the heuristic's algorithm (or its "no algorithm" reason) -- is built once per problem key
// (sizes, dtype, transposes, leading dims, epilogue, residual, operand alignments up to 256 bytes,
// workspace size, device) and cached (GemmPlan). A repeated shape does no descriptor work: gemm() sets the
// bias pointer on the cached descriptor and enqueues. check() asks the same heuristic from metadata (and
// fills the same cache) so the Python backend can turn "no algorithm" into a dispatch reason instead of a
// launch-time error. The cache holds at most kMaxPlans entries and starts over when full.

#define FASTATTN_EXT_NAME "fastattn._C_blas"

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "common/checks.h"
#include "common/device.h"
#include "common/pybind_errors.h"

namespace py = pybind11;

namespace fastattn {
namespace {

#define LT_CHECK(expr)                                                                                   \
  do {                                                                                                   \
    cublasStatus_t _s = (expr);                                                                          \
    if (_s != CUBLAS_STATUS_SUCCESS) {                                                                   \
      std::ostringstream _os;                                                                            \
      _os << FASTATTN_EXT_NAME ": cuBLASLt error " << cublasLtGetStatusName(_s) << " ("                  \
          << cublasLtGetStatusString(_s) << ") in " << #expr;                                            \
      throw std::runtime_error(_os.str());                                                               \
    }                                                                                                    \
  } while (0)

// dtype codes shared with fastattn._C (common/device.h DType): 0 fp16, 1 bf16, 2 fp32
cudaDataType_t cuda_dtype(int code) {
  switch (code) {
    case 0: return CUDA_R_16F;
    case 1: return CUDA_R_16BF;
    case 2: return CUDA_R_32F;
  }
  throw std::invalid_argument("gemm: dtype code must be 0 (fp16), 1 (bf16) or 2 (fp32), got " + std::to_string(code));
}

// Byte alignment of a pointer, capped at 256 (cuBLASLt's default MIN_ALIGNMENT preference): part of the
// plan key and passed as the MIN_ALIGNMENT_*_BYTES preferences, so that an algorithm chosen for aligned
// operands is never reused on less aligned ones (and aligned operands are not limited to the algorithms a
// 16-byte cap would leave).
uint32_t alignment(std::uintptr_t p) {
  uint32_t a = 1;
  while (a < 256 && p % (2 * a) == 0) a *= 2;
  return a;
}

struct Handles {
  std::mutex mu;
  std::unordered_map<int, cublasLtHandle_t> by_device;
  cublasLtHandle_t get(int dev) {
    std::lock_guard<std::mutex> g(mu);
    auto it = by_device.find(dev);
    if (it != by_device.end()) return it->second;
    cublasLtHandle_t h;
    LT_CHECK(cublasLtCreate(&h));
    by_device.emplace(dev, h);  // kept for the process lifetime (destroying at exit races the driver)
    return h;
  }
};
Handles& handles() {
  static Handles* h = new Handles();
  return *h;
}

// epilogue codes (fastattn.ffn.backends.cuda EPI_*): 0 none (bias if given), 1 tanh GELU (after bias)
//
// One GEMM problem as cuBLASLt sees it: y^T (N x M) = op(A = w) . op(B = x^T) [+ C = residual^T].
struct Problem {
  int64_t M, N, K;
  int dtype;
  cudaDataType_t dt;
  cublasOperation_t ta, tb;
  uint64_t a_rows, a_cols, b_rows, b_cols;
  int64_t lda, ldb, ldc, ldd;
  cublasLtEpilogue_t epi;
  bool has_bias, has_residual;
  int64_t workspace_bytes;
  int device;
};

// Validate sizes/strides (ValueError naming the argument) and derive the column-major problem.
Problem make_problem(int64_t M, int64_t N, int64_t K, int dtype, int64_t sxm, int64_t sxk, int64_t swn, int64_t swk,
                     bool has_bias, bool has_residual, int64_t srm, int64_t sym, int epilogue, int64_t workspace_bytes,
                     int device) {
  FA_CHECK_ARG(M >= 0 && N >= 0 && K >= 0, "gemm: sizes must be >= 0, got M=" << M << ", N=" << N << ", K=" << K);
  FA_CHECK_ARG(epilogue == 0 || epilogue == 1,
                 "gemm: epilogue must be 0 (none/bias) or 1 (tanh GELU; cuBLASLt has no exact-erf GELU), got "
                     << epilogue);
  FA_CHECK_ARG(epilogue == 0 || !has_residual, "gemm: a residual cannot follow the GELU epilogue");
  FA_CHECK_ARG(K > 0, "gemm: K (in_features) must be > 0");
  FA_CHECK_ARG(workspace_bytes >= 0, "gemm: workspace_bytes must be >= 0");
  FA_CHECK_ARG(device >= 0, "gemm: device must be a CUDA device index >= 0, got " << device);
  Problem p{};
  p.M = M;
  p.N = N;
  p.K = K;
  p.dtype = dtype;
  p.dt = cuda_dtype(dtype);
  // a size-1 dim may carry any stride: give it the unit stride so the layout rules below apply
  if (K == 1) {
    swk = 1;
    sxk = 1;
  }
  if (N == 1 && swk != 1) swn = 1;
  if (M == 1 && sxk != 1) sxm = 1;
  FA_CHECK_ARG(swn == 1 || swk == 1,
                 "gemm: weight strides (" << swn << ", " << swk << ") need a unit stride on one dim");
  FA_CHECK_ARG(sxk == 1 || sxm == 1, "gemm: x strides (" << sxm << ", " << sxk << ") need a unit stride on one dim");
  FA_CHECK_ARG(M <= 1 || sym >= N, "gemm: y row stride " << sym << " must be >= N=" << N);
  FA_CHECK_ARG(!has_residual || M <= 1 || srm >= N,
                 "gemm: residual row stride " << srm << " must be >= N=" << N);
  // A = w, an N x K operand
  if (swk == 1) {  // row-major (N, K) (nn.Linear): stored as a K x N column-major matrix, transposed
    p.ta = CUBLAS_OP_T; p.a_rows = K; p.a_cols = N; p.lda = swn;
  } else {  // column-major (N, K) (Conv1D weight .t(), strides (1, N))
    p.ta = CUBLAS_OP_N; p.a_rows = N; p.a_cols = K; p.lda = swk;
  }
  if (p.lda < static_cast<int64_t>(p.a_rows)) {  // fine for a single column; otherwise columns would overlap
    FA_CHECK_ARG(p.a_cols == 1, "gemm: weight strides (" << swn << ", " << swk << ") overlap (leading stride "
                                      << p.lda << " < " << p.a_rows << "); pass a weight with distinct elements");
    p.lda = p.a_rows;
  }
  // B = x^T, a K x M operand
  if (sxk == 1) {  // row-major x: x^T is K x M column-major
    p.tb = CUBLAS_OP_N; p.b_rows = K; p.b_cols = M; p.ldb = sxm;
  } else {  // column-major x: stored M x K column-major, transposed
    p.tb = CUBLAS_OP_T; p.b_rows = M; p.b_cols = K; p.ldb = sxk;
  }
  if (p.ldb < static_cast<int64_t>(p.b_rows)) {
    FA_CHECK_ARG(p.b_cols == 1, "gemm: x strides (" << sxm << ", " << sxk << ") overlap (leading stride " << p.ldb
                                      << " < " << p.b_rows << ")");
    p.ldb = p.b_rows;
  }
  // D = y^T (N x M, ld = y's row stride); the bias (length N) runs along D's rows, as cuBLASLt requires
  p.ldd = M > 1 ? sym : N;
  p.ldc = has_residual ? (M > 1 ? srm : N) : p.ldd;
  if (epilogue == 1) p.epi = has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  else p.epi = has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  p.has_bias = has_bias;
  p.has_residual = has_residual;
  p.workspace_bytes = workspace_bytes;
  p.device = device;
  return p;
}

// ------------------------------------------------------------------------------------------ plan cache
// Everything cuBLASLt needs for one problem key except the pointers: the matmul descriptor, the four
// layouts and the heuristic's answer. Built once (build_plan), then shared by every gemm()/check() of that
// key; gemm() only writes the bias pointer into `op` (under `mu`) before enqueueing.
struct GemmPlan {
  std::mutex mu;  // guards the bias-pointer attribute of `op` from the set to the enqueue
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  bool ok = false;            // the heuristic found an algorithm
  cublasLtMatmulAlgo_t algo;  // valid when ok
  std::string why;            // the reason when !ok
  GemmPlan() { std::memset(&algo, 0, sizeof(algo)); }
  ~GemmPlan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
};

struct PlanKey {
  int64_t v[20];
  bool operator==(const PlanKey& o) const { return std::memcmp(v, o.v, sizeof(v)) == 0; }
};
struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t x : k.v) h = (h ^ std::hash<int64_t>()(x)) * 1099511628211ull;
    return h;
  }
};

// Bounded: a server that sees ever new token counts (M) must not grow without limit. When full the cache
// starts over; plans still in use by a caller stay alive through their shared_ptr.
constexpr size_t kMaxPlans = 4096;

struct PlanCache {
  std::mutex mu;
  std::unordered_map<PlanKey, std::shared_ptr<GemmPlan>, PlanKeyHash> map;
  std::atomic<uint64_t> hits{0}, misses{0};
};
PlanCache& plan_cache() {
  static PlanCache* c = new PlanCache();  // never destroyed (descriptors outliving the driver at exit)
  return *c;
}

// The operand alignments (bytes, powers of two <= 256) that select an algorithm, with the problem.
struct Alignments {
  uint32_t x, w, c, y, bias;  // bias: 0 without a bias
};

PlanKey plan_key(const Problem& p, const Alignments& al) {
  return PlanKey{{p.M, p.N, p.K, p.dtype, p.ta, p.tb, p.lda, p.ldb, p.ldc, p.ldd, p.epi, p.has_residual, al.x, al.w,
                  al.c, al.y, p.has_bias ? al.bias : 0, p.workspace_bytes, p.device, 0}};
}

// Descriptors + heuristic for `p`. `bias` is a pointer of the key's bias alignment (the heuristic never
// dereferences it but reads its alignment from its value: cublasLt.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER).
// Caller holds the device (DeviceGuard).
std::shared_ptr<GemmPlan> build_plan(const Problem& p, const Alignments& al, std::uintptr_t bias,
                                     cublasLtHandle_t handle) {
  auto plan = std::make_shared<GemmPlan>();
  // fp16/bf16/fp32 all accumulate in fp32 with fp32 alpha/beta (host pointer mode, the default);
  // CUBLAS_COMPUTE_32F also for fp32 inputs: no TF32
  LT_CHECK(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LT_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &p.ta, sizeof(p.ta)));
  LT_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &p.tb, sizeof(p.tb)));
  LT_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &p.epi, sizeof(p.epi)));
  if (p.has_bias) {
    const void* bp = reinterpret_cast<const void*>(bias);
    LT_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)));
    LT_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &p.dt, sizeof(p.dt)));
  }
  LT_CHECK(cublasLtMatrixLayoutCreate(&plan->a, p.dt, p.a_rows, p.a_cols, p.lda));
  LT_CHECK(cublasLtMatrixLayoutCreate(&plan->b, p.dt, p.b_rows, p.b_cols, p.ldb));
  LT_CHECK(cublasLtMatrixLayoutCreate(&plan->c, p.dt, p.N, p.M, p.ldc));
  LT_CHECK(cublasLtMatrixLayoutCreate(&plan->d, p.dt, p.N, p.M, p.ldd));

  cublasLtMatmulPreference_t pref = nullptr;
  LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  struct PrefGuard {
    cublasLtMatmulPreference_t pr;
    ~PrefGuard() { cublasLtMatmulPreferenceDestroy(pr); }
  } pref_guard{pref};
  uint64_t ws = static_cast<uint64_t>(p.workspace_bytes);
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  // Split-K partial sums only in fp32 (the compute type): INPLACE and OUTPUT_TYPE add the parts up in the
  // output type (fp16/bf16), an extra rounding per split that eager PyTorch avoids when reduced-precision
  // reduction is disallowed (cuBLAS docs, cublasLtReductionScheme_t). COMPUTE_TYPE is also deterministic.
  uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof(red)));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al.w, 4));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al.x, 4));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al.c, 4));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al.y, 4));
  cublasLtMatmulHeuristicResult_t res;
  std::memset(&res, 0, sizeof(res));
  int n = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle, plan->op, plan->a, plan->b, plan->c, plan->d, pref, 1,
                                                     &res, &n);
  if (st != CUBLAS_STATUS_SUCCESS || n == 0 || res.state != CUBLAS_STATUS_SUCCESS) {
    std::ostringstream os;
    os << "cuBLASLt has no algorithm for M=" << p.M << " N=" << p.N << " K=" << p.K << " dtype code " << p.dtype
       << " epilogue " << static_cast<int>(p.epi) << (p.has_residual ? " with a residual" : "")
       << " (operand alignments x=" << al.x << " w=" << al.w << " y=" << al.y << " bias=" << al.bias
       << " bytes, leading dims w=" << p.lda << " x=" << p.ldb << " y=" << p.ldd << ")";
    if (st != CUBLAS_STATUS_SUCCESS) os << ": " << cublasLtGetStatusName(st);
    plan->why = os.str();
    return plan;  // "no algorithm" is cached too: check() asks about it on every dispatch
  }
  plan->algo = res.algo;
  plan->ok = true;
  return plan;
}

// The cached plan of (p, al), built on a miss. Caller holds the device (DeviceGuard).
std::shared_ptr<GemmPlan> get_plan(const Problem& p, const Alignments& al, std::uintptr_t bias,
                                   cublasLtHandle_t handle) {
  PlanCache& cache = plan_cache();
  const PlanKey key = plan_key(p, al);
  {
    std::lock_guard<std::mutex> g(cache.mu);
    auto it = cache.map.find(key);
    if (it != cache.map.end()) {
      cache.hits.fetch_add(1, std::memory_order_relaxed);
      return it->second;
    }
  }
  cache.misses.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<GemmPlan> plan = build_plan(p, al, bias, handle);  // outside the lock: the heuristic is slow
  std::lock_guard<std::mutex> g(cache.mu);
  if (cache.map.size() >= kMaxPlans) cache.map.clear();
  auto ins = cache.map.emplace(key, plan);  // another thread may have built the same key meanwhile
  return ins.first->second;
}

// ------------------------------------------------------------------------------------------ entry points
void gemm(int64_t M, int64_t N, int64_t K, int dtype, std::uintptr_t x, int64_t sxm, int64_t sxk,
          std::uintptr_t w, int64_t swn, int64_t swk, std::uintptr_t bias, std::uintptr_t residual, int64_t srm,
          std::uintptr_t y, int64_t sym, int epilogue, std::uintptr_t workspace, int64_t workspace_bytes,
          int device, std::uintptr_t stream) {
  const Problem p = make_problem(M, N, K, dtype, sxm, sxk, swn, swk, bias != 0, residual != 0, srm, sym, epilogue,
                                 workspace_bytes, device);
  require_device();
  if (M == 0 || N == 0) return;
  DeviceGuard guard(device);
  cublasLtHandle_t handle = handles().get(device);
  const std::uintptr_t cptr = residual ? residual : y;
  const Alignments al{alignment(x), alignment(w), alignment(cptr), alignment(y), bias ? alignment(bias) : 0u};
  std::shared_ptr<GemmPlan> plan = get_plan(p, al, bias, handle);
  if (!plan->ok) throw std::runtime_error(FASTATTN_EXT_NAME ": " + plan->why);
  const float alpha = 1.0f, beta = residual ? 1.0f : 0.0f;
  std::lock_guard<std::mutex> g(plan->mu);
  if (p.has_bias) {
    const void* bp = reinterpret_cast<const void*>(bias);
    LT_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)));
  }
  LT_CHECK(cublasLtMatmul(handle, plan->op, &alpha, reinterpret_cast<const void*>(w), plan->a,
                          reinterpret_cast<const void*>(x), plan->b, &beta, reinterpret_cast<const void*>(cptr),
                          plan->c, reinterpret_cast<void*>(y), plan->d, &plan->algo, reinterpret_cast<void*>(workspace),
                          static_cast<size_t>(workspace_bytes), as_stream(stream)));
}

// Metadata-only twin of gemm() for not_supported_reasons: the plan (descriptors + heuristic) for the operand
// alignments given in bytes (what alignment() gives for the real pointers), "" or the reason. Fills the
// cache gemm() reads.
std::string check(int64_t M, int64_t N, int64_t K, int dtype, int64_t sxm, int64_t sxk, int64_t swn, int64_t swk,
                  bool has_bias, bool has_residual, int64_t srm, int64_t sym, int epilogue, int64_t workspace_bytes,
                  int device, int64_t align_x, int64_t align_w, int64_t align_bias, int64_t align_residual,
                  int64_t align_y) {
  const Problem p = make_problem(M, N, K, dtype, sxm, sxk, swn, swk, has_bias, has_residual, srm, sym, epilogue,
                                 workspace_bytes, device);
  for (int64_t a : {align_x, align_w, align_bias, align_residual, align_y})
    FA_CHECK_ARG(a >= 1 && a <= 256 && (a & (a - 1)) == 0, "check: alignments must be powers of two in 1..256");
  require_device();
  if (M == 0 || N == 0) return "";
  DeviceGuard guard(device);
  cublasLtHandle_t handle = handles().get(device);
  const Alignments al{static_cast<uint32_t>(align_x), static_cast<uint32_t>(align_w),
                      static_cast<uint32_t>(has_residual ? align_residual : align_y), static_cast<uint32_t>(align_y),
                      has_bias ? static_cast<uint32_t>(align_bias) : 0u};
  // a stand-in bias pointer with exactly the given alignment (never dereferenced by the heuristic)
  const std::uintptr_t fake_bias = has_bias ? static_cast<std::uintptr_t>(align_bias) : 0;
  std::shared_ptr<GemmPlan> plan = get_plan(p, al, fake_bias, handle);
  return plan->ok ? "" : plan->why;
}

py::dict cache_stats() {
  PlanCache& cache = plan_cache();
  py::dict d;
  {
    std::lock_guard<std::mutex> g(cache.mu);
    d["entries"] = cache.map.size();
  }
  d["hits"] = cache.hits.load();
  d["misses"] = cache.misses.load();
  d["max_entries"] = kMaxPlans;
  return d;
}

std::string version() {
  std::ostringstream os;
  os << "cuBLASLt " << cublasLtGetVersion() << " (headers " << CUBLAS_VER_MAJOR << "." << CUBLAS_VER_MINOR << "."
     << CUBLAS_VER_PATCH << ")";
  return os.str();
}

}  // namespace
}  // namespace fastattn

PYBIND11_MODULE(_C_blas, m) {
  using namespace fastattn;
  m.doc() = "fastattn cuBLASLt GEMMs with fused epilogues (raw pointers + strides + stream)";
  register_argument_error(m);
  m.def("version", &version, "the cuBLASLt library version loaded at run time and the headers built against");
  m.def("gemm", &gemm, py::arg("M"), py::arg("N"), py::arg("K"), py::arg("dtype"), py::arg("x_ptr"),
        py::arg("stride_xm"), py::arg("stride_xk"), py::arg("w_ptr"), py::arg("stride_wn"), py::arg("stride_wk"),
        py::arg("bias_ptr"), py::arg("residual_ptr"), py::arg("stride_rm"), py::arg("y_ptr"), py::arg("stride_ym"),
        py::arg("epilogue"), py::arg("workspace_ptr"), py::arg("workspace_bytes"), py::arg("device"),
        py::arg("stream"),
        "y (M, N) = epi(x (M, K) @ w (N, K)^T + bias) + residual, row-major y/residual with unit column "
        "stride; epilogue 0 = none/bias, 1 = tanh GELU (cuBLASLt GELU_BIAS). Pointers 0 = absent. "
        "dtype 0 fp16, 1 bf16, 2 fp32 (fp32 computed without TF32). Launched on `stream`.");
  m.def("check", &check, py::arg("M"), py::arg("N"), py::arg("K"), py::arg("dtype"), py::arg("stride_xm"),
        py::arg("stride_xk"), py::arg("stride_wn"), py::arg("stride_wk"), py::arg("has_bias"), py::arg("has_residual"),
        py::arg("stride_rm"), py::arg("stride_ym"), py::arg("epilogue"), py::arg("workspace_bytes"), py::arg("device"),
        py::arg("align_x"), py::arg("align_w"), py::arg("align_bias"), py::arg("align_residual"), py::arg("align_y"),
        "'' when cuBLASLt has an algorithm for this gemm() problem at these operand alignments (bytes, powers of "
        "two <= 256), else the reason. Metadata only (no pointers); the choice is cached for gemm().");
  m.def("cache_stats", &cache_stats,
        "The descriptor + heuristic plan cache shared by gemm() and check(): entries, hits, misses, "
        "max_entries. A repeated problem is a hit and builds no descriptor.");
}
