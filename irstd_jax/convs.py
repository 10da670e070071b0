"""The stem convolutions: plain, PConv (AAAI 2025) and GSConv (the paper).

All take and return NHWC arrays. `make_stem_conv(model.stem_conv, ...)` picks one for E0's
two 3x3 convs, the first low-level convolutions of the network (docs/method.md sections 2
and 4). "Stem" is the full-resolution start of MSHNet: its 1x1 input conv (`MSHNet.stem`)
and the E0 stage; `model.stem_conv` chooses E0's convs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from irstd_jax import kernels
from irstd_jax import layers


class ConvBNSiLU(nnx.Module):
  """PConv's `Conv`: conv (no bias, VALID) -> BatchNorm -> SiLU."""

  def __init__(self, cin: int, cout: int, kernel_size: Sequence[int], stride: int = 1, *,
               rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, tuple(kernel_size), strides=stride, padding='VALID',
                         use_bias=False, kernel_init=layers.torch_kernel_init, rngs=rngs)
    self.bn = layers.batch_norm(cout, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.silu(self.bn(self.conv(x)))


def _pad(x: jax.Array, left: int, right: int, top: int, bottom: int) -> jax.Array:
  """Zero pad an NHWC array; the argument order is PyTorch's ZeroPad2d."""
  return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


class PConv(nnx.Module):
  """Pinwheel-shaped convolution (AAAI 2025), exactly as docs/method.md section 4.

  Four asymmetric zero pads (left, right, top, bottom) P0 = (k,0,1,0), P1 = (0,k,0,1),
  P2 = (0,1,k,0), P3 = (1,0,0,k); a (1, k) conv `cw` shared by P0/P1 and a (k, 1) conv
  `ch` shared by P2/P3 (cin -> cout/4, stride s); their concat fused by a 2x2 VALID conv
  (cout -> cout). Each conv is conv -> BN -> SiLU. [B, H, W, cin] -> [B, H/s, W/s, cout]
  (H, W divisible by s). For k = 3 the receptive field is 25 pixels in a 7x7 box.
  """

  def __init__(self, cin: int, cout: int, *, k: int, stride: int = 1, rngs: nnx.Rngs):
    if cout % 4:
      raise ValueError(f'PConv needs cout divisible by 4, got {cout}')
    self.k = k
    self.cw = ConvBNSiLU(cin, cout // 4, (1, k), stride, rngs=rngs)
    self.ch = ConvBNSiLU(cin, cout // 4, (k, 1), stride, rngs=rngs)
    self.cat = ConvBNSiLU(cout, cout, (2, 2), 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.k
    yw0 = self.cw(_pad(x, k, 0, 1, 0))
    yw1 = self.cw(_pad(x, 0, k, 0, 1))
    yh0 = self.ch(_pad(x, 0, 1, k, 0))
    yh1 = self.ch(_pad(x, 1, 0, 0, k))
    return self.cat(jnp.concatenate([yw0, yw1, yh0, yh1], axis=-1))


class GSConv(nnx.Module):
  """Gaussian-shaped feature conv: W_eff[o, i] = W[o, i] * K(sigma_o).

  K(sigma_o) is the normalised kernel_size x kernel_size Gaussian (times the pinwheel
  mask when mask='pinwheel'; for 3x3 that mask keeps every cell), one learnable
  log_sigma per output channel (initial sigma 1.5). Zero padding kernel_size // 2 on each
  side, so [B, H, W, cin] -> [B, ceil(H/s), ceil(W/s), cout], like a PyTorch
  Conv2d(padding=k//2).
  """

  def __init__(self, cin: int, cout: int, *, kernel_size: int = 3, stride: int = 1,
               use_bias: bool = True, mask: str = 'pinwheel', sigma_init: float = 1.5,
               rngs: nnx.Rngs):
    if mask not in ('pinwheel', 'none'):
      raise ValueError(f"mask must be 'pinwheel' or 'none', got {mask!r}")
    self.kernel_size = kernel_size
    self.stride = stride
    self.mask = mask
    self.kernel = nnx.Param(
        layers.torch_kernel_init(rngs.params(), (kernel_size, kernel_size, cin, cout), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32)) if use_bias else None
    self.log_sigma = nnx.Param(jnp.full((cout,), math.log(sigma_init), jnp.float32))

  def effective_kernel(self) -> jax.Array:
    """[k, k, cin, cout] HWIO kernel W * K(sigma_o)."""
    mask = kernels.pinwheel_mask(self.kernel_size) if self.mask == 'pinwheel' else None
    gauss = kernels.gaussian_kernel(self.log_sigma[...], self.kernel_size, mask)  # [O, k, k]
    return self.kernel[...] * jnp.transpose(gauss, (1, 2, 0))[:, :, None, :]

  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.kernel_size // 2
    y = jax.lax.conv_general_dilated(
        x, self.effective_kernel().astype(x.dtype), (self.stride, self.stride),
        ((p, p), (p, p)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.bias is not None:
      y = y + self.bias[...]
    return y


STEM_CONV_KINDS = ('plain', 'pconv', 'gsconv')


def make_stem_conv(kind: str, cin: int, cout: int, *, rngs: nnx.Rngs,
                   kernel_size: int = 3, stride: int = 1, use_bias: bool = True,
                   pconv_k: int = 3, **options) -> nnx.Module:
  """Builds the conv named by `model.stem_conv`.

  Args:
    kind: 'plain' (Conv2d(k, padding=k//2) with PyTorch's init), 'pconv' (PConv with
      k = pconv_k; kernel_size and use_bias do not apply: it has its own BN + SiLU, no
      bias) or 'gsconv' (GSConv; **options go to it, e.g. mask, sigma_init).
    cin, cout: channels.
    rngs: NNX RNG streams.
    kernel_size, stride, use_bias: of the plain / Gaussian-shaped conv.
    pconv_k: PConv's arm length.

  Raises:
    ValueError: for an unknown kind.
  """
  if kind == 'plain':
    p = kernel_size // 2
    return nnx.Conv(cin, cout, (kernel_size, kernel_size), strides=stride,
                    padding=((p, p), (p, p)), use_bias=use_bias,
                    kernel_init=layers.torch_kernel_init, rngs=rngs, **options)
  if kind == 'pconv':
    return PConv(cin, cout, k=pconv_k, stride=stride, rngs=rngs)
  if kind == 'gsconv':
    return GSConv(cin, cout, kernel_size=kernel_size, stride=stride, use_bias=use_bias,
                  rngs=rngs, **options)
  raise ValueError(f'unknown stem conv {kind!r}; valid kinds: {", ".join(STEM_CONV_KINDS)}')
