"""PConv and GSConv against explicit `lax.conv_general_dilated` references."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from irstd_jax import convs
from irstd_jax import kernels


def _conv(x, w, stride=1, padding='VALID'):
  return jax.lax.conv_general_dilated(
      x, w, (stride, stride), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision='highest')


def _randomise_batch_norms(module, seed=0):
  """Non-trivial running statistics and affine parameters, so eval mode is tested."""
  rng = np.random.default_rng(seed)
  for _, node in nnx.iter_graph(module):
    if isinstance(node, nnx.BatchNorm):
      c = node.scale[...].shape[0]
      node.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32)
      node.bias[...] = jnp.asarray(rng.normal(size=c), jnp.float32)
      node.mean[...] = jnp.asarray(rng.normal(size=c), jnp.float32)
      node.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32)


def _ref_conv_bn_silu(x, block, stride=1):
  y = _conv(x, block.conv.kernel[...], stride)
  bn = block.bn
  y = (y - bn.mean[...]) / jnp.sqrt(bn.var[...] + 1e-5) * bn.scale[...] + bn.bias[...]
  return jax.nn.silu(y)


def _ref_pconv(x, module, k, stride):
  """docs/method.md section 4 written out: pads are (left, right, top, bottom)."""
  def pad(left, right, top, bottom):
    return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  branches = [
      _ref_conv_bn_silu(pad(k, 0, 1, 0), module.cw, stride),
      _ref_conv_bn_silu(pad(0, k, 0, 1), module.cw, stride),
      _ref_conv_bn_silu(pad(0, 1, k, 0), module.ch, stride),
      _ref_conv_bn_silu(pad(1, 0, 0, k), module.ch, stride),
  ]
  return _ref_conv_bn_silu(jnp.concatenate(branches, -1), module.cat)


@pytest.mark.parametrize('k,stride', [(3, 1), (4, 1), (3, 2), (4, 2)])
def test_pconv_matches_the_spec_and_output_shape(k, stride):
  module = convs.PConv(3, 8, k=k, stride=stride, rngs=nnx.Rngs(0))
  assert module.cw.conv.kernel[...].shape == (1, k, 3, 2)
  assert module.ch.conv.kernel[...].shape == (k, 1, 3, 2)
  assert module.cat.conv.kernel[...].shape == (2, 2, 8, 8)
  _randomise_batch_norms(module)
  module.eval()
  x = jax.random.normal(jax.random.key(0), (2, 16, 12, 3))
  y = module(x)
  assert y.shape == (2, 16 // stride, 12 // stride, 8)
  np.testing.assert_allclose(y, _ref_pconv(x, module, k, stride), rtol=1e-5, atol=1e-5)


def test_pconv_receptive_field_is_25_pixels_in_a_7x7_box():
  module = convs.PConv(2, 4, k=3, stride=1, rngs=nnx.Rngs(0))
  module.eval()  # BN as a fixed affine map: the response is local

  def centre_response(x):
    return jnp.sum(module(x)[0, 7, 7, :])

  x = jax.random.normal(jax.random.key(1), (1, 15, 15, 2))
  support = np.abs(np.asarray(jax.grad(centre_response)(x))[0]).sum(-1) > 0
  rows, cols = np.nonzero(support)
  assert support.sum() == 25
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 10, 4, 10)
  # Its pinwheel shape: the 3x3 centre plus the four arms' outer cells, no corners.
  assert support[7, 7] and not support[4, 4] and not support[10, 10]


def test_gsconv_is_a_conv_with_gaussian_shaped_weights():
  module = convs.GSConv(3, 4, kernel_size=5, stride=1, sigma_init=0.8, rngs=nnx.Rngs(0))
  assert module.log_sigma[...].shape == (4,)
  # Distinct per-output-channel scales, so the test would catch a shared or swapped sigma.
  sigmas = np.array([0.5, 0.8, 1.5, 3.0], np.float32)
  module.log_sigma[...] = jnp.log(sigmas)
  w = np.asarray(module.kernel[...])
  i, j = np.mgrid[-2:3, -2:3]
  mask = kernels.pinwheel_mask(5)
  w_eff = np.empty_like(w)
  for o, s in enumerate(sigmas):
    g = np.exp(-(i**2 + j**2) / (2 * s**2)) * mask
    w_eff[:, :, :, o] = w[:, :, :, o] * (g / g.sum())[:, :, None]
  np.testing.assert_allclose(module.effective_kernel(), w_eff, rtol=1e-5, atol=1e-8)
  x = jax.random.normal(jax.random.key(2), (2, 10, 10, 3))
  want = _conv(x, jnp.asarray(w_eff), 1, ((2, 2), (2, 2))) + module.bias[...]
  np.testing.assert_allclose(module(x), want, rtol=1e-5, atol=1e-6)

  grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(module)
  g = np.asarray(grads['log_sigma'][...])
  assert g.shape == (4,) and np.all(np.isfinite(g)) and np.all(g != 0)


@pytest.mark.parametrize('kind', convs.STEM_CONV_KINDS)
@pytest.mark.parametrize('stride', [1, 2])
def test_stem_conv_factory_shapes(kind, stride):
  module = convs.make_stem_conv(kind, 4, 8, rngs=nnx.Rngs(0), stride=stride)
  y = module(jnp.ones((1, 8, 8, 4)))
  assert y.shape == (1, 8 // stride, 8 // stride, 8)


def test_plain_conv_is_torch_conv2d_padding_1():
  module = convs.make_stem_conv('plain', 3, 4, rngs=nnx.Rngs(0), stride=2)
  x = jax.random.normal(jax.random.key(3), (1, 9, 9, 3))
  want = _conv(x, module.kernel[...], 2, ((1, 1), (1, 1))) + module.bias[...]
  np.testing.assert_allclose(module(x), want, rtol=1e-5, atol=1e-6)
  bound = 1 / math.sqrt(27)
  assert np.abs(np.asarray(module.kernel[...])).max() <= bound


def test_factory_rejects_unknown_kinds():
  with pytest.raises(ValueError, match='plain, pconv, gsconv'):
    convs.make_stem_conv('pconvv', 4, 8, rngs=nnx.Rngs(0))
