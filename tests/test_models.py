"""MSHNet: output shapes, parameter counts against the PyTorch reference, upsampling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from irstd_jax import models


def _param_count(**kwargs):
  model = nnx.eval_shape(lambda: models.MSHNet(rngs=nnx.Rngs(0), **kwargs))
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_parameter_count_matches_the_pytorch_reference():
  # Counted on the original PyTorch layer list (METHOD.md section 5).
  assert _param_count(in_channels=3) == 4_065_513
  assert _param_count(in_channels=1) == 4_065_481


def test_output_shapes_and_deep_supervision_scales():
  model = models.MSHNet(widths=(4, 8, 8, 16, 16), rngs=nnx.Rngs(0))
  fused, sides = jax.jit(lambda m, x: m(x))(model, jnp.zeros((2, 32, 64, 1)))
  assert fused.shape == (2, 32, 64, 1)
  assert [s.shape for s in sides] == [(2, 32, 64, 1), (2, 16, 32, 1), (2, 8, 16, 1),
                                      (2, 4, 8, 1)]


def _reference_align_corners(x, factor):
  """Per-output-pixel bilinear interpolation, align_corners=True, straight from its
  definition: source coordinate = i * (n_in - 1) / (n_out - 1)."""
  b, h, w, c = x.shape
  oh, ow = h * factor, w * factor
  out = np.zeros((b, oh, ow, c), np.float64)
  for i in range(oh):
    sy = i * (h - 1) / (oh - 1)
    y0 = min(int(np.floor(sy)), h - 2)
    fy = sy - y0
    for j in range(ow):
      sx = j * (w - 1) / (ow - 1)
      x0 = min(int(np.floor(sx)), w - 2)
      fx = sx - x0
      out[:, i, j] = ((1 - fy) * (1 - fx) * x[:, y0, x0] + (1 - fy) * fx * x[:, y0, x0 + 1]
                      + fy * (1 - fx) * x[:, y0 + 1, x0] + fy * fx * x[:, y0 + 1, x0 + 1])
  return out


@pytest.mark.parametrize('factor', [2, 4, 8])
def test_upsample_is_align_corners_bilinear(factor):
  x = np.random.default_rng(factor).normal(size=(2, 4, 5, 3)).astype(np.float32)
  got = np.asarray(models.upsample_bilinear(jnp.asarray(x), factor))
  np.testing.assert_allclose(got, _reference_align_corners(x.astype(np.float64), factor),
                             rtol=1e-5, atol=1e-5)
  # Corners are copied exactly: what align_corners means.
  np.testing.assert_array_equal(got[:, 0, 0], x[:, 0, 0])
  np.testing.assert_array_equal(got[:, -1, -1], x[:, -1, -1])


def test_max_pool2():
  x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
  expected = np.asarray(x).reshape(2, 2, 2, 2, 2, 1).max(axis=(2, 4))
  np.testing.assert_array_equal(models.max_pool2(x), expected)


def test_pytorch_style_init_bounds():
  model = models.MSHNet(widths=(4, 8, 8, 16, 16), rngs=nnx.Rngs(0))
  kernel = np.asarray(model.encoder1.blocks[0].conv1.kernel[...])  # fan_in = 3*3*4
  bias = np.asarray(model.encoder1.blocks[0].conv1.bias[...])
  bound = 1 / np.sqrt(36)
  assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.8 * bound
  assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0
