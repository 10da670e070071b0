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
  # Counted on the original PyTorch layer list (docs/method.md section 5).
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
  # Against a loop over 2x2 windows (PyTorch's MaxPool2d(2, 2): an odd last row/column is
  # dropped), on random values so that the maximum sits anywhere in its window.
  x = np.random.default_rng(0).normal(size=(2, 7, 5, 3)).astype(np.float32)
  expected = np.empty((2, 3, 2, 3), np.float32)
  for b in range(2):
    for i in range(3):
      for j in range(2):
        for c in range(3):
          expected[b, i, j, c] = max(x[b, 2 * i, 2 * j, c], x[b, 2 * i, 2 * j + 1, c],
                                     x[b, 2 * i + 1, 2 * j, c], x[b, 2 * i + 1, 2 * j + 1, c])
  np.testing.assert_array_equal(models.max_pool2(jnp.asarray(x)), expected)
  # A hand-computed case: the window maxima of 0..15 in a 4x4 grid.
  grid = jnp.arange(16, dtype=jnp.float32).reshape(1, 4, 4, 1)
  np.testing.assert_array_equal(models.max_pool2(grid)[0, ..., 0], [[5, 7], [13, 15]])


def test_pytorch_style_init_bounds():
  model = models.MSHNet(widths=(4, 8, 8, 16, 16), rngs=nnx.Rngs(0))
  kernel = np.asarray(model.encoder1.blocks[0].conv1.kernel[...])  # fan_in = 3*3*4
  bias = np.asarray(model.encoder1.blocks[0].conv1.bias[...])
  bound = 1 / np.sqrt(36)
  assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.8 * bound
  assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0
