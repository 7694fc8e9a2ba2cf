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
// The chosen algorithm is cached per (problem, layouts, epilogue, alignments, device).

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

// Byte alignment of a pointer, capped at 16 (the most any cuBLASLt kernel asks for): part of the algorithm
// cache key, so that an algorithm chosen for aligned operands is never reused on misaligned ones.
int alignment(std::uintptr_t p) {
  int a = 1;
  while (a < 16 && p % (2 * a) == 0) a *= 2;
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

// epilogue codes (fastattn.backends.cuda_ffn.EPILOGUES): 0 none (bias if given), 1 tanh GELU (after bias)
void gemm(int64_t M, int64_t N, int64_t K, int dtype, std::uintptr_t x, int64_t sxm, int64_t sxk,
          std::uintptr_t w, int64_t swn, int64_t swk, std::uintptr_t bias, std::uintptr_t residual, int64_t srm,
          std::uintptr_t y, int64_t sym, int epilogue, std::uintptr_t workspace, int64_t workspace_bytes,
          int device, std::uintptr_t stream) {
  BLAS_CHECK_ARG(M >= 0 && N >= 0 && K >= 0, "gemm: sizes must be >= 0, got M=" << M << ", N=" << N << ", K=" << K);
  BLAS_CHECK_ARG(epilogue == 0 || epilogue == 1,
                 "gemm: epilogue must be 0 (none/bias) or 1 (tanh GELU; cuBLASLt has no exact-erf GELU), got "
                     << epilogue);
  BLAS_CHECK_ARG(epilogue == 0 || residual == 0, "gemm: a residual cannot follow the GELU epilogue");
  BLAS_CHECK_ARG(K > 0, "gemm: K (in_features) must be > 0");
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
  BLAS_CHECK_ARG(residual == 0 || M <= 1 || srm >= N, "gemm: residual row stride " << srm << " must be >= N=" << N);
  BLAS_CHECK_ARG(workspace_bytes >= 0, "gemm: workspace_bytes must be >= 0");
  const cudaDataType_t dt = cuda_dtype(dtype);
  require_device();
  if (M == 0 || N == 0) return;
  int cur = -1;
  BLAS_CUDA_CHECK(cudaGetDevice(&cur));
  if (cur != device) BLAS_CUDA_CHECK(cudaSetDevice(device));
  cublasLtHandle_t handle = handles().get(device);

  // A = w, an N x K operand
  cublasOperation_t ta;
  uint64_t a_rows, a_cols;
  int64_t lda;
  if (swk == 1) {  // row-major (N, K) (nn.Linear): stored as a K x N column-major matrix, transposed
    ta = CUBLAS_OP_T; a_rows = K; a_cols = N; lda = swn;
  } else {  // column-major (N, K) (Conv1D weight .t())
    ta = CUBLAS_OP_N; a_rows = N; a_cols = K; lda = swk;
  }
  if (lda < static_cast<int64_t>(a_rows)) {  // fine for a single column; otherwise columns would overlap
    BLAS_CHECK_ARG(a_cols == 1, "gemm: weight strides (" << swn << ", " << swk << ") overlap (leading stride "
                                    << lda << " < " << a_rows << "); pass a weight with distinct elements");
    lda = a_rows;
  }
  // B = x^T, a K x M operand
  cublasOperation_t tb;
  uint64_t b_rows, b_cols;
  int64_t ldb;
  if (sxk == 1) {  // row-major x: x^T is K x M column-major
    tb = CUBLAS_OP_N; b_rows = K; b_cols = M; ldb = sxm;
  } else {  // column-major x: stored M x K column-major, transposed
    tb = CUBLAS_OP_T; b_rows = M; b_cols = K; ldb = sxk;
  }
  if (ldb < static_cast<int64_t>(b_rows)) {
    BLAS_CHECK_ARG(b_cols == 1, "gemm: x strides (" << sxm << ", " << sxk << ") overlap (leading stride " << ldb
                                    << " < " << b_rows << ")");
    ldb = b_rows;
  }
  const int64_t ldd = M > 1 ? sym : N;
  const int64_t ldc = residual ? (M > 1 ? srm : N) : ldd;

  Desc desc;
  const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;  // also for fp32 inputs: no TF32
  LT_CHECK(cublasLtMatmulDescCreate(&desc.op, compute, CUDA_R_32F));
  LT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  LT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  cublasLtEpilogue_t epi;
  if (epilogue == 1) epi = bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  else epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  LT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  if (bias) {
    const void* bp = reinterpret_cast<const void*>(bias);
    LT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)));
    LT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &dt, sizeof(dt)));
  }
  LT_CHECK(cublasLtMatrixLayoutCreate(&desc.a, dt, a_rows, a_cols, lda));
  LT_CHECK(cublasLtMatrixLayoutCreate(&desc.b, dt, b_rows, b_cols, ldb));
  LT_CHECK(cublasLtMatrixLayoutCreate(&desc.c, dt, N, M, ldc));
  LT_CHECK(cublasLtMatrixLayoutCreate(&desc.d, dt, N, M, ldd));

  const std::uintptr_t cptr = residual ? residual : y;
  Key key{{M, N, K, dtype, ta, tb, lda, ldb, ldc, ldd, epi, residual != 0, alignment(x), alignment(w),
           alignment(cptr), alignment(y), bias ? alignment(bias) : 0, workspace_bytes, device, 0}};
  cublasLtMatmulAlgo_t algo;
  bool found = false;
  {
    std::lock_guard<std::mutex> g(algo_cache().mu);
    auto it = algo_cache().map.find(key);
    if (it != algo_cache().map.end()) {
      algo = it->second;
      found = true;
    }
  }
  if (!found) {
    LT_CHECK(cublasLtMatmulPreferenceCreate(&desc.pref));
    uint64_t ws = static_cast<uint64_t>(workspace_bytes);
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    uint32_t al[4] = {static_cast<uint32_t>(alignment(w)), static_cast<uint32_t>(alignment(x)),
                      static_cast<uint32_t>(alignment(cptr)), static_cast<uint32_t>(alignment(y))};
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], 4));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], 4));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], 4));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[3], 4));
    cublasLtMatmulHeuristicResult_t res;
    int n = 0;
    LT_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, desc.op, desc.a, desc.b, desc.c, desc.d, desc.pref, 1, &res, &n));
    if (n == 0) {
      std::ostringstream os;
      os << "fastattn._C_blas: cuBLASLt has no algorithm for M=" << M << " N=" << N << " K=" << K
         << " dtype code " << dtype << " epilogue " << static_cast<int>(epi) << " (alignments x=" << alignment(x)
         << " w=" << alignment(w) << " y=" << alignment(y) << " bytes)";
      throw std::runtime_error(os.str());
    }
    algo = res.algo;
    std::lock_guard<std::mutex> g(algo_cache().mu);
    algo_cache().map.emplace(key, algo);
  }
  const float alpha = 1.0f, beta = residual ? 1.0f : 0.0f;
  LT_CHECK(cublasLtMatmul(handle, desc.op, &alpha, reinterpret_cast<const void*>(w), desc.a,
                          reinterpret_cast<const void*>(x), desc.b, &beta, reinterpret_cast<const void*>(cptr),
                          desc.c, reinterpret_cast<void*>(y), desc.d, &algo, reinterpret_cast<void*>(workspace),
                          static_cast<size_t>(workspace_bytes), reinterpret_cast<cudaStream_t>(stream)));
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
}
