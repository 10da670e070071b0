"""Layers that behave exactly as their PyTorch counterparts in the reference MSHNet code.

The one home of PyTorch's default initialisation and of its BatchNorm semantics, for every
module that builds convolutions (models.py, convs.py). docs/method.md section 5.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

# PyTorch's default Conv2d kernel init, kaiming_uniform(a=sqrt(5)), reduces to
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the recipe's Adagrad lr of 0.05 was tuned for that scale.
torch_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')

# torch.nn.BatchNorm2d(momentum=0.1) in Flax's convention (weight of the old statistic).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def torch_bias_init(fan_in: int):
  """PyTorch's default Conv2d bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class BatchNorm(nnx.BatchNorm):
  """`nnx.BatchNorm` over NHWC inputs with PyTorch's running-variance update.

  Training normalises with the biased batch variance, as both frameworks do, but
  PyTorch's `running_var` moves towards the UNBIASED one, var * n / (n - 1) with
  n = B * H * W values per channel, while Flax's moves towards the biased one. The
  difference shows in every evaluation after training (about 2e-3 relative at 64^2,
  batch 2), so this layer follows PyTorch. Same variables (scale, bias, mean, var) and
  constructor as `nnx.BatchNorm`: checkpoints and imported weights are unchanged.
  """

  def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
    """[..., C] -> [..., C], statistics over every axis but the last."""
    if use_running_average is None:
      use_running_average = self.use_running_average
    axes = tuple(range(x.ndim - 1))
    if use_running_average:
      mean, var = self.mean[...], self.var[...]
    else:
      x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
      mean = x32.mean(axes)
      # E[x^2] - E[x]^2, clipped at 0, as nnx.BatchNorm's fast variance computes it.
      var = jnp.maximum(0.0, jnp.square(x32).mean(axes) - jnp.square(mean))
      n = math.prod(x.shape[:-1])  # the global batch: under jit the mesh is transparent
      unbiased = var * (n / max(n - 1, 1))
      m = self.momentum
      self.mean[...] = jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * mean)
      self.var[...] = jax.lax.stop_gradient(m * self.var[...] + (1 - m) * unbiased)
    mul = jax.lax.rsqrt(var + self.epsilon) * self.scale[...]
    return ((x - mean) * mul + self.bias[...]).astype(x.dtype)


def batch_norm(c: int, *, rngs: nnx.Rngs) -> BatchNorm:
  """A BatchNorm2d(c) with the reference's momentum and epsilon."""
  return BatchNorm(c, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs)
