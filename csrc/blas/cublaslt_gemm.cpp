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
// The chosen algorithm is cached per (problem, layouts, epilogue, operand alignments up to 256 bytes,
// workspace size, device); check() asks the same heuristic from metadata so the Python backend can turn
// "no algorithm" into a dispatch reason instead of a launch-time error.

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>

namespace py = pybind11;

namespace {

#define BLAS_CHECK_ARG(cond, ...)                 \
  do {                                            \
    if (!(cond)) {                                \
      std::ostringstream _os;                     \
      _os << __VA_ARGS__;                         \
      throw std::invalid_argument(_os.str());     \
    }                                             \
  } while (0)

#define BLAS_CUDA_CHECK(expr)                                                                          \
  do {                                                                                                 \
    cudaError_t _e = (expr);                                                                           \
    if (_e != cudaSuccess) {                                                                           \
      std::ostringstream _os;                                                                          \
      _os << "fastattn._C_blas: CUDA error " << cudaGetErrorName(_e) << " (" << cudaGetErrorString(_e) \
          << ") in " << #expr;                                                                         \
      throw std::runtime_error(_os.str());                                                             \
    }                                                                                                  \
  } while (0)

#define LT_CHECK(expr)                                                                                   \
  do {                                                                                                   \
    cublasStatus_t _s = (expr);                                                                          \
    if (_s != CUBLAS_STATUS_SUCCESS) {                                                                   \
      std::ostringstream _os;                                                                            \
      _os << "fastattn._C_blas: cuBLASLt error " << cublasLtGetStatusName(_s) << " ("                    \
          << cublasLtGetStatusString(_s) << ") in " << #expr;                                            \
      throw std::runtime_error(_os.str());                                                               \
    }                                                                                                    \
  } while (0)

void require_device() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess || n == 0) {
    cudaGetLastError();
    std::ostringstream os;
    os << "fastattn._C_blas: no usable CUDA device ("
       << (err != cudaSuccess ? std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err)
                              : std::string("0 devices"))
       << "); the cuda backend needs an NVIDIA GPU with a working driver";
    throw std::runtime_error(os.str());
  }
}

// dtype codes shared with fastattn._C (csrc/common.h DType): 0 fp16, 1 bf16, 2 fp32
cudaDataType_t cuda_dtype(int code) {
  switch (code) {
    case 0: return CUDA_R_16F;
    case 1: return CUDA_R_16BF;
    case 2: return CUDA_R_32F;
  }
  throw std::invalid_argument("fastattn._C_blas: dtype code must be 0 (fp16), 1 (bf16) or 2 (fp32), got " +
                              std::to_string(code));
}

// Byte alignment of a pointer, capped at 256 (cuBLASLt's default MIN_ALIGNMENT preference): part of the
// algorithm cache key and passed as the MIN_ALIGNMENT_*_BYTES preferences, so that an algorithm chosen for
// aligned operands is never reused on less aligned ones (and aligned operands are not limited to the
// algorithms a 16-byte cap would leave).
uint32_t alignment(std::uintptr_t p) {
  uint32_t a = 1;
  while (a < 256 && p % (2 * a) == 0) a *= 2;
  return a;
}

// Restores the caller's current device on scope exit (the Python side already enters the tensor's device;
// this keeps a direct call from leaving the process on another device).
struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int dev) {
    BLAS_CUDA_CHECK(cudaGetDevice(&prev));
    if (prev != dev) BLAS_CUDA_CHECK(cudaSetDevice(dev));
    else prev = -1;
  }
  ~DeviceGuard() {
    if (prev >= 0) cudaSetDevice(prev);
  }
};

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

struct Key {
  int64_t v[20];
  bool operator==(const Key& o) const { return std::memcmp(v, o.v, sizeof(v)) == 0; }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t x : k.v) h = (h ^ std::hash<int64_t>()(x)) * 1099511628211ull;
    return h;
  }
};
struct AlgoCache {
  std::mutex mu;
  std::unordered_map<Key, cublasLtMatmulAlgo_t, KeyHash> map;
};
AlgoCache& algo_cache() {
  static AlgoCache* c = new AlgoCache();
  return *c;
}

// RAII for the per-call descriptors (cheap to create; the algorithm search is what is cached).
struct Desc {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Desc() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// epilogue codes (fastattn.backends.cuda_ffn EPI_*): 0 none (bias if given), 1 tanh GELU (after bias)
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
  BLAS_CHECK_ARG(M >= 0 && N >= 0 && K >= 0, "gemm: sizes must be >= 0, got M=" << M << ", N=" << N << ", K=" << K);
  BLAS_CHECK_ARG(epilogue == 0 || epilogue == 1,
                 "gemm: epilogue must be 0 (none/bias) or 1 (tanh GELU; cuBLASLt has no exact-erf GELU), got "
                     << epilogue);
  BLAS_CHECK_ARG(epilogue == 0 || !has_residual, "gemm: a residual cannot follow the GELU epilogue");
  BLAS_CHECK_ARG(K > 0, "gemm: K (in_features) must be > 0");
  BLAS_CHECK_ARG(workspace_bytes >= 0, "gemm: workspace_bytes must be >= 0");
  BLAS_CHECK_ARG(device >= 0, "gemm: device must be a CUDA device index >= 0, got " << device);
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
  BLAS_CHECK_ARG(swn == 1 || swk == 1,
                 "gemm: weight strides (" << swn << ", " << swk << ") need a unit stride on one dim");
  BLAS_CHECK_ARG(sxk == 1 || sxm == 1, "gemm: x strides (" << sxm << ", " << sxk << ") need a unit stride on one dim");
  BLAS_CHECK_ARG(M <= 1 || sym >= N, "gemm: y row stride " << sym << " must be >= N=" << N);
  BLAS_CHECK_ARG(!has_residual || M <= 1 || srm >= N,
                 "gemm: residual row stride " << srm << " must be >= N=" << N);
  // A = w, an N x K operand
  if (swk == 1) {  // row-major (N, K) (nn.Linear): stored as a K x N column-major matrix, transposed
    p.ta = CUBLAS_OP_T; p.a_rows = K; p.a_cols = N; p.lda = swn;
  } else {  // column-major (N, K) (Conv1D weight .t(), strides (1, N))
    p.ta = CUBLAS_OP_N; p.a_rows = N; p.a_cols = K; p.lda = swk;
  }
  if (p.lda < static_cast<int64_t>(p.a_rows)) {  // fine for a single column; otherwise columns would overlap
    BLAS_CHECK_ARG(p.a_cols == 1, "gemm: weight strides (" << swn << ", " << swk << ") overlap (leading stride "
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
    BLAS_CHECK_ARG(p.b_cols == 1, "gemm: x strides (" << sxm << ", " << sxk << ") overlap (leading stride " << p.ldb
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

// Build the descriptors of `p` into `desc`. `bias` is the bias pointer (0 = none); the heuristic never
// dereferences it but reads its alignment from its value (cublasLt.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER).
void build_desc(const Problem& p, std::uintptr_t bias, Desc& desc) {
  // fp16/bf16/fp32 all accumulate in fp32 with fp32 alpha/beta (host pointer mode, the default);
  // CUBLAS_COMPUTE_32F also for fp32 inputs: no TF32
  LT_CHECK(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &p.ta, sizeof(p.ta)));
  LT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &p.tb, sizeof(p.tb)));
  LT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &p.epi, sizeof(p.epi)));
  if (p.has_bias) {
    const void* bp = reinterpret_cast<const void*>(bias);
    LT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)));
    LT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &p.dt, sizeof(p.dt)));
  }
  LT_CHECK(cublasLtMatrixLayoutCreate(&desc.a, p.dt, p.a_rows, p.a_cols, p.lda));
  LT_CHECK(cublasLtMatrixLayoutCreate(&desc.b, p.dt, p.b_rows, p.b_cols, p.ldb));
  LT_CHECK(cublasLtMatrixLayoutCreate(&desc.c, p.dt, p.N, p.M, p.ldc));
  LT_CHECK(cublasLtMatrixLayoutCreate(&desc.d, p.dt, p.N, p.M, p.ldd));
}

// The cached algorithm for `p` at these operand alignments (bytes, <= 256), or false with `why` set.
// Caller holds the device (DeviceGuard) and has built `desc`.
bool find_algo(const Problem& p, uint32_t al_x, uint32_t al_w, uint32_t al_c, uint32_t al_y, uint32_t al_bias,
               cublasLtHandle_t handle, Desc& desc, cublasLtMatmulAlgo_t* algo, std::string* why) {
  Key key{{p.M, p.N, p.K, p.dtype, p.ta, p.tb, p.lda, p.ldb, p.ldc, p.ldd, p.epi, p.has_residual, al_x, al_w, al_c,
           al_y, p.has_bias ? al_bias : 0, p.workspace_bytes, p.device, 0}};
  {
    std::lock_guard<std::mutex> g(algo_cache().mu);
    auto it = algo_cache().map.find(key);
    if (it != algo_cache().map.end()) {
      *algo = it->second;
      return true;
    }
  }
  LT_CHECK(cublasLtMatmulPreferenceCreate(&desc.pref));
  uint64_t ws = static_cast<uint64_t>(p.workspace_bytes);
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  // Split-K partial sums only in fp32 (the compute type): INPLACE and OUTPUT_TYPE add the parts up in the
  // output type (fp16/bf16), an extra rounding per split that eager PyTorch avoids when reduced-precision
  // reduction is disallowed (cuBLAS docs, cublasLtReductionScheme_t). COMPUTE_TYPE is also deterministic.
  uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red,
                                                sizeof(red)));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_w, 4));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_x, 4));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, 4));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_y, 4));
  cublasLtMatmulHeuristicResult_t res;
  std::memset(&res, 0, sizeof(res));
  int n = 0;
  cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle, desc.op, desc.a, desc.b, desc.c, desc.d, desc.pref, 1, &res, &n);
  if (st != CUBLAS_STATUS_SUCCESS || n == 0 || res.state != CUBLAS_STATUS_SUCCESS) {
    std::ostringstream os;
    os << "cuBLASLt has no algorithm for M=" << p.M << " N=" << p.N << " K=" << p.K << " dtype code " << p.dtype
       << " epilogue " << static_cast<int>(p.epi) << (p.has_residual ? " with a residual" : "")
       << " (operand alignments x=" << al_x << " w=" << al_w << " y=" << al_y << " bias=" << al_bias
       << " bytes, leading dims w=" << p.lda << " x=" << p.ldb << " y=" << p.ldd << ")";
    if (st != CUBLAS_STATUS_SUCCESS) os << ": " << cublasLtGetStatusName(st);
    *why = os.str();
    return false;
  }
  *algo = res.algo;
  std::lock_guard<std::mutex> g(algo_cache().mu);
  algo_cache().map.emplace(key, *algo);
  return true;
}

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
  Desc desc;
  build_desc(p, bias, desc);
  const std::uintptr_t cptr = residual ? residual : y;
  cublasLtMatmulAlgo_t algo;
  std::string why;
  if (!find_algo(p, alignment(x), alignment(w), alignment(cptr), alignment(y), bias ? alignment(bias) : 0, handle,
                 desc, &algo, &why))
    throw std::runtime_error("fastattn._C_blas: " + why);
  const float alpha = 1.0f, beta = residual ? 1.0f : 0.0f;
  LT_CHECK(cublasLtMatmul(handle, desc.op, &alpha, reinterpret_cast<const void*>(w), desc.a,
                          reinterpret_cast<const void*>(x), desc.b, &beta, reinterpret_cast<const void*>(cptr),
                          desc.c, reinterpret_cast<void*>(y), desc.d, &algo, reinterpret_cast<void*>(workspace),
                          static_cast<size_t>(workspace_bytes), reinterpret_cast<cudaStream_t>(stream)));
}

// Metadata-only twin of gemm() for not_supported_reasons: runs (and caches) the heuristic for the operand
// alignments given in bytes (what alignment() gives for the real pointers) and returns "" or the reason.
std::string check(int64_t M, int64_t N, int64_t K, int dtype, int64_t sxm, int64_t sxk, int64_t swn, int64_t swk,
                  bool has_bias, bool has_residual, int64_t srm, int64_t sym, int epilogue, int64_t workspace_bytes,
                  int device, int64_t align_x, int64_t align_w, int64_t align_bias, int64_t align_residual,
                  int64_t align_y) {
  const Problem p = make_problem(M, N, K, dtype, sxm, sxk, swn, swk, has_bias, has_residual, srm, sym, epilogue,
                                 workspace_bytes, device);
  for (int64_t a : {align_x, align_w, align_bias, align_residual, align_y})
    BLAS_CHECK_ARG(a >= 1 && a <= 256 && (a & (a - 1)) == 0, "check: alignments must be powers of two in 1..256");
  require_device();
  if (M == 0 || N == 0) return "";
  DeviceGuard guard(device);
  cublasLtHandle_t handle = handles().get(device);
  Desc desc;
  // a stand-in bias pointer with exactly the given alignment (never dereferenced by the heuristic)
  const std::uintptr_t fake_bias = has_bias ? static_cast<std::uintptr_t>(align_bias) : 0;
  build_desc(p, fake_bias, desc);
  const uint32_t al_c = static_cast<uint32_t>(has_residual ? align_residual : align_y);
  cublasLtMatmulAlgo_t algo;
  std::string why;
  if (!find_algo(p, static_cast<uint32_t>(align_x), static_cast<uint32_t>(align_w), al_c,
                 static_cast<uint32_t>(align_y), static_cast<uint32_t>(align_bias), handle, desc, &algo, &why))
    return why;
  return "";
}

std::string version() {
  std::ostringstream os;
  os << "cuBLASLt " << cublasLtGetVersion() << " (headers " << CUBLAS_VER_MAJOR << "." << CUBLAS_VER_MINOR << "."
     << CUBLAS_VER_PATCH << ")";
  return os.str();
}

}  // namespace

PYBIND11_MODULE(_C_blas, m) {
  m.doc() = "fastattn cuBLASLt GEMMs with fused epilogues (raw pointers + strides + stream)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
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
}
