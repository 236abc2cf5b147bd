// gems native kernels: float32 matrix kernels that run on tensors living in the tfjs-backend-wasm heap.
//
// The wasm backend keeps every tensor in one WebAssembly.Memory. JavaScript hands us that memory's ArrayBuffer and
// byte offsets (from backend.dataIdMap), and we compute in place with OpenBLAS, single-threaded by default (two
// threads measured slower for training on a 2-core machine, and never mix OpenBLAS threads with OpenMP).
// Every entry point checks that each range it touches lies inside the buffer, so a bad offset throws instead of
// corrupting memory.
#include <node_api.h>

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
// Declared here (not only via cblas.h) so the build does not depend on which BLAS the cblas.h alternative names.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char* openblas_get_config(void);
char* openblas_get_corename(void);
}

namespace {

// Activation codes shared with src/compute/nativeKernels.ts.
enum Activation { kLinear = 0, kRelu = 1, kRelu6 = 2, kElu = 3, kSigmoid = 4, kLeakyRelu = 5, kPrelu = 6 };

struct Heap {
  uint8_t* data = nullptr;
  size_t length = 0;
};

bool Throw(napi_env env, const std::string& message) {
  napi_throw_error(env, "GEMS_NATIVE", message.c_str());
  return false;
}

bool GetHeap(napi_env env, napi_value value, Heap* heap) {
  bool is_ab = false;
  napi_is_arraybuffer(env, value, &is_ab);
  if (is_ab) {
    void* data = nullptr;
    size_t length = 0;
    if (napi_get_arraybuffer_info(env, value, &data, &length) != napi_ok) return Throw(env, "cannot read heap buffer");
    heap->data = static_cast<uint8_t*>(data);
    heap->length = length;
    return true;
  }
  bool is_ta = false;
  napi_is_typedarray(env, value, &is_ta);
  if (is_ta) {
    napi_typedarray_type type;
    size_t count = 0;
    void* data = nullptr;
    napi_value ab;
    size_t byte_offset = 0;
    if (napi_get_typedarray_info(env, value, &type, &count, &data, &ab, &byte_offset) != napi_ok) {
      return Throw(env, "cannot read typed array");
    }
    size_t elem = 1;
    switch (type) {
      case napi_int16_array: case napi_uint16_array: elem = 2; break;
      case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
      case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
      default: elem = 1;
    }
    heap->data = static_cast<uint8_t*>(data);
    heap->length = count * elem;
    return true;
  }
  return Throw(env, "heap must be an ArrayBuffer or a typed array");
}

bool GetInt(napi_env env, napi_value value, int64_t* out, const char* name) {
  if (napi_get_value_int64(env, value, out) != napi_ok) return Throw(env, std::string(name) + " must be a number");
  return true;
}

bool GetDouble(napi_env env, napi_value value, double* out, const char* name) {
  if (napi_get_value_double(env, value, out) != napi_ok) return Throw(env, std::string(name) + " must be a number");
  return true;
}

bool GetBool(napi_env env, napi_value value, bool* out, const char* name) {
  napi_valuetype t;
  napi_typeof(env, value, &t);
  if (t == napi_boolean) return napi_get_value_bool(env, value, out) == napi_ok;
  int64_t v = 0;
  if (!GetInt(env, value, &v, name)) return false;
  *out = v != 0;
  return true;
}

bool GetIntArray(napi_env env, napi_value value, std::vector<int64_t>* out, const char* name) {
  bool is_array = false;
  napi_is_array(env, value, &is_array);
  if (!is_array) return Throw(env, std::string(name) + " must be an array of numbers");
  uint32_t n = 0;
  napi_get_array_length(env, value, &n);
  out->resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    napi_value item;
    napi_get_element(env, value, i, &item);
    if (!GetInt(env, item, &(*out)[i], name)) return false;
  }
  return true;
}

// True when [offset, offset + bytes) lies inside the heap and offset is 4-byte aligned.
bool CheckRange(napi_env env, const Heap& heap, int64_t offset, int64_t bytes, const char* what) {
  if (offset < 0 || bytes < 0 || (offset & 3) != 0 || static_cast<uint64_t>(offset) + bytes > heap.length) {
    return Throw(env, std::string(what) + ": range [" + std::to_string(offset) + ", +" + std::to_string(bytes) +
                          ") is outside the heap of " + std::to_string(heap.length) + " bytes or misaligned");
  }
  return true;
}

// `slopes` (prelu only) has one slope per column; `cols` is the row length.
void ApplyActivation(float* c, int64_t count, int act, float alpha, const float* slopes, int64_t cols) {
  switch (act) {
    case kRelu:
      for (int64_t i = 0; i < count; ++i) c[i] = c[i] > 0.f ? c[i] : 0.f;
      break;
    case kRelu6:
      for (int64_t i = 0; i < count; ++i) c[i] = std::min(std::max(c[i], 0.f), 6.f);
      break;
    case kElu:
      for (int64_t i = 0; i < count; ++i) c[i] = c[i] >= 0.f ? c[i] : std::expm1(c[i]);
      break;
    case kSigmoid:
      for (int64_t i = 0; i < count; ++i) c[i] = 1.f / (1.f + std::exp(-c[i]));
      break;
    case kLeakyRelu:
      for (int64_t i = 0; i < count; ++i) c[i] = c[i] < 0.f ? alpha * c[i] : c[i];
      break;
    case kPrelu:
      for (int64_t i = 0; i < count; ++i) c[i] = c[i] < 0.f ? slopes[i % cols] * c[i] : c[i];
      break;
    default:
      break;
  }
}

// exp for float32 that GCC vectorises (no libm call): Cephes expf range reduction + degree-6 polynomial,
// ~1 ulp on [-87, 88]; inputs are clamped there (exp(-87) ≈ 1.6e-38 stands in for 0 in a softmax).
inline float FastExp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  // Round x·log2(e) to nearest with the 1.5·2^23 trick (exact without -ffast-math), then x = n·ln2 + r.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// One softmax row: returns log Σ exp(z). The wide target clone is picked at load time on CPUs with AVX2.
__attribute__((target_clones("avx2", "default"))) float RowLogSumExp(const float* z, int64_t classes) {
  float mx = z[0];
#pragma omp simd reduction(max : mx)
  for (int64_t c = 1; c < classes; ++c) mx = std::max(mx, z[c]);
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < classes; ++c) sum += FastExp(z[c] - mx);
  return mx + std::log(sum);
}

__attribute__((target_clones("avx2", "default"))) void RowSoftmaxScaled(const float* z, float lse, float g, float* d,
                                                                         int64_t classes) {
#pragma omp simd
  for (int64_t c = 0; c < classes; ++c) d[c] = g * FastExp(z[c] - lse);
}

__attribute__((target_clones("avx2", "default"))) void RowSoftmax(const float* z, float* y, int64_t cols) {
  float mx = z[0];
#pragma omp simd reduction(max : mx)
  for (int64_t c = 1; c < cols; ++c) mx = std::max(mx, z[c]);
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < cols; ++c) {
    y[c] = FastExp(z[c] - mx);
    sum += y[c];
  }
  const float inv = 1.f / sum;
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) y[c] *= inv;
}

// dx = y · (dy − Σ dy·y) for one row: the softmax gradient in one pass over memory.
__attribute__((target_clones("avx2", "default"))) void RowSoftmaxGrad(const float* y, const float* dy, float* dx,
                                                                       int64_t cols) {
  float dot = 0.f;
#pragma omp simd reduction(+ : dot)
  for (int64_t c = 0; c < cols; ++c) dot += dy[c] * y[c];
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) dx[c] = y[c] * (dy[c] - dot);
}

napi_value MakeUndefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

// matmul(heap, aOff, bOff, cOff, batch, m, n, k, transA, transB, strideA, strideB, biasOff, act, alpha, preluOff)
// C[b] = act(op(A[b]) · op(B[b]) + bias) for b < batch; A[b] starts at aOff + b·strideA floats (strideA = 0
// broadcasts one matrix over the batch), likewise B. biasOff < 0 means no bias; the bias has n floats, as do the
// prelu slopes at preluOff (act = prelu).
napi_value MatMul(napi_env env, napi_callback_info info) {
  size_t argc = 16;
  napi_value argv[16];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 12) {
    Throw(env, "matmul expects (heap, aOff, bOff, cOff, batch, m, n, k, transA, transB, strideA, strideB, "
               "[biasOff, act, alpha, preluOff])");
    return nullptr;
  }
  Heap heap;
  int64_t a_off, b_off, c_off, batch, m, n, k, stride_a, stride_b, bias_off = -1, act = kLinear, prelu_off = -1;
  bool trans_a = false, trans_b = false;
  double alpha = 0;
  if (!GetHeap(env, argv[0], &heap) || !GetInt(env, argv[1], &a_off, "aOff") || !GetInt(env, argv[2], &b_off, "bOff") ||
      !GetInt(env, argv[3], &c_off, "cOff") || !GetInt(env, argv[4], &batch, "batch") ||
      !GetInt(env, argv[5], &m, "m") || !GetInt(env, argv[6], &n, "n") || !GetInt(env, argv[7], &k, "k") ||
      !GetBool(env, argv[8], &trans_a, "transA") || !GetBool(env, argv[9], &trans_b, "transB") ||
      !GetInt(env, argv[10], &stride_a, "strideA") || !GetInt(env, argv[11], &stride_b, "strideB")) {
    return nullptr;
  }
  if (argc > 12 && !GetInt(env, argv[12], &bias_off, "biasOff")) return nullptr;
  if (argc > 13 && !GetInt(env, argv[13], &act, "act")) return nullptr;
  if (argc > 14 && !GetDouble(env, argv[14], &alpha, "alpha")) return nullptr;
  if (argc > 15 && !GetInt(env, argv[15], &prelu_off, "preluOff")) return nullptr;
  if (batch < 0 || m < 0 || n < 0 || k < 0 || stride_a < 0 || stride_b < 0 || act < kLinear || act > kPrelu || (act == kPrelu && prelu_off < 0)) {
    Throw(env, "matmul: negative dimension/stride or unknown activation");
    return nullptr;
  }
  if (batch == 0 || m == 0 || n == 0) return MakeUndefined(env);
  const int64_t a_last = (batch - 1) * stride_a * 4 + m * k * 4;
  const int64_t b_last = (batch - 1) * stride_b * 4 + k * n * 4;
  if (!CheckRange(env, heap, a_off, a_last, "matmul A") || !CheckRange(env, heap, b_off, b_last, "matmul B") ||
      !CheckRange(env, heap, c_off, batch * m * n * 4, "matmul C") ||
      (bias_off >= 0 && !CheckRange(env, heap, bias_off, n * 4, "matmul bias")) ||
      (act == kPrelu && !CheckRange(env, heap, prelu_off, n * 4, "matmul prelu slopes"))) {
    return nullptr;
  }
  float* base = reinterpret_cast<float*>(heap.data);
  const float* bias = bias_off >= 0 ? base + bias_off / 4 : nullptr;
  const float* slopes = act == kPrelu ? base + prelu_off / 4 : nullptr;
  const int lda = static_cast<int>(trans_a ? m : k);
  const int ldb = static_cast<int>(trans_b ? k : n);
  for (int64_t b = 0; b < batch; ++b) {
    const float* A = base + a_off / 4 + b * stride_a;
    const float* B = base + b_off / 4 + b * stride_b;
    float* C = base + c_off / 4 + b * m * n;
    float beta = 0.f;
    if (bias != nullptr) {
      for (int64_t i = 0; i < m; ++i) std::memcpy(C + i * n, bias, n * sizeof(float));
      beta = 1.f;
    }
    if (k == 0) {
      if (bias == nullptr) std::memset(C, 0, m * n * sizeof(float));
    } else {
      cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                  static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.f, A, lda, B, ldb, beta, C,
                  static_cast<int>(n));
    }
    if (act != kLinear) ApplyActivation(C, m * n, static_cast<int>(act), static_cast<float>(alpha), slopes, n);
  }
  return MakeUndefined(env);
}

// Copies a 2-D tile: out[j][i] = in[i][j] for i < rows, j < cols with row strides in_ld / out_ld (elements).
void TransposeTile(const uint32_t* in, uint32_t* out, int64_t rows, int64_t cols, int64_t in_ld, int64_t out_ld) {
  constexpr int64_t kBlock = 32;
  for (int64_t i0 = 0; i0 < rows; i0 += kBlock) {
    const int64_t i1 = std::min(rows, i0 + kBlock);
    for (int64_t j0 = 0; j0 < cols; j0 += kBlock) {
      const int64_t j1 = std::min(cols, j0 + kBlock);
      for (int64_t j = j0; j < j1; ++j) {
        uint32_t* o = out + j * out_ld;
        for (int64_t i = i0; i < i1; ++i) o[i] = in[i * in_ld + j];
      }
    }
  }
}

// transpose(heap, xOff, outOff, shape, perm): out = transpose(x, perm) for 4-byte elements (float32 / int32).
napi_value Transpose(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 5) {
    Throw(env, "transpose expects (heap, xOff, outOff, shape, perm)");
    return nullptr;
  }
  Heap heap;
  int64_t x_off, out_off;
  std::vector<int64_t> shape, perm;
  if (!GetHeap(env, argv[0], &heap) || !GetInt(env, argv[1], &x_off, "xOff") ||
      !GetInt(env, argv[2], &out_off, "outOff") || !GetIntArray(env, argv[3], &shape, "shape") ||
      !GetIntArray(env, argv[4], &perm, "perm")) {
    return nullptr;
  }
  const size_t rank = shape.size();
  if (perm.size() != rank) {
    Throw(env, "transpose: perm length differs from rank");
    return nullptr;
  }
  std::vector<bool> seen(rank, false);
  int64_t size = 1;
  for (size_t i = 0; i < rank; ++i) {
    if (perm[i] < 0 || static_cast<size_t>(perm[i]) >= rank || seen[perm[i]] || shape[i] < 0) {
      Throw(env, "transpose: perm is not a permutation of the axes, or a dimension is negative");
      return nullptr;
    }
    seen[perm[i]] = true;
    size *= shape[i];
  }
  if (!CheckRange(env, heap, x_off, size * 4, "transpose x") ||
      !CheckRange(env, heap, out_off, size * 4, "transpose out")) {
    return nullptr;
  }
  if (size == 0) return MakeUndefined(env);
  const uint32_t* x = reinterpret_cast<const uint32_t*>(heap.data + x_off);
  uint32_t* out = reinterpret_cast<uint32_t*>(heap.data + out_off);

  // Input strides, then output dims described by (size, input stride), dropping size-1 dims and merging output
  // neighbours that are also neighbours in the input (their combined stride stays regular).
  std::vector<int64_t> in_stride(rank);
  int64_t s = 1;
  for (size_t i = rank; i-- > 0;) {
    in_stride[i] = s;
    s *= shape[i];
  }
  std::vector<int64_t> dims, strides;
  for (size_t j = 0; j < rank; ++j) {
    const int64_t d = shape[perm[j]], st = in_stride[perm[j]];
    if (d == 1) continue;
    if (!dims.empty() && strides.back() == st * d) {
      dims.back() *= d;
      strides.back() = st;
    } else {
      dims.push_back(d);
      strides.push_back(st);
    }
  }
  const size_t r = dims.size();
  if (r <= 1) {
    std::memcpy(out, x, size * 4);
    return MakeUndefined(env);
  }
  std::vector<int64_t> out_stride(r);
  s = 1;
  for (size_t j = r; j-- > 0;) {
    out_stride[j] = s;
    s *= dims[j];
  }
  const size_t a = r - 1;  // output's innermost dim
  size_t b = 0;            // output position of the input's innermost dim (stride 1)
  for (size_t j = 0; j < r; ++j)
    if (strides[j] == 1) b = j;
  // Odometer over every dim except a and b; each step copies one contiguous row (b == a) or transposes one tile.
  std::vector<size_t> outer;
  for (size_t j = 0; j < r; ++j)
    if (j != a && j != b) outer.push_back(j);
  std::vector<int64_t> idx(outer.size(), 0);
  int64_t in_base = 0, out_base = 0;
  while (true) {
    if (b == a) {
      std::memcpy(out + out_base, x + in_base, dims[a] * 4);
    } else {
      // Tile rows follow dim b (contiguous in the input), columns follow dim a (contiguous in the output).
      TransposeTile(x + in_base, out + out_base, dims[a], dims[b], strides[a], out_stride[b]);
    }
    size_t q = outer.size();
    while (q > 0) {
      --q;
      const size_t j = outer[q];
      if (++idx[q] < dims[j]) {
        in_base += strides[j];
        out_base += out_stride[j];
        break;
      }
      in_base -= strides[j] * (dims[j] - 1);
      out_base -= out_stride[j] * (dims[j] - 1);
      idx[q] = 0;
      if (q == 0) return MakeUndefined(env);
    }
    if (outer.empty()) return MakeUndefined(env);
  }
}

// softmaxXent(heap, logitsOff, labelsOff, lossOff, lseOff, rows, classes)
// For each row: lse = log Σ exp(logits), loss = lse − logits[label] (label < 0 ⇒ loss 0, row ignored).
napi_value SoftmaxXent(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 7) {
    Throw(env, "softmaxXent expects (heap, logitsOff, labelsOff, lossOff, lseOff, rows, classes)");
    return nullptr;
  }
  Heap heap;
  int64_t lo, la, lso, lseo, rows, classes;
  if (!GetHeap(env, argv[0], &heap) || !GetInt(env, argv[1], &lo, "logitsOff") ||
      !GetInt(env, argv[2], &la, "labelsOff") || !GetInt(env, argv[3], &lso, "lossOff") ||
      !GetInt(env, argv[4], &lseo, "lseOff") || !GetInt(env, argv[5], &rows, "rows") ||
      !GetInt(env, argv[6], &classes, "classes")) {
    return nullptr;
  }
  if (rows < 0 || classes <= 0 || !CheckRange(env, heap, lo, rows * classes * 4, "softmaxXent logits") ||
      !CheckRange(env, heap, la, rows * 4, "softmaxXent labels") ||
      !CheckRange(env, heap, lso, rows * 4, "softmaxXent loss") ||
      !CheckRange(env, heap, lseo, rows * 4, "softmaxXent lse")) {
    return nullptr;
  }
  const float* logits = reinterpret_cast<const float*>(heap.data + lo);
  const int32_t* labels = reinterpret_cast<const int32_t*>(heap.data + la);
  float* loss = reinterpret_cast<float*>(heap.data + lso);
  float* lse = reinterpret_cast<float*>(heap.data + lseo);
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = logits + r * classes;
    const float l = RowLogSumExp(z, classes);
    lse[r] = l;
    const int32_t y = labels[r];
    loss[r] = (y >= 0 && y < classes) ? l - z[y] : 0.f;
  }
  return MakeUndefined(env);
}

// softmaxXentGrad(heap, logitsOff, labelsOff, lseOff, dyOff, dxOff, rows, classes)
// dx[r, c] = dy[r] · (exp(logits[r, c] − lse[r]) − [c == label[r]]); ignored rows (label < 0) get 0.
napi_value SoftmaxXentGrad(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 8) {
    Throw(env, "softmaxXentGrad expects (heap, logitsOff, labelsOff, lseOff, dyOff, dxOff, rows, classes)");
    return nullptr;
  }
  Heap heap;
  int64_t lo, la, lseo, dyo, dxo, rows, classes;
  if (!GetHeap(env, argv[0], &heap) || !GetInt(env, argv[1], &lo, "logitsOff") ||
      !GetInt(env, argv[2], &la, "labelsOff") || !GetInt(env, argv[3], &lseo, "lseOff") ||
      !GetInt(env, argv[4], &dyo, "dyOff") || !GetInt(env, argv[5], &dxo, "dxOff") ||
      !GetInt(env, argv[6], &rows, "rows") || !GetInt(env, argv[7], &classes, "classes")) {
    return nullptr;
  }
  if (rows < 0 || classes <= 0 || !CheckRange(env, heap, lo, rows * classes * 4, "softmaxXentGrad logits") ||
      !CheckRange(env, heap, la, rows * 4, "softmaxXentGrad labels") ||
      !CheckRange(env, heap, lseo, rows * 4, "softmaxXentGrad lse") ||
      !CheckRange(env, heap, dyo, rows * 4, "softmaxXentGrad dy") ||
      !CheckRange(env, heap, dxo, rows * classes * 4, "softmaxXentGrad dx")) {
    return nullptr;
  }
  const float* logits = reinterpret_cast<const float*>(heap.data + lo);
  const int32_t* labels = reinterpret_cast<const int32_t*>(heap.data + la);
  const float* lse = reinterpret_cast<const float*>(heap.data + lseo);
  const float* dy = reinterpret_cast<const float*>(heap.data + dyo);
  float* dx = reinterpret_cast<float*>(heap.data + dxo);
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = logits + r * classes;
    float* d = dx + r * classes;
    const int32_t y = labels[r];
    if (y < 0 || y >= classes) {
      std::memset(d, 0, classes * sizeof(float));
      continue;
    }
    RowSoftmaxScaled(z, lse[r], dy[r], d, classes);
    d[y] -= dy[r];
  }
  return MakeUndefined(env);
}

// softmax(heap, xOff, yOff, rows, cols): row-wise softmax over the last axis.
napi_value Softmax(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  Heap heap;
  int64_t xo, yo, rows, cols;
  if (argc < 5) {
    Throw(env, "softmax expects (heap, xOff, yOff, rows, cols)");
    return nullptr;
  }
  if (!GetHeap(env, argv[0], &heap) || !GetInt(env, argv[1], &xo, "xOff") || !GetInt(env, argv[2], &yo, "yOff") ||
      !GetInt(env, argv[3], &rows, "rows") || !GetInt(env, argv[4], &cols, "cols")) {
    return nullptr;
  }
  if (rows < 0 || cols <= 0 || !CheckRange(env, heap, xo, rows * cols * 4, "softmax x") ||
      !CheckRange(env, heap, yo, rows * cols * 4, "softmax y")) {
    return nullptr;
  }
  const float* x = reinterpret_cast<const float*>(heap.data + xo);
  float* y = reinterpret_cast<float*>(heap.data + yo);
  for (int64_t r = 0; r < rows; ++r) RowSoftmax(x + r * cols, y + r * cols, cols);
  return MakeUndefined(env);
}

// softmaxGrad(heap, yOff, dyOff, dxOff, rows, cols): dx = y · (dy − Σ dy·y) row-wise.
napi_value SoftmaxGrad(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  Heap heap;
  int64_t yo, dyo, dxo, rows, cols;
  if (argc < 6) {
    Throw(env, "softmaxGrad expects (heap, yOff, dyOff, dxOff, rows, cols)");
    return nullptr;
  }
  if (!GetHeap(env, argv[0], &heap) || !GetInt(env, argv[1], &yo, "yOff") || !GetInt(env, argv[2], &dyo, "dyOff") ||
      !GetInt(env, argv[3], &dxo, "dxOff") || !GetInt(env, argv[4], &rows, "rows") || !GetInt(env, argv[5], &cols, "cols")) {
    return nullptr;
  }
  if (rows < 0 || cols <= 0 || !CheckRange(env, heap, yo, rows * cols * 4, "softmaxGrad y") ||
      !CheckRange(env, heap, dyo, rows * cols * 4, "softmaxGrad dy") ||
      !CheckRange(env, heap, dxo, rows * cols * 4, "softmaxGrad dx")) {
    return nullptr;
  }
  const float* y = reinterpret_cast<const float*>(heap.data + yo);
  const float* dy = reinterpret_cast<const float*>(heap.data + dyo);
  float* dx = reinterpret_cast<float*>(heap.data + dxo);
  for (int64_t r = 0; r < rows; ++r) RowSoftmaxGrad(y + r * cols, dy + r * cols, dx + r * cols, cols);
  return MakeUndefined(env);
}

// Reduction over the middle axis of x viewed as [outer, n, inner]: sum, mean or max. Contiguous axis groups of any
// tensor map onto this view, so bias gradients (sum over leading axes) need no transpose, unlike tfjs-backend-wasm.
enum ReduceOp { kSum = 0, kMean = 1, kMax = 2 };

__attribute__((target_clones("avx2", "default"))) float ReduceRow(const float* x, int64_t n, int op) {
  if (op == kMax) {
    float mx = x[0];
#pragma omp simd reduction(max : mx)
    for (int64_t r = 1; r < n; ++r) mx = std::max(mx, x[r]);
    return mx;
  }
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t r = 0; r < n; ++r) sum += x[r];
  return sum;
}

// acc[i] (op)= row[i] for one [inner] row: the strided (inner > 1) case, vectorised along the kept axis.
__attribute__((target_clones("avx2", "default"))) void AccumulateRow(float* acc, const float* row, int64_t inner, int op) {
  if (op == kMax) {
#pragma omp simd
    for (int64_t i = 0; i < inner; ++i) acc[i] = std::max(acc[i], row[i]);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < inner; ++i) acc[i] += row[i];
  }
}

// reduce(heap, xOff, outOff, outer, n, inner, op): out[o, i] = op over r < n of x[o, r, i]; n ≥ 1.
napi_value Reduce(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  Heap heap;
  int64_t xo, oo, outer, n, inner, op;
  if (argc < 7) {
    Throw(env, "reduce expects (heap, xOff, outOff, outer, n, inner, op)");
    return nullptr;
  }
  if (!GetHeap(env, argv[0], &heap) || !GetInt(env, argv[1], &xo, "xOff") || !GetInt(env, argv[2], &oo, "outOff") ||
      !GetInt(env, argv[3], &outer, "outer") || !GetInt(env, argv[4], &n, "n") || !GetInt(env, argv[5], &inner, "inner") ||
      !GetInt(env, argv[6], &op, "op")) {
    return nullptr;
  }
  if (outer < 0 || n < 1 || inner < 0 || op < kSum || op > kMax) {
    Throw(env, "reduce: outer and inner must be ≥ 0, n ≥ 1, op 0 (sum), 1 (mean) or 2 (max)");
    return nullptr;
  }
  if (!CheckRange(env, heap, xo, outer * n * inner * 4, "reduce x") || !CheckRange(env, heap, oo, outer * inner * 4, "reduce out")) {
    return nullptr;
  }
  const float* x = reinterpret_cast<const float*>(heap.data + xo);
  float* out = reinterpret_cast<float*>(heap.data + oo);
  const int acc_op = op == kMax ? kMax : kSum;
  for (int64_t o = 0; o < outer; ++o) {
    const float* xs = x + o * n * inner;
    float* os = out + o * inner;
    if (inner == 1) {
      os[0] = ReduceRow(xs, n, acc_op);
    } else {
      std::memcpy(os, xs, inner * sizeof(float));
      for (int64_t r = 1; r < n; ++r) AccumulateRow(os, xs + r * inner, inner, acc_op);
    }
  }
  if (op == kMean) {
    const float scale = 1.f / static_cast<float>(n);
    for (int64_t i = 0; i < outer * inner; ++i) out[i] *= scale;
  }
  return MakeUndefined(env);
}

// expand(heap, dyOff, outOff, outer, n, inner, scale): out[o, r, i] = scale · dy[o, i] — the gradient of a Sum
// (scale 1) or Mean (scale 1/n) over the middle axis, without the ones tensor tfjs multiplies by.
napi_value Expand(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  Heap heap;
  int64_t dyo, oo, outer, n, inner;
  double scale;
  if (argc < 7) {
    Throw(env, "expand expects (heap, dyOff, outOff, outer, n, inner, scale)");
    return nullptr;
  }
  if (!GetHeap(env, argv[0], &heap) || !GetInt(env, argv[1], &dyo, "dyOff") || !GetInt(env, argv[2], &oo, "outOff") ||
      !GetInt(env, argv[3], &outer, "outer") || !GetInt(env, argv[4], &n, "n") || !GetInt(env, argv[5], &inner, "inner") ||
      !GetDouble(env, argv[6], &scale, "scale")) {
    return nullptr;
  }
  if (outer < 0 || n < 0 || inner < 0) {
    Throw(env, "expand: outer, n and inner must be ≥ 0");
    return nullptr;
  }
  if (!CheckRange(env, heap, dyo, outer * inner * 4, "expand dy") || !CheckRange(env, heap, oo, outer * n * inner * 4, "expand out")) {
    return nullptr;
  }
  const float* dy = reinterpret_cast<const float*>(heap.data + dyo);
  float* out = reinterpret_cast<float*>(heap.data + oo);
  const float s = static_cast<float>(scale);
  for (int64_t o = 0; o < outer; ++o) {
    const float* d = dy + o * inner;
    float* os = out + o * n * inner;
    if (inner == 1) {
      std::fill(os, os + n, d[0] * s);
      continue;
    }
    for (int64_t i = 0; i < inner; ++i) os[i] = d[i] * s;
    for (int64_t r = 1; r < n; ++r) std::memcpy(os + r * inner, os, inner * sizeof(float));
  }
  return MakeUndefined(env);
}

// layerNorm(heap, xOff, gOff, bOff, yOff, meanOff, rstdOff, rows, d, eps): per row of d values,
// y = (x − mean)·rstd·g + b with rstd = 1/√(var + eps) (biased variance); mean and rstd are kept for the gradient.
__attribute__((target_clones("avx2", "default"))) void LayerNormRow(const float* x, const float* g, const float* b,
                                                                     float* y, float* mean_out, float* rstd_out,
                                                                     int64_t d, float eps) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < d; ++i) sum += x[i];
  const float mean = sum / static_cast<float>(d);
  float sq = 0.f;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < d; ++i) sq += (x[i] - mean) * (x[i] - mean);
  const float rstd = 1.f / std::sqrt(sq / static_cast<float>(d) + eps);
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) y[i] = (x[i] - mean) * rstd * g[i] + b[i];
  *mean_out = mean;
  *rstd_out = rstd;
}

// dx = rstd·(dy·g − mean(dy·g) − x̂·mean(dy·g·x̂)) for one row; dg += dy·x̂, db += dy (double accumulators).
__attribute__((target_clones("avx2", "default"))) void LayerNormGradRow(const float* x, const float* g, float mean,
                                                                         float rstd, const float* dy, float* dx,
                                                                         double* dg, double* db, int64_t d) {
  float s1 = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t i = 0; i < d; ++i) {
    const float xh = (x[i] - mean) * rstd;
    const float gy = dy[i] * g[i];
    s1 += gy;
    s2 += gy * xh;
  }
  s1 /= static_cast<float>(d);
  s2 /= static_cast<float>(d);
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) {
    const float xh = (x[i] - mean) * rstd;
    dx[i] = rstd * (dy[i] * g[i] - s1 - xh * s2);
    dg[i] += static_cast<double>(dy[i] * xh);
    db[i] += static_cast<double>(dy[i]);
  }
}

napi_value LayerNorm(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  Heap heap;
  int64_t xo, go, bo, yo, mo, ro, rows, d;
  double eps;
  if (argc < 10) {
    Throw(env, "layerNorm expects (heap, xOff, gOff, bOff, yOff, meanOff, rstdOff, rows, d, eps)");
    return nullptr;
  }
  if (!GetHeap(env, argv[0], &heap) || !GetInt(env, argv[1], &xo, "xOff") || !GetInt(env, argv[2], &go, "gOff") ||
      !GetInt(env, argv[3], &bo, "bOff") || !GetInt(env, argv[4], &yo, "yOff") || !GetInt(env, argv[5], &mo, "meanOff") ||
      !GetInt(env, argv[6], &ro, "rstdOff") || !GetInt(env, argv[7], &rows, "rows") || !GetInt(env, argv[8], &d, "d") ||
      !GetDouble(env, argv[9], &eps, "eps")) {
    return nullptr;
  }
  if (rows < 0 || d <= 0) {
    Throw(env, "layerNorm: rows must be ≥ 0 and d > 0");
    return nullptr;
  }
  if (!CheckRange(env, heap, xo, rows * d * 4, "layerNorm x") || !CheckRange(env, heap, go, d * 4, "layerNorm gamma") ||
      !CheckRange(env, heap, bo, d * 4, "layerNorm beta") || !CheckRange(env, heap, yo, rows * d * 4, "layerNorm y") ||
      !CheckRange(env, heap, mo, rows * 4, "layerNorm mean") || !CheckRange(env, heap, ro, rows * 4, "layerNorm rstd")) {
    return nullptr;
  }
  const float* x = reinterpret_cast<const float*>(heap.data + xo);
  const float* g = reinterpret_cast<const float*>(heap.data + go);
  const float* b = reinterpret_cast<const float*>(heap.data + bo);
  float* y = reinterpret_cast<float*>(heap.data + yo);
  float* mean = reinterpret_cast<float*>(heap.data + mo);
  float* rstd = reinterpret_cast<float*>(heap.data + ro);
  for (int64_t r = 0; r < rows; ++r) {
    LayerNormRow(x + r * d, g, b, y + r * d, mean + r, rstd + r, d, static_cast<float>(eps));
  }
  return MakeUndefined(env);
}

// layerNormGrad(heap, xOff, gOff, meanOff, rstdOff, dyOff, dxOff, dgOff, dbOff, rows, d)
napi_value LayerNormGrad(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value argv[11];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  Heap heap;
  int64_t xo, go, mo, ro, dyo, dxo, dgo, dbo, rows, d;
  if (argc < 11) {
    Throw(env, "layerNormGrad expects (heap, xOff, gOff, meanOff, rstdOff, dyOff, dxOff, dgOff, dbOff, rows, d)");
    return nullptr;
  }
  if (!GetHeap(env, argv[0], &heap) || !GetInt(env, argv[1], &xo, "xOff") || !GetInt(env, argv[2], &go, "gOff") ||
      !GetInt(env, argv[3], &mo, "meanOff") || !GetInt(env, argv[4], &ro, "rstdOff") || !GetInt(env, argv[5], &dyo, "dyOff") ||
      !GetInt(env, argv[6], &dxo, "dxOff") || !GetInt(env, argv[7], &dgo, "dgOff") || !GetInt(env, argv[8], &dbo, "dbOff") ||
      !GetInt(env, argv[9], &rows, "rows") || !GetInt(env, argv[10], &d, "d")) {
    return nullptr;
  }
  if (rows < 0 || d <= 0) {
    Throw(env, "layerNormGrad: rows must be ≥ 0 and d > 0");
    return nullptr;
  }
  if (!CheckRange(env, heap, xo, rows * d * 4, "layerNormGrad x") || !CheckRange(env, heap, go, d * 4, "layerNormGrad gamma") ||
      !CheckRange(env, heap, mo, rows * 4, "layerNormGrad mean") || !CheckRange(env, heap, ro, rows * 4, "layerNormGrad rstd") ||
      !CheckRange(env, heap, dyo, rows * d * 4, "layerNormGrad dy") || !CheckRange(env, heap, dxo, rows * d * 4, "layerNormGrad dx") ||
      !CheckRange(env, heap, dgo, d * 4, "layerNormGrad dgamma") || !CheckRange(env, heap, dbo, d * 4, "layerNormGrad dbeta")) {
    return nullptr;
  }
  const float* x = reinterpret_cast<const float*>(heap.data + xo);
  const float* g = reinterpret_cast<const float*>(heap.data + go);
  const float* mean = reinterpret_cast<const float*>(heap.data + mo);
  const float* rstd = reinterpret_cast<const float*>(heap.data + ro);
  const float* dy = reinterpret_cast<const float*>(heap.data + dyo);
  float* dx = reinterpret_cast<float*>(heap.data + dxo);
  std::vector<double> dg(d, 0.0), db(d, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    LayerNormGradRow(x + r * d, g, mean[r], rstd[r], dy + r * d, dx + r * d, dg.data(), db.data(), d);
  }
  float* dgo_p = reinterpret_cast<float*>(heap.data + dgo);
  float* dbo_p = reinterpret_cast<float*>(heap.data + dbo);
  for (int64_t i = 0; i < d; ++i) {
    dgo_p[i] = static_cast<float>(dg[i]);
    dbo_p[i] = static_cast<float>(db[i]);
  }
  return MakeUndefined(env);
}

// Counter-based dropout mask, bit-identical to dropoutMask() in src/compute/ops.ts: element i is kept when the top
// 24 bits of Mix(Mix(i ^ s1) + s2) are below keep·2^24. No sequential state, so the loop vectorises.
inline uint32_t Mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

__attribute__((target_clones("avx2", "default"))) void FillDropoutMask(float* out, int64_t count, uint32_t s1,
                                                                        uint32_t s2, uint32_t threshold, float scale) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) {
    const uint32_t u = Mix32(Mix32(static_cast<uint32_t>(i) ^ s1) + s2) >> 8;
    out[i] = u < threshold ? scale : 0.f;
  }
}

// dropoutMask(heap, outOff, count, s1, s2, threshold, scale): see FillDropoutMask.
napi_value DropoutMask(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  Heap heap;
  int64_t oo, count, s1, s2, threshold;
  double scale;
  if (argc < 7) {
    Throw(env, "dropoutMask expects (heap, outOff, count, s1, s2, threshold, scale)");
    return nullptr;
  }
  if (!GetHeap(env, argv[0], &heap) || !GetInt(env, argv[1], &oo, "outOff") || !GetInt(env, argv[2], &count, "count") ||
      !GetInt(env, argv[3], &s1, "s1") || !GetInt(env, argv[4], &s2, "s2") ||
      !GetInt(env, argv[5], &threshold, "threshold") || !GetDouble(env, argv[6], &scale, "scale")) {
    return nullptr;
  }
  if (count < 0 || count > 0xffffffffLL || !CheckRange(env, heap, oo, count * 4, "dropoutMask out")) {
    if (count < 0 || count > 0xffffffffLL) Throw(env, "dropoutMask: count must be in [0, 2^32)");
    return nullptr;
  }
  FillDropoutMask(reinterpret_cast<float*>(heap.data + oo), count, static_cast<uint32_t>(s1), static_cast<uint32_t>(s2),
                  static_cast<uint32_t>(threshold), static_cast<float>(scale));
  return MakeUndefined(env);
}

// GELU, tanh approximation as src/model/ops.ts writes it: y = x·σ(z), z = 2c·(x + a·x³) (½(1 + tanh u) = σ(2u)),
// one pass instead of seven tf ops; the gradient likewise one pass instead of ~ten:
// dy/dx = σ(z) + x·σ(z)·(1 − σ(z))·2c·(1 + 3a·x²).
constexpr float kGeluA = 0.044715f;
constexpr float kGelu2C = 1.5957691216057308f;  // 2·√(2/π)

__attribute__((target_clones("avx2", "default"))) void GeluBlock(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float s = 1.f / (1.f + FastExp(-kGelu2C * (v + kGeluA * v * v * v)));
    y[i] = v * s;
  }
}

__attribute__((target_clones("avx2", "default"))) void GeluGradBlock(const float* x, const float* dy, float* dx,
                                                                      int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float s = 1.f / (1.f + FastExp(-kGelu2C * (v + kGeluA * v * v * v)));
    dx[i] = dy[i] * (s + v * s * (1.f - s) * kGelu2C * (1.f + 3.f * kGeluA * v * v));
  }
}

// Parses (heap, off_0 … off_{n−1}, count) of an elementwise kernel: every offset must hold `count` floats inside the
// heap. Fills out[i] with the arrays and returns false (after throwing) on bad input.
bool ElementwiseArgs(napi_env env, napi_value* argv, size_t argc, const char* fn, const char* const* names, size_t n,
                     float** out, int64_t* count) {
  if (argc < n + 2) return Throw(env, std::string(fn) + " expects (heap, " + std::to_string(n) + " offsets, count)");
  Heap heap;
  if (!GetHeap(env, argv[0], &heap) || !GetInt(env, argv[n + 1], count, "count")) return false;
  if (*count < 0) return Throw(env, std::string(fn) + ": count must be ≥ 0");
  for (size_t i = 0; i < n; ++i) {
    int64_t off;
    if (!GetInt(env, argv[i + 1], &off, names[i]) ||
        !CheckRange(env, heap, off, *count * 4, (std::string(fn) + " " + names[i]).c_str())) {
      return false;
    }
    out[i] = reinterpret_cast<float*>(heap.data + off);
  }
  return true;
}

// gelu(heap, xOff, yOff, count)
napi_value Gelu(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  const char* names[] = {"x", "y"};
  float* a[2];
  int64_t count;
  if (!ElementwiseArgs(env, argv, argc, "gelu", names, 2, a, &count)) return nullptr;
  GeluBlock(a[0], a[1], count);
  return MakeUndefined(env);
}

// geluGrad(heap, xOff, dyOff, dxOff, count)
napi_value GeluGrad(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  const char* names[] = {"x", "dy", "dx"};
  float* a[3];
  int64_t count;
  if (!ElementwiseArgs(env, argv, argc, "geluGrad", names, 3, a, &count)) return nullptr;
  GeluGradBlock(a[0], a[1], a[2], count);
  return MakeUndefined(env);
}

// One Adam step for one parameter in one pass (src/compute/ops.ts adamUpdate; the same float32 operations in the
// same order as its tf-op formula): g = scale·g0; m' = β1·m + (1−β1)·g; v' = β2·v + (1−β2)·g²;
// u = (m'/bc1) / (√(v'/bc2) + eps) (+ wd·p); p' = p − lr·u.
struct AdamHyper {
  float scale, beta1, oneMinusBeta1, beta2, oneMinusBeta2, bc1, bc2, eps, lr, weightDecay;
  bool scaled, decay;
};

__attribute__((target_clones("avx2", "default"))) void AdamBlock(const float* p, const float* g0, const float* m,
                                                                  const float* v, float* po, float* mo, float* vo,
                                                                  int64_t n, AdamHyper h) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = h.scaled ? g0[i] * h.scale : g0[i];
    const float m1 = m[i] * h.beta1 + g * h.oneMinusBeta1;
    const float v1 = v[i] * h.beta2 + (g * g) * h.oneMinusBeta2;
    float u = (m1 / h.bc1) / (std::sqrt(v1 / h.bc2) + h.eps);
    if (h.decay) u = u + p[i] * h.weightDecay;
    po[i] = p[i] - u * h.lr;
    mo[i] = m1;
    vo[i] = v1;
  }
}

// adam(heap, pOff, gOff, mOff, vOff, pOutOff, mOutOff, vOutOff, count,
//      [scale, beta1, 1−beta1, beta2, 1−beta2, bc1, bc2, eps, lr, weightDecay]); scale 1 / weightDecay 0 skip those terms.
napi_value Adam(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  const char* names[] = {"p", "g", "m", "v", "p out", "m out", "v out"};
  float* a[7];
  int64_t count;
  if (argc < 10) {
    Throw(env, "adam expects (heap, pOff, gOff, mOff, vOff, pOutOff, mOutOff, vOutOff, count, hyper[10])");
    return nullptr;
  }
  if (!ElementwiseArgs(env, argv, argc, "adam", names, 7, a, &count)) return nullptr;
  double hv[10];
  for (uint32_t i = 0; i < 10; ++i) {
    napi_value item;
    if (napi_get_element(env, argv[9], i, &item) != napi_ok || !GetDouble(env, item, &hv[i], "hyper")) return nullptr;
  }
  AdamHyper h;
  h.scale = static_cast<float>(hv[0]);
  h.beta1 = static_cast<float>(hv[1]);
  h.oneMinusBeta1 = static_cast<float>(hv[2]);
  h.beta2 = static_cast<float>(hv[3]);
  h.oneMinusBeta2 = static_cast<float>(hv[4]);
  h.bc1 = static_cast<float>(hv[5]);
  h.bc2 = static_cast<float>(hv[6]);
  h.eps = static_cast<float>(hv[7]);
  h.lr = static_cast<float>(hv[8]);
  h.weightDecay = static_cast<float>(hv[9]);
  h.scaled = hv[0] != 1.0;
  h.decay = hv[9] > 0.0;
  AdamBlock(a[0], a[1], a[2], a[3], a[4], a[5], a[6], count, h);
  return MakeUndefined(env);
}

// blasBench(m, n, k, iterations): seconds per sgemm on private buffers — the BLAS's own rate, no tfjs involved.
napi_value BlasBench(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int64_t m = 0, n = 0, k = 0, iters = 0;
  if (argc < 4 || !GetInt(env, argv[0], &m, "m") || !GetInt(env, argv[1], &n, "n") || !GetInt(env, argv[2], &k, "k") ||
      !GetInt(env, argv[3], &iters, "iterations")) {
    if (argc < 4) Throw(env, "blasBench expects (m, n, k, iterations)");
    return nullptr;
  }
  if (m <= 0 || n <= 0 || k <= 0 || iters <= 0) {
    Throw(env, "blasBench: sizes and iterations must be positive");
    return nullptr;
  }
  std::vector<float> A(m * k), B(k * n), C(m * n);
  for (size_t i = 0; i < A.size(); ++i) A[i] = static_cast<float>((i * 7919) % 1000) / 1000.f - 0.5f;
  for (size_t i = 0; i < B.size(); ++i) B[i] = static_cast<float>((i * 104729) % 1000) / 1000.f - 0.5f;
  // One warm-up call so packing buffers are allocated before timing.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.f, A.data(), k, B.data(), n, 0.f, C.data(), n);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.f, A.data(), k, B.data(), n, 0.f, C.data(), n);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  napi_value out;
  napi_create_double(env, secs / static_cast<double>(iters), &out);
  return out;
}

// setThreads(n) / info(): BLAS thread count and build description for logs.
napi_value SetThreads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int64_t n = 1;
  if (argc < 1 || !GetInt(env, argv[0], &n, "threads")) {
    if (argc < 1) Throw(env, "setThreads expects (threads)");
    return nullptr;
  }
  openblas_set_num_threads(static_cast<int>(std::max<int64_t>(1, n)));
  return MakeUndefined(env);
}

napi_value Info(napi_env env, napi_callback_info) {
  napi_value obj, blas, threads, config, core;
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, "openblas", NAPI_AUTO_LENGTH, &blas);
  napi_create_int32(env, openblas_get_num_threads(), &threads);
  napi_create_string_utf8(env, openblas_get_config(), NAPI_AUTO_LENGTH, &config);
  napi_create_string_utf8(env, openblas_get_corename(), NAPI_AUTO_LENGTH, &core);
  napi_set_named_property(env, obj, "blas", blas);
  napi_set_named_property(env, obj, "threads", threads);
  napi_set_named_property(env, obj, "config", config);
  napi_set_named_property(env, obj, "core", core);
  return obj;
}

napi_value Init(napi_env env, napi_value exports) {
  // Single-threaded unless the loader asked otherwise through OPENBLAS_NUM_THREADS (read by OpenBLAS at load).
  const char* env_threads = std::getenv("OPENBLAS_NUM_THREADS");
  openblas_set_num_threads(env_threads != nullptr ? std::max(1, std::atoi(env_threads)) : 1);
  const napi_property_descriptor props[] = {
      {"matmul", nullptr, MatMul, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"transpose", nullptr, Transpose, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"softmax", nullptr, Softmax, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"softmaxGrad", nullptr, SoftmaxGrad, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"softmaxXent", nullptr, SoftmaxXent, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"softmaxXentGrad", nullptr, SoftmaxXentGrad, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"reduce", nullptr, Reduce, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"layerNorm", nullptr, LayerNorm, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"layerNormGrad", nullptr, LayerNormGrad, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"expand", nullptr, Expand, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"dropoutMask", nullptr, DropoutMask, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"adam", nullptr, Adam, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"gelu", nullptr, Gelu, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"geluGrad", nullptr, GeluGrad, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"blasBench", nullptr, BlasBench, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"setThreads", nullptr, SetThreads, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"info", nullptr, Info, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
