"""layers.BatchNorm against PyTorch's BatchNorm2d formula, written out in numpy."""
import jax
import numpy as np
from flax import nnx

from irstd_jax import layers


def _torch_batch_norm_reference(x, running_mean, running_var, weight, bias, *,
                                momentum=0.1, eps=1e-5):
  """torch.nn.BatchNorm2d.forward in training mode, NHWC, in float64.

  Returns (output, new running_mean, new running_var). PyTorch normalises with the biased
  batch variance and moves running_var towards the unbiased one (n / (n - 1)).
  """
  x = x.astype(np.float64)
  n = x.size // x.shape[-1]
  mean = x.mean(axis=(0, 1, 2))
  var = x.var(axis=(0, 1, 2))  # biased
  out = (x - mean) / np.sqrt(var + eps) * weight + bias
  new_mean = (1 - momentum) * running_mean + momentum * mean
  new_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)
  return out, new_mean, new_var


def _layer(c, seed):
  layer = layers.batch_norm(c, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(seed)
  layer.scale[...] = rng.normal(1.0, 0.3, c).astype(np.float32)
  layer.bias[...] = rng.normal(0.0, 0.3, c).astype(np.float32)
  layer.mean[...] = rng.normal(0.0, 0.5, c).astype(np.float32)
  layer.var[...] = rng.uniform(0.5, 2.0, c).astype(np.float32)
  return layer


def test_training_step_follows_pytorch_including_unbiased_running_var():
  c = 5
  layer = _layer(c, seed=0)
  x = np.random.default_rng(1).normal(0.7, 2.0, size=(2, 3, 4, c)).astype(np.float32)
  before = [np.asarray(v[...]) for v in (layer.mean, layer.var, layer.scale, layer.bias)]
  want_out, want_mean, want_var = _torch_batch_norm_reference(x, *before)
  layer.train()
  got = nnx.jit(lambda m, x: m(x))(layer, x)
  np.testing.assert_allclose(np.asarray(got), want_out, rtol=0, atol=2e-5)
  np.testing.assert_allclose(np.asarray(layer.mean[...]), want_mean, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(layer.var[...]), want_var, rtol=1e-5, atol=1e-7)
  # n = 24 here: the biased update would be off by 0.1 * var / 23, far outside the tolerance.
  biased = 0.9 * before[1] + 0.1 * x.astype(np.float64).var(axis=(0, 1, 2))
  assert np.all(np.abs(np.asarray(layer.var[...]) - biased) > 1e-3)


def test_eval_uses_running_statistics_and_leaves_them():
  c = 3
  layer = _layer(c, seed=2)
  mean, var = np.asarray(layer.mean[...]), np.asarray(layer.var[...])
  x = np.random.default_rng(3).normal(size=(1, 4, 4, c)).astype(np.float32)
  layer.eval()
  got = layer(x)
  want = (x - mean) / np.sqrt(var + 1e-5) * np.asarray(layer.scale[...]) + np.asarray(
      layer.bias[...])
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(layer.mean[...]), mean)
  np.testing.assert_array_equal(np.asarray(layer.var[...]), var)


def test_no_gradient_flows_into_the_running_statistics():
  layer = _layer(2, seed=4)
  layer.train()
  graphdef, params, stats = nnx.split(layer, nnx.Param, ...)
  x = np.random.default_rng(5).normal(size=(2, 2, 2, 2)).astype(np.float32)

  def new_var_sum(stats):
    model = nnx.merge(graphdef, params, stats, copy=True)
    model(x)
    return jax.numpy.sum(nnx.state(model, nnx.BatchStat)['var'][...])

  grads = jax.grad(new_var_sum)(stats)
  assert all(float(np.abs(g).sum()) == 0.0 for g in jax.tree.leaves(grads))
