"""An ONNX exporter for this network, built on the `onnx` package: jaxpr in, ONNX graph out.

Why not jax2onnx: its 0.17.1 release pins orbax-checkpoint < 0.11.37 (irstd_jax pins
0.12.8) and pulls in equinox, dm-pix and huggingface-hub; it would need its own environment
and a second copy of the model there. Why not jax2tf + tf2onnx: TensorFlow, which
irstd_jax never needs. This module converts the jaxpr of the very function that
`tools/export.py` exports with jax.export (the checkpoint's eval step), so there is no
second implementation of the network to drift:

  * every equation whose inputs are all constants (weights) is evaluated once, here, with
    JAX itself: the Gaussian kernels built from sigma, the rotated pinwheel masks, the
    BatchNorm scale and shift, the interpolation matrices all become initializers;
  * the rest (the path of the image) maps primitive by primitive onto ONNX operators
    (`_HANDLERS`); nested jaxprs (jit, custom_jvp/vjp) are inlined; a primitive without a
    mapping is an error naming it.

Contract of the ONNX model: input `images` uint8 [batch, H, W, 1] at the H x W given at
export (multiples of 32: pad frames as eval does), any batch; output `logits` float32
[batch, H, W, 1]; mask = logits > 0. The graph stays NHWC; each convolution is wrapped in
transposes to ONNX's NCHW, which onnxruntime's optimizer cancels between neighbours.

Needs `pip install -r requirements-onnx.txt` (onnx, onnxruntime); nothing else in
irstd_jax imports this module.
"""
from __future__ import annotations

import os
import string
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import export
from jax.extend import core as jax_core

OPSET = 18


def require_onnx():
  """Imports onnx, or raises ImportError saying how to install it."""
  try:
    import onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('ONNX export needs the optional extra: pip install -r '
                      'requirements-onnx.txt (onnx, onnxruntime)') from e
  return onnx


class UnsupportedPrimitiveError(NotImplementedError):
  pass


class _Graph:
  """The ONNX graph under construction and the jaxpr variables' values."""

  def __init__(self, onnx):
    self.onnx = onnx
    self.helper = onnx.helper
    self.nodes: list = []
    self.initializers: list = []
    self._counter = 0

  def fresh(self, prefix: str) -> str:
    self._counter += 1
    return f'{prefix}_{self._counter}'

  def const(self, value, prefix: str = 'c') -> str:
    name = self.fresh(prefix)
    self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
    return name

  def node(self, op: str, inputs: Sequence[str], **attrs) -> str:
    out = self.fresh(op.lower())
    self.nodes.append(self.helper.make_node(op, list(inputs), [out], **attrs))
    return out


# Values in the environment: ('const', np.ndarray) or ('onnx', tensor name, aval).
def _is_const(v) -> bool:
  return v[0] == 'const'


def _as_name(g: _Graph, v) -> str:
  return g.const(v[1]) if _is_const(v) else v[1]


def _static_shape(shape) -> list[int]:
  """A shape for Reshape: the symbolic batch dimension (the only one) becomes -1."""
  return [d if isinstance(d, int) else -1 for d in shape]


def _onnx_dtype(dtype) -> int:
  from onnx import helper  # pylint: disable=g-import-not-at-top
  return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# ------------------------------------------------------------------------ primitives

_ELEMENTWISE = {'add': 'Add', 'sub': 'Sub', 'mul': 'Mul', 'div': 'Div', 'max': 'Max',
                'min': 'Min', 'pow': 'Pow', 'gt': 'Greater', 'lt': 'Less',
                'ge': 'GreaterOrEqual', 'le': 'LessOrEqual', 'eq': 'Equal', 'and': 'And',
                'or': 'Or'}
_UNARY = {'logistic': 'Sigmoid', 'exp': 'Exp', 'log': 'Log', 'tanh': 'Tanh', 'sqrt': 'Sqrt',
          'neg': 'Neg', 'abs': 'Abs', 'floor': 'Floor', 'ceil': 'Ceil', 'sign': 'Sign',
          'not': 'Not', 'erf': 'Erf', 'copy': 'Identity', 'copy_p': 'Identity'}
_REDUCE = {'reduce_sum': 'ReduceSum', 'reduce_max': 'ReduceMax', 'reduce_min': 'ReduceMin'}


def _elementwise(op):
  def handle(g, eqn, ins):
    return g.node(op, [_as_name(g, v) for v in ins])  # ONNX broadcasts as numpy does
  return handle


def _unary(op):
  return lambda g, eqn, ins: g.node(op, [_as_name(g, ins[0])])


def _reduce(op):
  def handle(g, eqn, ins):
    axes = g.const(np.asarray(eqn.params['axes'], np.int64))
    return g.node(op, [_as_name(g, ins[0]), axes], keepdims=0)
  return handle


def _rsqrt(g, eqn, ins):
  return g.node('Reciprocal', [g.node('Sqrt', [_as_name(g, ins[0])])])


def _integer_pow(g, eqn, ins):
  x = _as_name(g, ins[0])
  y = eqn.params['y']
  if y == 2:
    return g.node('Mul', [x, x])
  return g.node('Pow', [x, g.const(np.asarray(y, eqn.invars[0].aval.dtype))])


def _convert(g, eqn, ins):
  return g.node('Cast', [_as_name(g, ins[0])], to=_onnx_dtype(eqn.params['new_dtype']))


def _reshape(g, eqn, ins):
  if eqn.params.get('dimensions') is not None:
    raise UnsupportedPrimitiveError('reshape with dimensions')
  shape = _static_shape(eqn.params['new_sizes'])
  return g.node('Reshape', [_as_name(g, ins[0]), g.const(np.asarray(shape, np.int64))])


def _squeeze(g, eqn, ins):
  shape = _static_shape(eqn.outvars[0].aval.shape)
  return g.node('Reshape', [_as_name(g, ins[0]), g.const(np.asarray(shape, np.int64))])


def _broadcast_in_dim(g, eqn, ins):
  shape = eqn.params['shape']
  dims = eqn.params['broadcast_dimensions']
  in_shape = eqn.invars[0].aval.shape
  ranked = [1] * len(shape)
  for src, dst in enumerate(dims):
    ranked[dst] = in_shape[src]
  if _is_const(ins[0]):  # keep constants small: consumers broadcast (numpy rules)
    return ('const', np.asarray(ins[0][1]).reshape([int(d) for d in ranked]))
  x = g.node('Reshape', [ins[0][1], g.const(np.asarray(_static_shape(ranked), np.int64))])
  target = [d if isinstance(d, int) else 1 for d in shape]
  return g.node('Expand', [x, g.const(np.asarray(target, np.int64))])


def _transpose(g, eqn, ins):
  return g.node('Transpose', [_as_name(g, ins[0])], perm=list(eqn.params['permutation']))


def _concatenate(g, eqn, ins):
  return g.node('Concat', [_as_name(g, v) for v in ins], axis=eqn.params['dimension'])


def _select_n(g, eqn, ins):
  if len(ins) != 3:
    raise UnsupportedPrimitiveError('select_n with more than two cases')
  pred, false_case, true_case = (_as_name(g, v) for v in ins)
  if eqn.invars[0].aval.dtype != np.bool_:
    pred = g.node('Cast', [pred], to=_onnx_dtype(np.bool_))
  return g.node('Where', [pred, true_case, false_case])


def _slice(g, eqn, ins):
  starts = eqn.params['start_indices']
  limits = eqn.params['limit_indices']
  strides = eqn.params['strides'] or (1,) * len(starts)
  in_shape = eqn.invars[0].aval.shape
  axes = [i for i, (s, l, d) in enumerate(zip(starts, limits, in_shape))
          if not (s == 0 and l == d and strides[i] == 1)]
  if not axes:
    return ins[0]
  c = lambda v: g.const(np.asarray(v, np.int64))
  return g.node('Slice', [_as_name(g, ins[0]), c([starts[a] for a in axes]),
                          c([limits[a] for a in axes]), c(axes), c([strides[a] for a in axes])])


def _pad(g, eqn, ins):
  config = eqn.params['padding_config']
  if any(interior for _, _, interior in config):
    raise UnsupportedPrimitiveError('pad with interior padding')
  if any(lo < 0 or hi < 0 for lo, hi, _ in config):
    raise UnsupportedPrimitiveError('pad with negative padding')
  pads = [lo for lo, _, _ in config] + [hi for _, hi, _ in config]
  return g.node('Pad', [_as_name(g, ins[0]), g.const(np.asarray(pads, np.int64)),
                        _as_name(g, ins[1])], mode='constant')


def _conv(g, eqn, ins):
  p = eqn.params
  if any(d != 1 for d in p['lhs_dilation']):
    raise UnsupportedPrimitiveError('transposed convolution (lhs_dilation)')
  if p['batch_group_count'] != 1:
    raise UnsupportedPrimitiveError('conv with batch_group_count')
  dn = p['dimension_numbers']
  lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
  x = g.node('Transpose', [_as_name(g, ins[0])], perm=list(lhs_spec))
  if _is_const(ins[1]):
    kernel = g.const(np.transpose(ins[1][1], rhs_spec), 'kernel')
  else:
    kernel = g.node('Transpose', [ins[1][1]], perm=list(rhs_spec))
  padding = p['padding']
  if isinstance(padding, str):
    raise UnsupportedPrimitiveError(f'conv padding {padding!r}')
  pads = [lo for lo, _ in padding] + [hi for _, hi in padding]
  y = g.node('Conv', [x, kernel], strides=list(p['window_strides']), pads=pads,
             dilations=list(p['rhs_dilation']), group=p['feature_group_count'])
  return g.node('Transpose', [y], perm=[int(i) for i in np.argsort(out_spec)])


def _dot_general(g, eqn, ins):
  (lc, rc), (lb, rb) = eqn.params['dimension_numbers']
  ln, rn = len(eqn.invars[0].aval.shape), len(eqn.invars[1].aval.shape)
  letters = iter(string.ascii_lowercase)
  lhs = [None] * ln
  rhs = [None] * rn
  for a, b in zip(lb, rb):
    lhs[a] = rhs[b] = next(letters)
  for a, b in zip(lc, rc):
    lhs[a] = rhs[b] = next(letters)
  for i in range(ln):
    lhs[i] = lhs[i] or next(letters)
  for i in range(rn):
    rhs[i] = rhs[i] or next(letters)
  out = ([lhs[a] for a in lb] + [lhs[i] for i in range(ln) if i not in lb and i not in lc]
         + [rhs[i] for i in range(rn) if i not in rb and i not in rc])
  equation = f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"
  return g.node('Einsum', [_as_name(g, ins[0]), _as_name(g, ins[1])], equation=equation)


_HANDLERS: dict[str, Callable] = {
    **{k: _elementwise(v) for k, v in _ELEMENTWISE.items()},
    **{k: _unary(v) for k, v in _UNARY.items()},
    **{k: _reduce(v) for k, v in _REDUCE.items()},
    'rsqrt': _rsqrt, 'integer_pow': _integer_pow, 'convert_element_type': _convert,
    'reshape': _reshape, 'squeeze': _squeeze, 'broadcast_in_dim': _broadcast_in_dim,
    'transpose': _transpose, 'concatenate': _concatenate, 'select_n': _select_n,
    'slice': _slice, 'pad': _pad,
    'conv_general_dilated': _conv, 'dot_general': _dot_general,
}
_INLINE_PARAMS = ('jaxpr', 'call_jaxpr', 'fun_jaxpr')


def _inner_jaxpr(eqn):
  for key in _INLINE_PARAMS:
    if key in eqn.params:
      inner = eqn.params[key]
      if isinstance(inner, jax_core.ClosedJaxpr):
        return inner.jaxpr, inner.consts
      if isinstance(inner, jax_core.Jaxpr):
        return inner, ()
  return None


def _has_symbolic(aval) -> bool:
  return any(not isinstance(d, int) for d in getattr(aval, 'shape', ()))


def _convert_jaxpr(g: _Graph, jaxpr, consts, inputs) -> list:
  env: dict = {}

  def read(v):
    if isinstance(v, jax_core.Literal):
      return ('const', np.asarray(v.val, v.aval.dtype))
    return env[v]

  for var, c in zip(jaxpr.constvars, consts):
    env[var] = ('const', np.asarray(c))
  for var, value in zip(jaxpr.invars, inputs):
    env[var] = value
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    inner = _inner_jaxpr(eqn)
    if all(_is_const(v) for v in ins) and not any(_has_symbolic(o.aval)
                                                 for o in eqn.outvars):
      # Depends on the weights only: evaluate it now (constant folding with JAX itself).
      params = eqn.primitive.get_bind_params(eqn.params)
      out = eqn.primitive.bind(*(v[1] for v in ins), **params)
      outs = out if eqn.primitive.multiple_results else [out]
      for var, value in zip(eqn.outvars, outs):
        env[var] = ('const', np.asarray(value))
      continue
    if inner is not None:
      outs = _convert_jaxpr(g, inner[0], inner[1], ins)
    elif eqn.primitive.name in _HANDLERS:
      out = _HANDLERS[eqn.primitive.name](g, eqn, ins)
      outs = [out if isinstance(out, tuple) else ('onnx', out)]
    else:
      raise UnsupportedPrimitiveError(
          f'no ONNX mapping for the JAX primitive {eqn.primitive.name!r} (params '
          f'{sorted(eqn.params)}); add one to irstd_jax/tools/onnx_export.py _HANDLERS')
    for var, value in zip(eqn.outvars, outs):
      env[var] = value
  return [read(v) for v in jaxpr.outvars]


def to_onnx(infer: Callable, weights: Sequence[np.ndarray], *, height: int, width: int,
            metadata: Mapping[str, str] | None = None):
  """The ONNX ModelProto of `infer(weights, uint8 [batch, height, width, 1])`.

  Args:
    infer: tools.export.inference_function(..., pad=False): the input is already a
      multiple of 32, as the ONNX contract says.
    weights: its weights (numpy), baked in as initializers.
    height, width: the model's input size (multiples of 32).
    metadata: strings stored in the model's metadata_props.
  """
  onnx = require_onnx()
  batch, = export.symbolic_shape('batch')
  weights = [np.asarray(w) for w in weights]
  closed = jax.make_jaxpr(lambda images: infer(weights, images))(
      jax.ShapeDtypeStruct((batch, height, width, 1), jnp.uint8))
  g = _Graph(onnx)
  outs = _convert_jaxpr(g, closed.jaxpr, closed.consts, [('onnx', 'images')])
  (out,) = outs
  if _is_const(out):
    raise ValueError('the exported function does not depend on its input')
  g.nodes.append(onnx.helper.make_node('Identity', [out[1]], ['logits']))
  graph = onnx.helper.make_graph(
      g.nodes, 'irstd_jax_mshnet',
      [onnx.helper.make_tensor_value_info('images', onnx.TensorProto.UINT8,
                                          ['batch', height, width, 1])],
      [onnx.helper.make_tensor_value_info('logits', onnx.TensorProto.FLOAT,
                                          ['batch', height, width, 1])],
      initializer=g.initializers)
  model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid('', OPSET)],
                                 producer_name='irstd_jax')
  model.ir_version = min(model.ir_version, 10)  # what onnxruntime 1.2x reads
  for key, value in (metadata or {}).items():
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value
  onnx.checker.check_model(model)
  return model


def save(model, path: str) -> None:
  """Writes the model (aside, then renamed: never half-written)."""
  onnx = require_onnx()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  try:
    onnx.save(model, tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def primitives(infer: Callable, weights: Sequence[np.ndarray], *, height: int,
               width: int) -> dict[str, int]:
  """Primitive name -> count in `infer`'s jaxpr, nested jaxprs included (for inspection)."""
  closed = jax.make_jaxpr(lambda images: infer([np.asarray(w) for w in weights], images))(
      jax.ShapeDtypeStruct((1, height, width, 1), jnp.uint8))
  counts: dict[str, int] = {}

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      counts[eqn.primitive.name] = counts.get(eqn.primitive.name, 0) + 1
      inner = _inner_jaxpr(eqn)
      if inner is not None:
        walk(inner[0])

  walk(closed.jaxpr)
  return counts

