"""Spatial attention modules: MSHNet's CBAM baseline and the paper's Gaussian variants.

Every module maps x [B, H, W, C] to x * attn, attn [B, H, W, 1] in (0, 1), and is
independent of C, so a res block builds one with `make_spatial_attention(kind, rngs=...)`.

The Gaussian variants (docs/method.md sections 2-3) pool the channels to mean_c(x) + max_c(x)
and correlate that single map with a kernel built from the learnable parameters on every
call (`kernels.py`), zero 'same' padding, no bias. Summing the two pooled maps first is
the same as the paper's code, which convolves [mean_c, max_c] with the kernel copied onto
both input channels. Positive scalars (sigma, tau) live in log space as `nnx.Param`.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from irstd_jax import kernels
from irstd_jax import layers


def pooled_sum(x: jax.Array) -> jax.Array:
  """mean_c(x) + max_c(x): [B, H, W, C] -> [B, H, W, 1]."""
  return jnp.mean(x, axis=-1, keepdims=True) + jnp.max(x, axis=-1, keepdims=True)


def correlate_same(z: jax.Array, kernel: jax.Array) -> jax.Array:
  """Zero-padded 'same' correlation of a one-channel map with n kernels.

  Args:
    z: [B, H, W, 1].
    kernel: [k, k] or [n, k, k].

  Returns:
    [B, H, W, n] (n = 1 for a single kernel).
  """
  if kernel.ndim == 2:
    kernel = kernel[None]
  w = jnp.transpose(kernel, (1, 2, 0))[:, :, None, :]  # HWIO
  # One input channel makes this conv nearly free, so full float32 precision costs
  # nothing (accelerators would otherwise round the normalised kernel to bf16 / tf32).
  return jax.lax.conv_general_dilated(
      z, w.astype(z.dtype), window_strides=(1, 1), padding='SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=jax.lax.Precision.HIGHEST)


def _log_param(value: float) -> nnx.Param:
  return nnx.Param(jnp.asarray(math.log(value), jnp.float32))


class CBAMSpatialAttention(nnx.Module):
  """MSHNet's spatial attention: sigmoid(conv_kxk([mean_c, max_c])), no bias.

  98 parameters for size = 7.
  """

  def __init__(self, *, rngs: nnx.Rngs, size: int = 7):
    self.conv = nnx.Conv(2, 1, (size, size), padding='SAME', use_bias=False,
                         kernel_init=layers.torch_kernel_init, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.concatenate(
        [jnp.mean(x, axis=-1, keepdims=True), jnp.max(x, axis=-1, keepdims=True)], axis=-1)
    return x * jax.nn.sigmoid(self.conv(pooled))


class GaussianPinwheelAttention(nnx.Module):
  """sigmoid(K(sigma) * (mean_c + max_c)), K = normalised Gaussian x pinwheel mask.

  One parameter, log_sigma (initial sigma 1.5). With mask='none' the kernel is the
  plain normalised Gaussian (an ablation row).
  """

  def __init__(self, *, rngs: nnx.Rngs, size: int = 7, sigma_init: float = 1.5,
               mask: str = 'pinwheel'):
    del rngs  # deterministic init; kept for the common constructor signature
    if mask not in ('pinwheel', 'none'):
      raise ValueError(f"mask must be 'pinwheel' or 'none', got {mask!r}")
    self.size = size
    self.mask = mask
    self.log_sigma = _log_param(sigma_init)

  def kernel(self) -> jax.Array:
    """The current [size, size] kernel."""
    mask = kernels.pinwheel_mask(self.size) if self.mask == 'pinwheel' else None
    return kernels.gaussian_kernel(self.log_sigma[...], self.size, mask)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(correlate_same(pooled_sum(x), self.kernel()))


class RotatedPinwheelAttention(nnx.Module):
  """Gaussian x learnably rotated pinwheel, the angle learnt through the STE.

  Parameters: log_sigma (sigma 1.5), theta (pi/6, the paper's code; 0 with num_arms=4
  is the fixed pinwheel's orientation) and log_tau (tau 0.1). The forward pass uses the
  hard 0/1 mask `kernels.rotated_pinwheel_mask`; straight_through=False uses the soft
  mask in the forward pass too (an ablation).
  """

  def __init__(self, *, rngs: nnx.Rngs, size: int = 7, sigma_init: float = 1.5,
               theta_init: float = math.pi / 6, tau_init: float = 0.1, num_arms: int = 4,
               radius: float | None = None, straight_through: bool = True):
    del rngs
    self.size = size
    self.num_arms = num_arms
    self.radius = radius
    self.straight_through = straight_through
    self.log_sigma = _log_param(sigma_init)
    self.theta = nnx.Param(jnp.asarray(theta_init, jnp.float32))
    self.log_tau = _log_param(tau_init)

  def mask(self) -> jax.Array:
    """The current [size, size] mask (hard 0/1 when straight_through)."""
    if self.straight_through:
      return kernels.rotated_pinwheel_mask(self.theta[...], self.log_tau[...], self.size,
                                           self.num_arms, self.radius)
    return kernels.soft_rotated_pinwheel(self.theta[...], self.log_tau[...], size=self.size,
                                         num_arms=self.num_arms, radius=self.radius)

  def kernel(self) -> jax.Array:
    return kernels.gaussian_kernel(self.log_sigma[...], self.size, self.mask())

  def __call__(self, x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(correlate_same(pooled_sum(x), self.kernel()))


class FixedRotationAttention(nnx.Module):
  """n fixed rotations of the Gaussian-pinwheel kernel, max-magnitude routing.

  Kernel k is normalise(G_sigma * rotate(pinwheel, k * pi / n)) (bilinear rotation, as in
  the paper's code); per pixel the response of largest magnitude is kept (its sign
  included) before the sigmoid. One parameter, log_sigma, shared by the n kernels; the
  gradient reaches it through the selected response.
  """

  def __init__(self, *, rngs: nnx.Rngs, size: int = 7, sigma_init: float = 1.5,
               num_rotations: int = 4):
    del rngs
    self.size = size
    self.num_rotations = num_rotations
    self.log_sigma = _log_param(sigma_init)

  def masks(self) -> jax.Array:
    """[n, size, size] rotated pinwheel masks (constants)."""
    base = kernels.pinwheel_mask(self.size)
    return jnp.stack([kernels.rotate_mask(base, k * math.pi / self.num_rotations)
                      for k in range(self.num_rotations)])

  def kernel(self) -> jax.Array:
    """[n, size, size] kernels."""
    return kernels.gaussian_kernel(self.log_sigma[...], self.size, self.masks())

  def __call__(self, x: jax.Array) -> jax.Array:
    responses = correlate_same(pooled_sum(x), self.kernel())  # [B, H, W, n]
    pick = jnp.argmax(jnp.abs(responses), axis=-1, keepdims=True)
    routed = jnp.take_along_axis(responses, pick, axis=-1)
    return x * jax.nn.sigmoid(routed)


# kind -> (class, fixed options). The options a caller passes override nothing here.
_KINDS = {
    'cbam': (CBAMSpatialAttention, {}),
    'gaussian': (GaussianPinwheelAttention, {'mask': 'none'}),
    'gaussian_pinwheel': (GaussianPinwheelAttention, {}),
    'rotated_pinwheel': (RotatedPinwheelAttention, {}),
    'fixed_rotation': (FixedRotationAttention, {}),
}
KINDS = tuple(_KINDS)


def make_spatial_attention(kind: str, *, rngs: nnx.Rngs, **options) -> nnx.Module:
  """Builds the spatial attention named by `model.spatial_attention`.

  Args:
    kind: one of KINDS.
    rngs: NNX RNG streams.
    **options: constructor keywords of that kind's class (e.g. sigma_init, num_arms).

  Raises:
    ValueError: for an unknown kind.
  """
  if kind not in _KINDS:
    raise ValueError(f'unknown spatial attention {kind!r}; valid kinds: {", ".join(KINDS)}')
  cls, fixed = _KINDS[kind]
  return cls(rngs=rngs, **fixed, **options)


def options_for(kind: str, options: Mapping) -> dict:
  """The subset of a flat options mapping (`config.model.attention`) that `kind` takes.

  One flat config block serves every kind, so that `--config.model.attention.num_arms=1`
  works whatever the kind; fields a kind has no use for are left out here.
  """
  if kind not in _KINDS:
    raise ValueError(f'unknown spatial attention {kind!r}; valid kinds: {", ".join(KINDS)}')
  cls, fixed = _KINDS[kind]
  accepted = set(inspect.signature(cls.__init__).parameters) - {'self', 'rngs'} - set(fixed)
  return {k: v for k, v in options.items() if k in accepted}
