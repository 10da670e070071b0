// oneDNN 2-D convolutions as XLA:CPU FFI custom calls (irstd_jax/onednn_conv.py).
//
// Three handlers, all float32, activations NHWC and kernels HWIO (what flax's nnx.Conv and
// lax.conv_general_dilated with ('NHWC', 'HWIO', 'NHWC') use):
//   OnednnConvForward         x [N,H,W,C], w [KH,KW,C/G,O]  -> y  [N,OH,OW,O]
//   OnednnConvBackwardData    dy [N,OH,OW,O], w             -> dx [N,H,W,C]
//   OnednnConvBackwardWeights x, dy                          -> dw [KH,KW,C/G,O]
// Attributes (the lax conventions): strides [2], padding_lo / padding_hi [2] (>= 0),
// dilation [2] (lax's rhs_dilation, >= 1), groups (feature_group_count).
//
// Activations stay in XLA's buffers (oneDNN reads and writes NHWC in place, as PyTorch's
// channels-last path does); only the kernel is reordered to the layout the chosen
// implementation wants, which is small. Primitives are created once per shape and
// attribute set and kept in a process-wide cache; each call brings its own scratchpad
// (scratchpad_mode::user), so one primitive may run on several XLA threads at once.
//
// Threads: the libdnnl of requirements-onednn.txt runs on GNU OpenMP, whose teams take every
// core of the process's affinity mask (or OMP_NUM_THREADS), the same set XLA:CPU sizes its
// thread pool by; so pinning the process (taskset) pins both, and one XLA thread calling a
// convolution fans it out over the cores, as XLA's own convolutions do.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum class Kind : int { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// Every size a primitive depends on, in lax's terms.
struct ConvShape {
  int64_t n, h, w, c;      // input
  int64_t kh, kw, o;       // kernel (input channels per group = c / groups)
  int64_t oh, ow;          // output
  int64_t sh, sw;          // strides
  int64_t pt, pb, pl, pr;  // padding top/bottom/left/right
  int64_t dh, dw;          // lax dilation (1 = none)
  int64_t groups;

  std::string Key(Kind kind) const {
    std::string key = std::to_string(static_cast<int>(kind));
    for (int64_t v : {n, h, w, c, kh, kw, o, oh, ow, sh, sw, pt, pb, pl, pr, dh, dw, groups}) {
      key += ',';
      key += std::to_string(v);
    }
    return key;
  }
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

dnnl::memory::desc ActivationDesc(int64_t n, int64_t c, int64_t h, int64_t w) {
  return dnnl::memory::desc({n, c, h, w}, dt::f32, tag::nhwc);
}

// The HWIO kernel as oneDNN sees it: logical dims OIHW (GOIHW with groups), strides of
// the [KH, KW, C/G, O] buffer.
dnnl::memory::desc HwioDesc(const ConvShape& s) {
  const int64_t i = s.c / s.groups;
  if (s.groups == 1) {
    return dnnl::memory::desc({s.o, i, s.kh, s.kw}, dt::f32,
                              dnnl::memory::dims{1, s.o, s.kw * i * s.o, i * s.o});
  }
  const int64_t og = s.o / s.groups;
  return dnnl::memory::desc({s.groups, og, i, s.kh, s.kw}, dt::f32,
                            dnnl::memory::dims{og, 1, s.o, s.kw * i * s.o, i * s.o});
}

dnnl::memory::desc AnyWeightsDesc(const ConvShape& s) {
  const int64_t i = s.c / s.groups;
  if (s.groups == 1) return dnnl::memory::desc({s.o, i, s.kh, s.kw}, dt::f32, tag::any);
  return dnnl::memory::desc({s.groups, s.o / s.groups, i, s.kh, s.kw}, dt::f32, tag::any);
}

// A cached primitive with what running it needs besides the XLA buffers.
struct Entry {
  dnnl::primitive primitive;
  dnnl::memory::desc user_weights;  // HWIO
  dnnl::memory::desc prim_weights;  // the layout the implementation chose
  bool reorder_weights = false;
  dnnl::reorder weights_reorder;    // user -> prim (forward, backward data) or back
  size_t scratchpad_bytes = 0;
  std::string impl;                 // implementation name, for the debug log
};

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::convolution_forward::primitive_desc ForwardDesc(const ConvShape& s, dnnl::prop_kind prop,
                                                      const dnnl::primitive_attr& attr) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), prop, dnnl::algorithm::convolution_direct, ActivationDesc(s.n, s.c, s.h, s.w),
      AnyWeightsDesc(s), ActivationDesc(s.n, s.o, s.oh, s.ow), {s.sh, s.sw},
      {s.dh - 1, s.dw - 1}, {s.pt, s.pl}, {s.pb, s.pr}, attr);
}

std::unique_ptr<Entry> CreateEntry(Kind kind, const ConvShape& s) {
  auto entry = std::make_unique<Entry>();
  const dnnl::primitive_attr attr = UserScratchpad();
  entry->user_weights = HwioDesc(s);
  const dnnl::memory::dims strides{s.sh, s.sw}, dilates{s.dh - 1, s.dw - 1};
  const dnnl::memory::dims pad_l{s.pt, s.pl}, pad_r{s.pb, s.pr};
  const dnnl::memory::desc src = ActivationDesc(s.n, s.c, s.h, s.w);
  const dnnl::memory::desc dst = ActivationDesc(s.n, s.o, s.oh, s.ow);
  dnnl::primitive_desc_base pd_base;
  if (kind == Kind::kForward) {
    auto pd = ForwardDesc(s, dnnl::prop_kind::forward_inference, attr);
    entry->prim_weights = pd.weights_desc();
    entry->primitive = dnnl::convolution_forward(pd);
    pd_base = pd;
  } else {
    auto hint = ForwardDesc(s, dnnl::prop_kind::forward_training, dnnl::primitive_attr());
    if (kind == Kind::kBackwardData) {
      auto pd = dnnl::convolution_backward_data::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, src, AnyWeightsDesc(s), dst, strides,
          dilates, pad_l, pad_r, hint, attr);
      entry->prim_weights = pd.weights_desc();
      entry->primitive = dnnl::convolution_backward_data(pd);
      pd_base = pd;
    } else {
      auto pd = dnnl::convolution_backward_weights::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, src, AnyWeightsDesc(s), dst, strides,
          dilates, pad_l, pad_r, hint, attr);
      entry->prim_weights = pd.diff_weights_desc();
      entry->primitive = dnnl::convolution_backward_weights(pd);
      pd_base = pd;
    }
  }
  entry->scratchpad_bytes = pd_base.scratchpad_desc().get_size();
  entry->impl = pd_base.impl_info_str();
  entry->reorder_weights = entry->prim_weights != entry->user_weights;
  if (entry->reorder_weights) {
    const bool to_user = kind == Kind::kBackwardWeights;
    auto rpd = dnnl::reorder::primitive_desc(
        Engine(), to_user ? entry->prim_weights : entry->user_weights, Engine(),
        to_user ? entry->user_weights : entry->prim_weights);
    entry->weights_reorder = dnnl::reorder(rpd);
  }
  return entry;
}

const Entry& GetEntry(Kind kind, const ConvShape& s) {
  static std::mutex mutex;
  static auto* cache = new std::unordered_map<std::string, std::unique_ptr<Entry>>();
  const std::string key = s.Key(kind);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache->find(key);
  if (it == cache->end()) {
    it = cache->emplace(key, CreateEntry(kind, s)).first;
    if (std::getenv("IRSTD_ONEDNN_VERBOSE") != nullptr) {
      std::fprintf(stderr, "onednn_conv: kind %d key %s impl %s\n", static_cast<int>(kind),
                   key.c_str(), it->second->impl.c_str());
    }
  }
  return *it->second;
}

// 64-byte aligned bytes that free themselves.
struct AlignedBuffer {
  void* data = nullptr;
  explicit AlignedBuffer(size_t bytes) {
    if (bytes) data = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  }
  ~AlignedBuffer() { std::free(data); }
};

void* Mutable(const void* p) { return const_cast<void*>(p); }

// Runs the cached primitive of `kind` on XLA's buffers.
// Forward: a = x, b = w, out = y.  Backward data: a = dy, b = w, out = dx.
// Backward weights: a = x, b = dy, out = dw.
void Run(Kind kind, const ConvShape& s, const float* a, const float* b, float* out) {
  const Entry& e = GetEntry(kind, s);
  dnnl::engine& engine = Engine();
  dnnl::stream stream(engine);
  const dnnl::memory::desc src = ActivationDesc(s.n, s.c, s.h, s.w);
  const dnnl::memory::desc dst = ActivationDesc(s.n, s.o, s.oh, s.ow);
  AlignedBuffer scratch(e.scratchpad_bytes);
  AlignedBuffer weights_buffer(e.reorder_weights ? e.prim_weights.get_size() : 0);
  const bool to_user = kind == Kind::kBackwardWeights;
  dnnl::memory user_w(e.user_weights, engine, to_user ? static_cast<void*>(out) : Mutable(b));
  dnnl::memory prim_w =
      e.reorder_weights ? dnnl::memory(e.prim_weights, engine, weights_buffer.data) : user_w;

  std::unordered_map<int, dnnl::memory> args;
  if (e.scratchpad_bytes) {
    args.emplace(DNNL_ARG_SCRATCHPAD,
                 dnnl::memory(dnnl::memory::desc({static_cast<int64_t>(e.scratchpad_bytes)},
                                                 dt::u8, tag::x),
                              engine, scratch.data));
  }
  if (kind == Kind::kForward) {
    args.emplace(DNNL_ARG_SRC, dnnl::memory(src, engine, Mutable(a)));
    args.emplace(DNNL_ARG_WEIGHTS, prim_w);
    args.emplace(DNNL_ARG_DST, dnnl::memory(dst, engine, out));
  } else if (kind == Kind::kBackwardData) {
    args.emplace(DNNL_ARG_DIFF_DST, dnnl::memory(dst, engine, Mutable(a)));
    args.emplace(DNNL_ARG_WEIGHTS, prim_w);
    args.emplace(DNNL_ARG_DIFF_SRC, dnnl::memory(src, engine, out));
  } else {
    args.emplace(DNNL_ARG_SRC, dnnl::memory(src, engine, Mutable(a)));
    args.emplace(DNNL_ARG_DIFF_DST, dnnl::memory(dst, engine, Mutable(b)));
    args.emplace(DNNL_ARG_DIFF_WEIGHTS, prim_w);
  }
  if (e.reorder_weights && !to_user) e.weights_reorder.execute(stream, user_w, prim_w);
  e.primitive.execute(stream, args);
  if (e.reorder_weights && to_user) e.weights_reorder.execute(stream, prim_w, user_w);
  stream.wait();
}

using Ints = ffi::Span<const int64_t>;

// Fills `s` from the NHWC input dims, the HWIO kernel dims, the NHWC output dims and the
// attributes; an error names what is wrong.
ffi::Error MakeShape(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
                     ffi::Span<const int64_t> y, Ints strides, Ints padding_lo, Ints padding_hi,
                     Ints dilation, int64_t groups, ConvShape* s) {
  if (x.size() != 4 || w.size() != 4 || y.size() != 4) {
    return ffi::Error::InvalidArgument("onednn_conv: operands must be rank 4 (NHWC, HWIO)");
  }
  if (strides.size() != 2 || padding_lo.size() != 2 || padding_hi.size() != 2 ||
      dilation.size() != 2) {
    return ffi::Error::InvalidArgument("onednn_conv: strides/padding/dilation need 2 values");
  }
  *s = ConvShape{x[0], x[1], x[2], x[3], w[0], w[1], w[3], y[1], y[2],
                 strides[0], strides[1], padding_lo[0], padding_hi[0], padding_lo[1],
                 padding_hi[1], dilation[0], dilation[1], groups};
  if (groups < 1 || s->c % groups || s->o % groups || w[2] * groups != s->c || y[0] != s->n ||
      y[3] != s->o) {
    return ffi::Error::InvalidArgument("onednn_conv: inconsistent channels or groups");
  }
  return ffi::Error::Success();
}

template <typename F>
ffi::Error Guarded(F&& f) {
  try {
    f();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("onednn_conv: oneDNN error: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("onednn_conv: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> y, Ints strides, Ints padding_lo,
                       Ints padding_hi, Ints dilation, int64_t groups) {
  ConvShape s;
  ffi::Error err = MakeShape(x.dimensions(), w.dimensions(), y->dimensions(), strides,
                             padding_lo, padding_hi, dilation, groups, &s);
  if (err.failure()) return err;
  return Guarded([&] { Run(Kind::kForward, s, x.typed_data(), w.typed_data(), y->typed_data()); });
}

ffi::Error BackwardDataImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                            ffi::ResultBuffer<ffi::F32> dx, Ints strides, Ints padding_lo,
                            Ints padding_hi, Ints dilation, int64_t groups) {
  ConvShape s;
  ffi::Error err = MakeShape(dx->dimensions(), w.dimensions(), dy.dimensions(), strides,
                             padding_lo, padding_hi, dilation, groups, &s);
  if (err.failure()) return err;
  return Guarded(
      [&] { Run(Kind::kBackwardData, s, dy.typed_data(), w.typed_data(), dx->typed_data()); });
}

ffi::Error BackwardWeightsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                               ffi::ResultBuffer<ffi::F32> dw, Ints strides, Ints padding_lo,
                               Ints padding_hi, Ints dilation, int64_t groups) {
  ConvShape s;
  ffi::Error err = MakeShape(x.dimensions(), dw->dimensions(), dy.dimensions(), strides,
                             padding_lo, padding_hi, dilation, groups, &s);
  if (err.failure()) return err;
  return Guarded(
      [&] { Run(Kind::kBackwardWeights, s, x.typed_data(), dy.typed_data(), dw->typed_data()); });
}

}  // namespace

#define IRSTD_CONV_BINDING(...)                           \
  ffi::Ffi::Bind()                                        \
      .Arg<ffi::Buffer<ffi::F32>>()                       \
      .Arg<ffi::Buffer<ffi::F32>>()                       \
      .Ret<ffi::Buffer<ffi::F32>>()                       \
      .Attr<Ints>("strides")                              \
      .Attr<Ints>("padding_lo")                           \
      .Attr<Ints>("padding_hi")                           \
      .Attr<Ints>("dilation")                             \
      .Attr<int64_t>("groups")

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvForward, ForwardImpl, IRSTD_CONV_BINDING());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBackwardData, BackwardDataImpl, IRSTD_CONV_BINDING());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBackwardWeights, BackwardWeightsImpl,
                              IRSTD_CONV_BINDING());
