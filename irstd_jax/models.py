"""MSHNet (CVPR 2024) in Flax NNX, as docs/method.md section 5 specifies.

Layout is NHWC throughout. Weights are initialised as PyTorch's defaults do
(U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for conv kernels and biases) because the recipe's
Adagrad learning rate of 0.05 was tuned for that scale.
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from irstd_jax import convs
from irstd_jax import layers
from irstd_jax import onednn_conv
from irstd_jax import spatial_attention as spatial_attention_lib

def conv(cin: int, cout: int, kernel: int, *, use_bias: bool = True, rngs: nnx.Rngs,
         padding='SAME') -> nnx.Conv:
  """A square conv initialised like torch.nn.Conv2d (stride 1, 'same' padding)."""
  fan_in = cin * kernel * kernel
  return nnx.Conv(
      cin, cout, (kernel, kernel), padding=padding, use_bias=use_bias,
      kernel_init=layers.torch_kernel_init, bias_init=layers.torch_bias_init(fan_in),
      rngs=rngs)


def max_pool2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2, [B, H, W, C] -> [B, H//2, W//2, C] (odd edges dropped)."""
  b, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@functools.lru_cache(maxsize=64)
def _align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] linear-interpolation weights with align_corners=True."""
  weights = np.zeros((n_out, n_in), np.float32)
  if n_in == 1:
    weights[:, 0] = 1.0
    return weights
  src = np.arange(n_out, dtype=np.float64) * (n_in - 1) / max(n_out - 1, 1)
  lo = np.clip(np.floor(src).astype(int), 0, n_in - 2)
  frac = (src - lo).astype(np.float32)
  weights[np.arange(n_out), lo] = 1.0 - frac
  weights[np.arange(n_out), lo + 1] += frac
  return weights


def _align_corners_matrix_traced(n_in, n_out) -> jax.Array:
  """_align_corners_matrix for sizes only known when the graph runs (symbolic dims).

  Same formula in integers: row i interpolates between lo = floor(i (n_in-1) / (n_out-1))
  and lo + 1 with weight frac = remainder / (n_out - 1). XLA's vectorised float32
  division on CPU is not correctly rounded, so a weight can differ from the float64-
  then-float32 one by 1 ulp (tests/test_export.py bounds the effect on the logits).
  """
  d = n_out - 1
  numerator = jnp.arange(n_out, dtype=jnp.int32) * (n_in - 1)
  lo = jnp.maximum(jnp.minimum(numerator // d, n_in - 2), 0)  # n_in == 1: lo = 0, frac = 0
  frac = (numerator - lo * d).astype(jnp.float32) / jnp.asarray(d, jnp.float32)
  cols = jnp.arange(n_in, dtype=jnp.int32)[None, :]
  return (jnp.where(cols == lo[:, None], 1.0 - frac[:, None], 0.0)
          + jnp.where(cols == lo[:, None] + 1, frac[:, None], 0.0))


def upsample_bilinear(x: jax.Array, factor: int) -> jax.Array:
  """Bilinear upsampling with align_corners=True, as torch.nn.Upsample uses in MSHNet.

  jax.image.resize is half-pixel aligned, which shifts every map by a fraction of a
  pixel relative to the reference, so the interpolation is written out as two small
  matmuls (separable, exact, and fast on every backend).

  Args:
    x: [B, H, W, C].
    factor: integer scale factor.

  Returns:
    [B, H * factor, W * factor, C].
  """
  _, h, w, _ = x.shape
  if isinstance(h, int) and isinstance(w, int):
    wh = jnp.asarray(_align_corners_matrix(h, h * factor), x.dtype)
    ww = jnp.asarray(_align_corners_matrix(w, w * factor), x.dtype)
  else:  # symbolic sizes (jax.export with dynamic height/width): built in the graph
    wh = _align_corners_matrix_traced(h, h * factor).astype(x.dtype)
    ww = _align_corners_matrix_traced(w, w * factor).astype(x.dtype)
  x = jnp.einsum('oh,bhwc->bowc', wh, x)
  return jnp.einsum('pw,bowc->bopc', ww, x)



def abstract_model(model_config) -> 'MSHNet':
  """The MSHNet `model_config` describes with every array a jax.ShapeDtypeStruct: its
  structure (graphdef, parameter shapes) for nothing, as restoring a checkpoint or checking
  a config needs (nnx.eval_shape: nothing is initialised or compiled). See build_model."""
  return nnx.eval_shape(lambda: build_model(model_config, rngs=nnx.Rngs(0)))


class ChannelAttention(nnx.Module):
  """CBAM channel attention: sigmoid(fc(avgpool) + fc(maxpool)), returns [B, 1, 1, C]."""

  def __init__(self, c: int, *, reduction: int = 16, rngs: nnx.Rngs):
    hidden = max(c // reduction, 1)
    self.fc1 = conv(c, hidden, 1, use_bias=False, rngs=rngs)
    self.fc2 = conv(hidden, c, 1, use_bias=False, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    avg = jnp.mean(x, axis=(1, 2), keepdims=True)
    mx = jnp.max(x, axis=(1, 2), keepdims=True)
    mlp = lambda v: self.fc2(jax.nn.relu(self.fc1(v)))
    return jax.nn.sigmoid(mlp(avg) + mlp(mx))


class ResBlock(nnx.Module):
  """MSHNet's residual block with channel and spatial attention.

  conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> *channel attn -> spatial attn -> + shortcut
  -> ReLU. The shortcut is conv1x1 + BN when the width changes.

  `stem_conv` ('plain' | 'pconv' | 'gsconv', see convs.make_stem_conv; set in E0 only) swaps
  the two 3x3 convs for PConv (arm lengths `pconv_k`, the released "P43" weights use
  (4, 3)) or the Gaussian-shaped GSConv; the BN -> ReLU / BN around them stay.
  `spatial_attention_options` go to spatial_attention.make_spatial_attention.
  """

  def __init__(self, cin: int, c: int, *, spatial_attention: str = 'cbam',
               spatial_attention_options: Mapping | None = None,
               stem_conv: str = 'plain', pconv_k: Sequence[int] = (4, 3),
               reduction: int = 16, rngs: nnx.Rngs):
    def conv3x3(ci, k):
      if stem_conv == 'plain':
        return conv(ci, c, 3, rngs=rngs)
      return convs.make_stem_conv(stem_conv, ci, c, pconv_k=k, rngs=rngs)

    self.conv1 = conv3x3(cin, pconv_k[0])
    self.bn1 = layers.batch_norm(c, rngs=rngs)
    self.conv2 = conv3x3(c, pconv_k[1])
    self.bn2 = layers.batch_norm(c, rngs=rngs)
    self.channel_attention = ChannelAttention(c, reduction=reduction, rngs=rngs)
    self.spatial_attention = spatial_attention_lib.make_spatial_attention(
        spatial_attention, rngs=rngs, **(spatial_attention_options or {}))
    if cin != c:
      self.shortcut_conv = conv(cin, c, 1, rngs=rngs)
      self.shortcut_bn = layers.batch_norm(c, rngs=rngs)
    else:
      self.shortcut_conv = None
      self.shortcut_bn = None

  def __call__(self, x: jax.Array) -> jax.Array:
    residual = x
    if self.shortcut_conv is not None:
      residual = self.shortcut_bn(self.shortcut_conv(x))
    out = jax.nn.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    out = out * self.channel_attention(out)
    out = self.spatial_attention(out)
    return jax.nn.relu(out + residual)


class Stage(nnx.Module):
  """`num_blocks` ResBlocks, the first changing the width from cin to c."""

  def __init__(self, cin: int, c: int, num_blocks: int, *, rngs: nnx.Rngs, **block_kwargs):
    self.blocks = nnx.List([
        ResBlock(cin if i == 0 else c, c, rngs=rngs, **block_kwargs)
        for i in range(num_blocks)])

  def __call__(self, x: jax.Array) -> jax.Array:
    for block in self.blocks:
      x = block(x)
    return x


class MSHNet(nnx.Module):
  """The MSHNet U-Net with four deep-supervision heads and a fused output.

  Input height and width must be multiples of 16 (the eval path pads to 32).
  """

  def __init__(self, *, in_channels: int = 1,
               widths: Sequence[int] = (16, 32, 64, 128, 256),
               blocks_per_stage: int = 2, channel_reduction: int = 16,
               spatial_attention: str = 'cbam',
               spatial_attention_options: Mapping | None = None, stem_conv: str = 'plain',
               stem_pconv_k: Sequence[int] = (4, 3), rngs: nnx.Rngs):
    if len(widths) != 5:
      raise ValueError(f'MSHNet needs 5 widths (stem/E0, E1, E2, E3, middle), got {widths}')
    c0, c1, c2, c3, c4 = widths
    n = blocks_per_stage
    kw = dict(spatial_attention=spatial_attention,
              spatial_attention_options=spatial_attention_options,
              reduction=channel_reduction)
    self.stem = conv(in_channels, c0, 1, rngs=rngs)
    # The stem: the 1x1 input conv, then E0, whose two 3x3 convs are `stem_conv` (where
    # PConv / GSConv go). The attribute name `stem` is in every checkpoint's paths.
    self.encoder0 = Stage(c0, c0, 1, rngs=rngs, stem_conv=stem_conv,
                          pconv_k=tuple(stem_pconv_k), **kw)
    self.encoder1 = Stage(c0, c1, n, rngs=rngs, **kw)
    self.encoder2 = Stage(c1, c2, n, rngs=rngs, **kw)
    self.encoder3 = Stage(c2, c3, n, rngs=rngs, **kw)
    self.middle = Stage(c3, c4, n, rngs=rngs, **kw)
    self.decoder3 = Stage(c3 + c4, c3, n, rngs=rngs, **kw)
    self.decoder2 = Stage(c2 + c3, c2, n, rngs=rngs, **kw)
    self.decoder1 = Stage(c1 + c2, c1, n, rngs=rngs, **kw)
    self.decoder0 = Stage(c0 + c1, c0, 1, rngs=rngs, **kw)
    self.head0 = conv(c0, 1, 1, rngs=rngs)
    self.head1 = conv(c1, 1, 1, rngs=rngs)
    self.head2 = conv(c2, 1, 1, rngs=rngs)
    self.head3 = conv(c3, 1, 1, rngs=rngs)
    self.fuse = conv(4, 1, 3, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """Runs the network.

    Args:
      x: normalised images [B, H, W, in_channels].

    Returns:
      (fused logits [B, H, W, 1], [h0 [B, H, W, 1], h1 [B, H/2, W/2, 1],
       h2 [B, H/4, W/4, 1], h3 [B, H/8, W/8, 1]]): the final map and the four
      deep-supervision heads, all logits.
    """
    e0 = self.encoder0(self.stem(x))
    e1 = self.encoder1(max_pool2(e0))
    e2 = self.encoder2(max_pool2(e1))
    e3 = self.encoder3(max_pool2(e2))
    m = self.middle(max_pool2(e3))
    d3 = self.decoder3(jnp.concatenate([e3, upsample_bilinear(m, 2)], axis=-1))
    d2 = self.decoder2(jnp.concatenate([e2, upsample_bilinear(d3, 2)], axis=-1))
    d1 = self.decoder1(jnp.concatenate([e1, upsample_bilinear(d2, 2)], axis=-1))
    d0 = self.decoder0(jnp.concatenate([e0, upsample_bilinear(d1, 2)], axis=-1))
    h0, h1, h2, h3 = self.head0(d0), self.head1(d1), self.head2(d2), self.head3(d3)
    fused = self.fuse(jnp.concatenate(
        [h0, upsample_bilinear(h1, 2), upsample_bilinear(h2, 4), upsample_bilinear(h3, 8)],
        axis=-1))
    return fused, [h0, h1, h2, h3]


def use_conv_function(model: nnx.Module, conv_general_dilated) -> None:
  """Makes every nnx.Conv in `model` convolve with `conv_general_dilated`.

  nnx.Conv keeps the function as a static attribute (part of the graphdef), so the choice
  travels with nnx.split / merge. The lax.conv calls outside nnx.Conv (GSConv, the
  Gaussian attentions' one-channel correlation) are not affected.
  """
  for _, module in nnx.iter_modules(model):
    if isinstance(module, nnx.Conv):
      module.conv_general_dilated = conv_general_dilated


def build_model(model_config, *, rngs: nnx.Rngs) -> MSHNet:
  """Builds MSHNet from a `config.model` ConfigDict.

  `model_config.attention` is one flat block of spatial-attention options; each kind
  takes the fields it has (spatial_attention.options_for). It, `stem_pconv_k` and
  `conv_backend` may be absent (older configs): the modules' defaults apply, and 'xla'
  for the convolutions (onednn_conv.resolve_conv_function).
  """
  kind = model_config.spatial_attention
  attention = model_config.get('attention', None) or {}
  model = MSHNet(
      in_channels=model_config.in_channels,
      widths=tuple(model_config.widths),
      blocks_per_stage=model_config.blocks_per_stage,
      channel_reduction=model_config.channel_reduction,
      spatial_attention=kind,
      spatial_attention_options=spatial_attention_lib.options_for(kind, attention),
      stem_conv=model_config.stem_conv,
      stem_pconv_k=tuple(model_config.get('stem_pconv_k', (4, 3))),
      rngs=rngs)
  use_conv_function(
      model, onednn_conv.resolve_conv_function(model_config.get('conv_backend', 'xla')))
  return model
