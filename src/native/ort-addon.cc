// eaglet's own onnxruntime session for graphs with eaglet's custom operators, as a Node-API
// addon over ONNX Runtime's C/C++ API, linked against the libonnxruntime.so.1 that
// onnxruntime-node ships (so it runs the same ORT as every other session; built by
// src/runtime/native-build.ts). onnxruntime-node's JavaScript API cannot register custom
// operators, which is why this exists.
//
// Operators (domain "eaglet", opset 1):
//   BlockMatMul(A [..., K], B uint8 [N, K / 128, 64 | 128], scales [N * K / 128], bias [N]?) -> [..., N]
//   A Linear layer over 4-bit (B's last axis 64) or 8-bit (128) weights in MatMulNBits' layout
//   (blocks of 128, zero point 8 or 128): src/native/block-matmul.h, row-exact
//   (OnnxOpsOptions.nativeLinear). The weights are reordered on a node's first run and shared by
//   the session's nodes reading the same initializer (tilesFor).
//   PastAttention(q [1, nKv, G, hd] scaled, kNew [nKv, hd, 1], vNew [nKv, 1, hd],
//                 pastK [1, nKv, hd, S], pastV [1, nKv, hd, S], mask [1, S + 1]) -> o [1, nKv, G, hd]
//   The one-token graph's attention (src/onnx/ops.ts, OnnxOpsOptions.nativeAttention): softmax of
//   q . [pastK, kNew] + mask, times [pastV, vNew], reading the cache in place. Past columns after
//   the last one the mask leaves open (>= -1e29) are skipped: their weight is exactly 0.
//
// JavaScript API (src/runtime/native-session.ts wraps it):
//   createSession(model: Uint8Array, threads, optimizationLevel, config: [key, value][],
//                 external: [name, Uint8Array][]) -> handle
//   names(handle) -> [inputNames, outputNames]
//   run(handle, names, types, datas, dims, fetchNames) -> [type, data, dims][]  (inputs read in place)
//   release(handle)
#include <node_api.h>
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <map>
#include <mutex>
#include <tuple>

#include "past-attention.h"
#include "block-matmul.h"

namespace {

// -------------------------------------------------------------------------------------------
// The PastAttention kernel.

struct PastAttentionKernel {
  explicit PastAttentionKernel(const OrtKernelInfo*) {}

  struct Job {
    const float *q, *kNew, *vNew, *K, *V, *mask;
    float* out;
    int64_t G, hd, S;
    int L;
  };

  static void head(void* p, size_t i) {
    const Job& j = *static_cast<const Job*>(p);
    const size_t h = i / j.G, hd = size_t(j.hd);
    // Scores of L columns, 64-byte aligned; 16 floats of slack cover the alignment.
    thread_local std::vector<float> buf;
    const size_t need = ((size_t(j.L) + 15) / 16) * 16 + 16;
    if (buf.size() < need) buf.resize(need);
    float* s = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
    eaglet::attend_row(j.q + i * hd, j.K + h * hd * j.S, j.V + h * hd * j.S, size_t(j.S), int(hd), j.L, j.mask, j.mask[j.S], j.kNew + h * hd,
                       j.vNew + h * hd, s, j.out + i * hd);
  }

  void Compute(OrtKernelContext* context) {
    Ort::KernelContext ctx(context);
    auto q = ctx.GetInput(0), kNew = ctx.GetInput(1), vNew = ctx.GetInput(2), K = ctx.GetInput(3), V = ctx.GetInput(4), mask = ctx.GetInput(5);
    const auto qs = q.GetTensorTypeAndShapeInfo().GetShape(), ks = K.GetTensorTypeAndShapeInfo().GetShape(), ms = mask.GetTensorTypeAndShapeInfo().GetShape();
    if (qs.size() != 4 || ks.size() != 4 || qs[0] != 1 || ks[0] != 1 || qs[1] != ks[1] || qs[3] != ks[2])
      throw Ort::Exception("PastAttention: q [1, nKv, G, hd] and past keys [1, nKv, hd, S] do not match", ORT_INVALID_ARGUMENT);
    const int64_t nKv = qs[1], G = qs[2], hd = qs[3], S = ks[3];
    if (hd % eaglet::R != 0 || hd > 256) throw Ort::Exception("PastAttention: head size must be a multiple of 8, at most 256", ORT_INVALID_ARGUMENT);
    if (V.GetTensorTypeAndShapeInfo().GetShape() != ks) throw Ort::Exception("PastAttention: past values differ in shape from past keys", ORT_INVALID_ARGUMENT);
    if (ms.size() != 2 || ms[0] != 1 || ms[1] != S + 1) throw Ort::Exception("PastAttention: mask must be [1, S + 1]", ORT_INVALID_ARGUMENT);
    if (kNew.GetTensorTypeAndShapeInfo().GetElementCount() != size_t(nKv * hd) || vNew.GetTensorTypeAndShapeInfo().GetElementCount() != size_t(nKv * hd))
      throw Ort::Exception("PastAttention: the new key and value must hold nKv x hd floats", ORT_INVALID_ARGUMENT);
    const float* m = mask.GetTensorData<float>();
    int L = int(S);
    while (L > 0 && m[L - 1] < -1e29f) L--;  // hidden cache columns (MASK_NEG): weight exactly 0
    auto out = ctx.GetOutput(0, qs);
    Job job{q.GetTensorData<float>(), kNew.GetTensorData<float>(), vNew.GetTensorData<float>(), K.GetTensorData<float>(), V.GetTensorData<float>(), m,
            out.GetTensorMutableData<float>(), G, hd, S, L};
    ctx.ParallelFor(head, size_t(nKv * G), 0, &job);
  }
};

struct PastAttentionOp : Ort::CustomOpBase<PastAttentionOp, PastAttentionKernel> {
  void* CreateKernel(const OrtApi&, const OrtKernelInfo* info) const { return new PastAttentionKernel(info); }
  const char* GetName() const { return "PastAttention"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 6; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

// -------------------------------------------------------------------------------------------
// The BlockMatMul kernel.

// The reordered weights of one packed initializer, shared by every node reading the same bytes:
// a fused round's head steps read one weight per step (a tied LM head twice), and a copy per node
// would multiply the head's memory. ORT copies initializers into each session, so sessions do
// not share them: each holds its own reordered copy beside ORT's. Held while any kernel holds
// them; an initializer's bytes outlive its session's kernels, so an address is reused only after
// every tile set made from it has expired.
std::shared_ptr<const eaglet::blockmm::Tiles> tilesFor(const uint8_t* packed, const float* scales, int n, int k, int bits) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, const void*, int, int, int>, std::weak_ptr<const eaglet::blockmm::Tiles>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{packed, scales, n, k, bits}];
  if (auto hit = slot.lock()) return hit;
  auto t = std::make_shared<eaglet::blockmm::Tiles>();
  t->build(packed, scales, n, k, bits);
  slot = t;
  for (auto it = cache.begin(); it != cache.end();) it = it->second.expired() ? cache.erase(it) : std::next(it);
  return t;
}

struct BlockMatMulKernel {
  explicit BlockMatMulKernel(const OrtKernelInfo*) {}

  std::shared_ptr<const eaglet::blockmm::Tiles> w;
  std::mutex building;

  struct Job {
    const eaglet::blockmm::Tiles* w;
    const eaglet::blockmm::QuantRows* x;
    int rows, per;
    float* y;
    const float* bias;
  };

  static void chunk(void* p, size_t i) {
    const Job& j = *static_cast<const Job*>(p);
    const int g0 = int(i) * j.per, g1 = std::min(g0 + j.per, j.w->groups);
    eaglet::blockmm::columns(*j.w, *j.x, j.rows, g0, g1, j.y, j.bias);
  }

  void Compute(OrtKernelContext* context) {
    if (!eaglet::blockmm::AVAILABLE) throw Ort::Exception("BlockMatMul needs a CPU with AVX-512 VNNI and BW (this build's -march=native lacks them)", ORT_NOT_IMPLEMENTED);
    Ort::KernelContext ctx(context);
    auto A = ctx.GetInput(0), B = ctx.GetInput(1), S = ctx.GetInput(2);
    auto as = A.GetTensorTypeAndShapeInfo().GetShape();
    const auto bs = B.GetTensorTypeAndShapeInfo().GetShape();
    if (bs.size() != 3 || (bs[2] != 64 && bs[2] != 128)) throw Ort::Exception("BlockMatMul: B must be uint8 [N, K / 128, 64 | 128] (4- or 8-bit blocks of 128)", ORT_INVALID_ARGUMENT);
    const int bits = int(bs[2]) / 16;
    const int64_t n = bs[0], k = bs[1] * eaglet::blockmm::BLK;
    if (k == 0) throw Ort::Exception("BlockMatMul: K must be positive (B has no blocks)", ORT_INVALID_ARGUMENT);
    if (as.empty() || as.back() != k) throw Ort::Exception("BlockMatMul: A's last axis is not B's K", ORT_INVALID_ARGUMENT);
    if (S.GetTensorTypeAndShapeInfo().GetElementCount() != size_t(n * bs[1])) throw Ort::Exception("BlockMatMul: scales must hold N x K / 128 floats", ORT_INVALID_ARGUMENT);
    const float* bias = nullptr;
    if (ctx.GetInputCount() > 3) {
      auto bi = ctx.GetInput(3);
      if (bi != nullptr) {
        if (bi.GetTensorTypeAndShapeInfo().GetElementCount() != size_t(n)) throw Ort::Exception("BlockMatMul: bias must hold N floats", ORT_INVALID_ARGUMENT);
        bias = bi.GetTensorData<float>();
      }
    }
    const uint8_t* packed = B.GetTensorData<uint8_t>();
    {
      std::lock_guard<std::mutex> lock(building);
      if (!w || w->source != packed) w = tilesFor(packed, S.GetTensorData<float>(), int(n), int(k), bits);
    }
    size_t rows = 1;  // the leading axes of A
    for (size_t i = 0; i + 1 < as.size(); i++) rows *= size_t(as[i]);
    as.back() = n;
    auto out = ctx.GetOutput(0, as);
    if (rows == 0) return;
    thread_local eaglet::blockmm::QuantRows x;
    x.quantize(A.GetTensorData<float>(), int(rows), int(k));
    // Chunks of column groups: enough for ORT's pool to balance, few enough to dispatch cheaply.
    const int per = std::max(1, w->groups / 32);
    Job job{w.get(), &x, int(rows), per, out.GetTensorMutableData<float>(), bias};
    ctx.ParallelFor(chunk, size_t((w->groups + per - 1) / per), 0, &job);
  }
};

struct BlockMatMulOp : Ort::CustomOpBase<BlockMatMulOp, BlockMatMulKernel> {
  void* CreateKernel(const OrtApi&, const OrtKernelInfo* info) const { return new BlockMatMulKernel(info); }
  const char* GetName() const { return "BlockMatMul"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 4; }
  ONNXTensorElementDataType GetInputType(size_t i) const { return i == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const { return i == 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

// One domain for the process: ORT keeps pointers to it in every session that uses it.
Ort::CustomOpDomain& eagletDomain() {
  static PastAttentionOp pastAttention;
  static BlockMatMulOp blockMatMul;
  static Ort::CustomOpDomain domain = [] {
    Ort::CustomOpDomain d("eaglet");
    d.Add(&pastAttention);
    d.Add(&blockMatMul);
    return d;
  }();
  return domain;
}

Ort::Env& env() {
  // ORT has one environment a process; onnxruntime-node's sessions share it (CreateEnv returns it).
  static Ort::Env e(ORT_LOGGING_LEVEL_ERROR, "eaglet-native");
  return e;
}

// -------------------------------------------------------------------------------------------
// Node-API glue.

#define CHECK(call)                                                        \
  do {                                                                     \
    if ((call) != napi_ok) throw std::runtime_error("node-api: " #call); \
  } while (0)

struct Handle {
  std::unique_ptr<Ort::Session> session;
  std::vector<std::string> inputs, outputs;
};

std::string str(napi_env e, napi_value v) {
  size_t n = 0;
  CHECK(napi_get_value_string_utf8(e, v, nullptr, 0, &n));
  std::string s(n, '\0');
  CHECK(napi_get_value_string_utf8(e, v, s.data(), n + 1, &n));
  return s;
}

uint32_t length(napi_env e, napi_value arr) {
  uint32_t n = 0;
  CHECK(napi_get_array_length(e, arr, &n));
  return n;
}

napi_value at(napi_env e, napi_value arr, uint32_t i) {
  napi_value v;
  CHECK(napi_get_element(e, arr, i, &v));
  return v;
}

std::vector<napi_value> args(napi_env e, napi_callback_info info, size_t want) {
  std::vector<napi_value> a(want);
  size_t n = want;
  CHECK(napi_get_cb_info(e, info, &n, a.data(), nullptr, nullptr));
  if (n < want) throw std::runtime_error("expected " + std::to_string(want) + " arguments");
  return a;
}

// A typed array's bytes in place.
std::pair<void*, size_t> bytesOf(napi_env e, napi_value v) {
  napi_typedarray_type t;
  size_t len, offset;
  void* data;
  napi_value ab;
  CHECK(napi_get_typedarray_info(e, v, &t, &len, &data, &ab, &offset));
  size_t el = 1;
  switch (t) {
    case napi_float32_array: case napi_int32_array: case napi_uint32_array: el = 4; break;
    case napi_bigint64_array: case napi_biguint64_array: case napi_float64_array: el = 8; break;
    case napi_int16_array: case napi_uint16_array: el = 2; break;
    default: el = 1;
  }
  return {data, len * el};
}

Handle* handleOf(napi_env e, napi_value v) {
  void* p;
  CHECK(napi_get_value_external(e, v, &p));
  auto* h = static_cast<Handle*>(p);
  if (!h->session) throw std::runtime_error("the session was released");
  return h;
}

struct TypeName {
  const char* name;
  ONNXTensorElementDataType type;
  size_t size;
};
constexpr TypeName kTypes[] = {{"float32", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4}, {"int32", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, 4},
                               {"int64", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, 8},   {"bool", ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, 1},
                               {"uint8", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1}};

const TypeName& typeNamed(const std::string& s) {
  for (const auto& t : kTypes)
    if (s == t.name) return t;
  throw std::runtime_error("unsupported tensor type " + s);
}
const TypeName& typeOf(ONNXTensorElementDataType ty) {
  for (const auto& t : kTypes)
    if (ty == t.type) return t;
  throw std::runtime_error("unsupported output tensor type " + std::to_string(int(ty)));
}

napi_value guarded(napi_env e, napi_value (*fn)(napi_env, napi_callback_info), napi_callback_info info) {
  try {
    return fn(e, info);
  } catch (const std::exception& x) {
    bool pending = false;
    napi_is_exception_pending(e, &pending);
    if (!pending) napi_throw_error(e, nullptr, x.what());
    return nullptr;
  }
}

napi_value createSession(napi_env e, napi_callback_info info) {
  auto a = args(e, info, 5);
  auto [model, modelBytes] = bytesOf(e, a[0]);
  int32_t threads, level;
  CHECK(napi_get_value_int32(e, a[1], &threads));
  CHECK(napi_get_value_int32(e, a[2], &level));
  Ort::SessionOptions so;
  so.SetIntraOpNumThreads(threads);
  so.SetInterOpNumThreads(1);
  so.SetExecutionMode(ORT_SEQUENTIAL);
  so.SetGraphOptimizationLevel(GraphOptimizationLevel(level));
  for (uint32_t i = 0, n = length(e, a[3]); i < n; i++) {
    napi_value kv = at(e, a[3], i);
    so.AddConfigEntry(str(e, at(e, kv, 0)).c_str(), str(e, at(e, kv, 1)).c_str());
  }
  std::vector<std::string> extNames;
  std::vector<char*> extData;
  std::vector<size_t> extLen;
  for (uint32_t i = 0, n = length(e, a[4]); i < n; i++) {
    napi_value kv = at(e, a[4], i);
    auto [d, len] = bytesOf(e, at(e, kv, 1));
    extNames.push_back(str(e, at(e, kv, 0))), extData.push_back(static_cast<char*>(d)), extLen.push_back(len);
  }
  if (!extNames.empty()) so.AddExternalInitializersFromFilesInMemory(extNames, extData, extLen);
  so.Add(eagletDomain());
  auto h = std::make_unique<Handle>();
  h->session = std::make_unique<Ort::Session>(env(), model, modelBytes, so);
  Ort::AllocatorWithDefaultOptions alloc;
  for (size_t i = 0; i < h->session->GetInputCount(); i++) h->inputs.push_back(h->session->GetInputNameAllocated(i, alloc).get());
  for (size_t i = 0; i < h->session->GetOutputCount(); i++) h->outputs.push_back(h->session->GetOutputNameAllocated(i, alloc).get());
  napi_value out;
  CHECK(napi_create_external(e, h.release(), [](napi_env, void* p, void*) { delete static_cast<Handle*>(p); }, nullptr, &out));
  return out;
}

napi_value stringArray(napi_env e, const std::vector<std::string>& xs) {
  napi_value arr;
  CHECK(napi_create_array_with_length(e, xs.size(), &arr));
  for (size_t i = 0; i < xs.size(); i++) {
    napi_value s;
    CHECK(napi_create_string_utf8(e, xs[i].c_str(), xs[i].size(), &s));
    CHECK(napi_set_element(e, arr, uint32_t(i), s));
  }
  return arr;
}

napi_value names(napi_env e, napi_callback_info info) {
  Handle* h = handleOf(e, args(e, info, 1)[0]);
  napi_value arr;
  CHECK(napi_create_array_with_length(e, 2, &arr));
  CHECK(napi_set_element(e, arr, 0, stringArray(e, h->inputs)));
  CHECK(napi_set_element(e, arr, 1, stringArray(e, h->outputs)));
  return arr;
}

napi_value run(napi_env e, napi_callback_info info) {
  auto a = args(e, info, 6);
  Handle* h = handleOf(e, a[0]);
  static const Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  const uint32_t n = length(e, a[1]);
  std::vector<std::string> inNames(n), outNames;
  std::vector<Ort::Value> inputs;
  inputs.reserve(n);
  for (uint32_t i = 0; i < n; i++) {
    inNames[i] = str(e, at(e, a[1], i));
    const TypeName& t = typeNamed(str(e, at(e, a[2], i)));
    auto [data, bytes] = bytesOf(e, at(e, a[3], i));
    napi_value dimsArr = at(e, a[4], i);
    std::vector<int64_t> dims(length(e, dimsArr));
    size_t count = 1;
    for (uint32_t k = 0; k < dims.size(); k++) {
      double d;
      CHECK(napi_get_value_double(e, at(e, dimsArr, k), &d));
      dims[k] = int64_t(d), count *= size_t(d);
    }
    if (count * t.size > bytes) throw std::runtime_error("input " + inNames[i] + ": its data is smaller than its dims");
    inputs.push_back(Ort::Value::CreateTensor(cpu, data, count * t.size, dims.data(), dims.size(), t.type));
  }
  for (uint32_t i = 0, m = length(e, a[5]); i < m; i++) outNames.push_back(str(e, at(e, a[5], i)));
  std::vector<const char*> inPtrs, outPtrs;
  for (auto& s : inNames) inPtrs.push_back(s.c_str());
  for (auto& s : outNames) outPtrs.push_back(s.c_str());
  auto outs = h->session->Run(Ort::RunOptions{nullptr}, inPtrs.data(), inputs.data(), inputs.size(), outPtrs.data(), outPtrs.size());
  napi_value result;
  CHECK(napi_create_array_with_length(e, outs.size(), &result));
  for (size_t i = 0; i < outs.size(); i++) {
    auto info = outs[i].GetTensorTypeAndShapeInfo();
    const TypeName& t = typeOf(info.GetElementType());
    const auto shape = info.GetShape();
    const size_t count = info.GetElementCount(), bytes = count * t.size;
    void* dst;
    napi_value ab, arr, dims, entry, type;
    CHECK(napi_create_arraybuffer(e, bytes, &dst, &ab));
    if (bytes) std::memcpy(dst, outs[i].GetTensorRawData(), bytes);
    const napi_typedarray_type ta = t.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ? napi_float32_array
                                    : t.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 ? napi_int32_array
                                    : t.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 ? napi_bigint64_array
                                                                                    : napi_uint8_array;
    CHECK(napi_create_typedarray(e, ta, count, ab, 0, &arr));
    CHECK(napi_create_array_with_length(e, shape.size(), &dims));
    for (size_t k = 0; k < shape.size(); k++) {
      napi_value d;
      CHECK(napi_create_int64(e, shape[k], &d));
      CHECK(napi_set_element(e, dims, uint32_t(k), d));
    }
    CHECK(napi_create_string_utf8(e, t.name, NAPI_AUTO_LENGTH, &type));
    CHECK(napi_create_array_with_length(e, 3, &entry));
    CHECK(napi_set_element(e, entry, 0, type));
    CHECK(napi_set_element(e, entry, 1, arr));
    CHECK(napi_set_element(e, entry, 2, dims));
    CHECK(napi_set_element(e, result, uint32_t(i), entry));
  }
  return result;
}

napi_value release(napi_env e, napi_callback_info info) {
  void* p;
  CHECK(napi_get_value_external(e, args(e, info, 1)[0], &p));
  static_cast<Handle*>(p)->session.reset();
  return nullptr;
}

#define EXPORT(name)                                                                                                          \
  {                                                                                                                           \
    napi_value f;                                                                                                             \
    napi_create_function(                                                                                                     \
        e, #name, NAPI_AUTO_LENGTH, [](napi_env e, napi_callback_info i) { return guarded(e, name, i); }, nullptr, &f); \
    napi_set_named_property(e, exports, #name, f);                                                                            \
  }

napi_value init(napi_env e, napi_value exports) {
  EXPORT(createSession)
  EXPORT(names)
  EXPORT(run)
  EXPORT(release)
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
