"""Spatial attention modules against explicit `lax.conv_general_dilated` references."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from irstd_jax import kernels
from irstd_jax import spatial_attention as sa

PINWHEEL_7 = kernels.pinwheel_mask(7)


def _input(shape=(2, 12, 10, 5), seed=0):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _np_gaussian(sigma, mask=None):
  i, j = np.mgrid[-3:4, -3:4].astype(np.float64)
  g = np.exp(-(i**2 + j**2) / (2 * sigma**2))
  g = g if mask is None else g * mask
  return (g / g.sum()).astype(np.float32)


def _reference_attention(x, kernel_2ch):
  """The paper's code path: conv of concat[mean_c, max_c] (2 channels) with a [7, 7, 2]
  kernel, zero padding 3, precision 'highest'; x * sigmoid(.)."""
  pooled = jnp.concatenate([x.mean(-1, keepdims=True), x.max(-1, keepdims=True)], -1)
  y = jax.lax.conv_general_dilated(
      pooled, jnp.asarray(kernel_2ch)[:, :, :, None], (1, 1), ((3, 3), (3, 3)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision='highest')
  return x * jax.nn.sigmoid(y)


def _param_count(module):
  return sum(v.size for v in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize('kind,mask', [('gaussian_pinwheel', PINWHEEL_7), ('gaussian', None)])
def test_gaussian_attention_matches_explicit_conv(kind, mask):
  module = sa.make_spatial_attention(kind, rngs=nnx.Rngs(0), sigma_init=1.2)
  assert _param_count(module) == 1
  np.testing.assert_allclose(float(module.log_sigma[...]), math.log(1.2), rtol=1e-6)
  k = _np_gaussian(1.2, mask)
  x = _input()
  np.testing.assert_allclose(module(x), _reference_attention(x, np.stack([k, k], -1)),
                             rtol=1e-5, atol=1e-6)


def test_cbam_matches_explicit_conv_and_has_98_params():
  module = sa.make_spatial_attention('cbam', rngs=nnx.Rngs(0))
  assert _param_count(module) == 98
  x = _input()
  kernel = np.asarray(module.conv.kernel[...])[:, :, :, 0]  # [7, 7, 2]: (mean, max)
  np.testing.assert_allclose(module(x), _reference_attention(x, kernel), rtol=1e-5, atol=1e-6)


def test_rotated_pinwheel_uses_the_hard_mask():
  module = sa.make_spatial_attention('rotated_pinwheel', rngs=nnx.Rngs(0))
  assert _param_count(module) == 3
  np.testing.assert_allclose(float(module.theta[...]), math.pi / 6, rtol=1e-6)
  np.testing.assert_allclose(math.exp(float(module.log_tau[...])), 0.1, rtol=1e-6)
  np.testing.assert_allclose(math.exp(float(module.log_sigma[...])), 1.5, rtol=1e-6)
  hard = np.asarray(kernels.soft_rotated_pinwheel(math.pi / 6, math.log(0.1)) > 0.5, np.float32)
  k = _np_gaussian(1.5, hard)
  x = _input()
  np.testing.assert_allclose(module(x), _reference_attention(x, np.stack([k, k], -1)),
                             rtol=1e-5, atol=1e-6)


def test_fixed_rotation_masks_and_routing():
  module = sa.make_spatial_attention('fixed_rotation', rngs=nnx.Rngs(0), num_rotations=4)
  assert _param_count(module) == 1
  masks = np.asarray(module.masks())
  np.testing.assert_array_equal(masks[0], PINWHEEL_7)
  # theta = pi/2 is the quarter turn of theta = 0, and pi/4 is a genuine (bilinear) turn.
  np.testing.assert_allclose(masks[2], np.rot90(masks[0]), atol=1e-5)
  np.testing.assert_allclose(masks[3], np.rot90(masks[1]), atol=1e-5)
  np.testing.assert_allclose(masks[1], kernels.rotate_mask(PINWHEEL_7, math.pi / 4), atol=1e-6)
  assert not np.allclose(masks[1], masks[0])

  x = _input()
  pooled = x.mean(-1, keepdims=True) + x.max(-1, keepdims=True)
  responses = []
  for m in masks:
    k = _np_gaussian(1.5, m)
    responses.append(jax.lax.conv_general_dilated(
        pooled, jnp.asarray(k)[:, :, None, None], (1, 1), ((3, 3), (3, 3)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision='highest')[..., 0])
  responses = np.stack(responses, -1)
  pick = np.abs(responses).argmax(-1)[..., None]
  want = np.asarray(x) * jax.nn.sigmoid(np.take_along_axis(responses, pick, -1))
  np.testing.assert_allclose(module(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kind,names', [
    ('gaussian_pinwheel', ('log_sigma',)),
    ('rotated_pinwheel', ('log_sigma', 'theta', 'log_tau')),
    ('fixed_rotation', ('log_sigma',)),
])
def test_gradients_reach_every_scalar_under_jit(kind, names):
  module = sa.make_spatial_attention(kind, rngs=nnx.Rngs(0))
  x = _input()
  target = jax.random.uniform(jax.random.key(1), x.shape)

  @nnx.jit
  def grads(m):
    return nnx.grad(lambda m: jnp.mean((m(x) - target) ** 2))(m)

  g = grads(module)
  for name in names:
    value = float(g[name][...])
    assert np.isfinite(value) and value != 0.0, (name, value)


def test_factory_rejects_unknown_kinds_and_lists_the_valid_ones():
  with pytest.raises(ValueError, match='cbam.*gaussian_pinwheel.*rotated_pinwheel'):
    sa.make_spatial_attention('gausian', rngs=nnx.Rngs(0))
  assert set(sa.KINDS) >= {'cbam', 'gaussian_pinwheel', 'rotated_pinwheel', 'fixed_rotation'}
