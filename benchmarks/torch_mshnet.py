"""A PyTorch reference MSHNet, for parity tests and speed benchmarks only (needs torch).

Written from docs/method.md section 5 with the module and parameter names of the public MSHNet
repository (`conv_init`, `encoder_0`..`encoder_3`, `middle_layer`, `decoder_3`..`decoder_0`,
`output_0`..`output_3`, `final`; blocks with `conv1`/`bn1`/`conv2`/`bn2`, `ca.fc1`/`ca.fc2`,
`sa.conv1` and `shortcut.0`/`shortcut.1`), so that its `state_dict()` has the same keys as
the released checkpoints and `irstd_jax.tools.torch_import` reads both. Layout is NCHW.

Widths, depth and the channel-attention reduction are arguments (the parity tests use tiny
widths); MSHNet's defaults are (16, 32, 64, 128, 256), 2 blocks per stage, reduction 16.

The Gaussian-pinwheel variant (docs/method.md section 2) replaces every block's `sa` with
`GaussianPinwheelAttention`, whose only parameter is `sa.log_sigma`. It is written the way
the paper's code writes it: the normalised kernel is copied onto both input channels of a
[mean_c, max_c] convolution (irstd_jax sums the two maps first; the parity test checks the
two agree).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ChannelAttention(nn.Module):
  """sigmoid(fc2(relu(fc1(avgpool))) + fc2(relu(fc1(maxpool)))), 1x1 convs, no bias."""

  def __init__(self, c: int, reduction: int = 16):
    super().__init__()
    hidden = max(c // reduction, 1)
    self.fc1 = nn.Conv2d(c, hidden, 1, bias=False)
    self.fc2 = nn.Conv2d(hidden, c, 1, bias=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    avg = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
    mx = self.fc2(F.relu(self.fc1(F.adaptive_max_pool2d(x, 1))))
    return torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
  """CBAM: sigmoid(conv7x7([mean_c, max_c])), no bias. Returns the [B, 1, H, W] map."""

  def __init__(self, kernel_size: int = 7):
    super().__init__()
    self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    return torch.sigmoid(self.conv1(pooled))


def pinwheel_mask(size: int = 7) -> np.ndarray:
  """Centre row, centre column and both diagonals of a size x size grid (1 = kept)."""
  c = size // 2
  i, j = np.meshgrid(np.arange(size) - c, np.arange(size) - c, indexing='ij')
  return ((i == 0) | (j == 0) | (np.abs(i) == np.abs(j))).astype(np.float32)


class GaussianPinwheelAttention(nn.Module):
  """sigmoid(K(sigma) conv [mean_c, max_c]), K = normalise(G_sigma * mask), one parameter.

  mask='none' gives the plain normalised Gaussian ('gaussian' in irstd_jax).
  """

  def __init__(self, size: int = 7, sigma_init: float = 1.5, mask: str = 'pinwheel'):
    super().__init__()
    self.size = size
    self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma_init), dtype=torch.float32))
    c = size // 2
    i, j = np.meshgrid(np.arange(size) - c, np.arange(size) - c, indexing='ij')
    m = pinwheel_mask(size) if mask == 'pinwheel' else np.ones((size, size), np.float32)
    # Constants, not state: they stay out of state_dict().
    self.register_buffer('r2', torch.from_numpy((i**2 + j**2).astype(np.float32)),
                         persistent=False)
    self.register_buffer('mask', torch.from_numpy(m), persistent=False)

  def kernel(self) -> torch.Tensor:
    sigma = self.log_sigma.exp().clamp(0.01, 10.0)
    g = torch.exp(-self.r2 / (2 * sigma**2)) * self.mask
    return g / g.sum()

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    weight = self.kernel().to(x.dtype).expand(1, 2, self.size, self.size)
    return torch.sigmoid(F.conv2d(pooled, weight, padding=self.size // 2))


def make_spatial_attention(kind: str) -> nn.Module:
  if kind == 'cbam':
    return SpatialAttention()
  if kind == 'gaussian_pinwheel':
    return GaussianPinwheelAttention()
  if kind == 'gaussian':
    return GaussianPinwheelAttention(mask='none')
  raise ValueError(f'the PyTorch reference has no spatial attention {kind!r}')


class ResNet(nn.Module):
  """MSHNet's residual block (the repository calls it ResNet)."""

  def __init__(self, cin: int, c: int, spatial_attention: str = 'cbam', reduction: int = 16):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, c, 3, padding=1)
    self.bn1 = nn.BatchNorm2d(c)
    self.conv2 = nn.Conv2d(c, c, 3, padding=1)
    self.bn2 = nn.BatchNorm2d(c)
    self.shortcut = (nn.Sequential(nn.Conv2d(cin, c, 1), nn.BatchNorm2d(c))
                     if cin != c else None)
    self.ca = ChannelAttention(c, reduction)
    self.sa = make_spatial_attention(spatial_attention)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    residual = x if self.shortcut is None else self.shortcut(x)
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    out = self.ca(out) * out
    out = self.sa(out) * out
    return F.relu(out + residual)


class MSHNet(nn.Module):
  """MSHNet; forward(x [B, C, H, W]) -> ([h0, h1, h2, h3], fused), all logits."""

  def __init__(self, input_channels: int = 1, widths: Sequence[int] = (16, 32, 64, 128, 256),
               blocks_per_stage: int = 2, spatial_attention: str = 'cbam',
               channel_reduction: int = 16):
    super().__init__()
    c0, c1, c2, c3, c4 = widths
    n = blocks_per_stage

    def layer(cin, c, num=1):
      return nn.Sequential(*[ResNet(cin if i == 0 else c, c, spatial_attention,
                                    channel_reduction) for i in range(num)])

    self.conv_init = nn.Conv2d(input_channels, c0, 1)
    self.encoder_0 = layer(c0, c0)
    self.encoder_1 = layer(c0, c1, n)
    self.encoder_2 = layer(c1, c2, n)
    self.encoder_3 = layer(c2, c3, n)
    self.middle_layer = layer(c3, c4, n)
    self.decoder_3 = layer(c3 + c4, c3, n)
    self.decoder_2 = layer(c2 + c3, c2, n)
    self.decoder_1 = layer(c1 + c2, c1, n)
    self.decoder_0 = layer(c0 + c1, c0)
    self.output_0 = nn.Conv2d(c0, 1, 1)
    self.output_1 = nn.Conv2d(c1, 1, 1)
    self.output_2 = nn.Conv2d(c2, 1, 1)
    self.output_3 = nn.Conv2d(c3, 1, 1)
    self.final = nn.Conv2d(4, 1, 3, padding=1)

  @staticmethod
  def up(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode='bilinear', align_corners=True)

  def forward(self, x: torch.Tensor):
    pool = lambda t: F.max_pool2d(t, 2, 2)
    e0 = self.encoder_0(self.conv_init(x))
    e1 = self.encoder_1(pool(e0))
    e2 = self.encoder_2(pool(e1))
    e3 = self.encoder_3(pool(e2))
    m = self.middle_layer(pool(e3))
    d3 = self.decoder_3(torch.cat([e3, self.up(m)], 1))
    d2 = self.decoder_2(torch.cat([e2, self.up(d3)], 1))
    d1 = self.decoder_1(torch.cat([e1, self.up(d2)], 1))
    d0 = self.decoder_0(torch.cat([e0, self.up(d1)], 1))
    h0, h1, h2, h3 = self.output_0(d0), self.output_1(d1), self.output_2(d2), self.output_3(d3)
    fused = self.final(torch.cat([h0, self.up(h1), self.up(h2, 4), self.up(h3, 8)], 1))
    return [h0, h1, h2, h3], fused


def soft_iou_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
  """1 - mean_b IoU_b of sigmoid(logits) ([B, 1, H, W]); the benchmark's stand-in loss."""
  p = torch.sigmoid(logits)
  inter = (p * labels).sum(dim=(1, 2, 3))
  union = p.sum(dim=(1, 2, 3)) + labels.sum(dim=(1, 2, 3)) - inter
  return 1 - (inter / union.clamp_min(1e-6)).mean()


def deep_supervision_loss(sides, fused, labels: torch.Tensor) -> torch.Tensor:
  """Soft IoU averaged over the fused map and the 4 heads, labels max-pooled to each scale.

  The JAX train step uses the paper's scale loss (per-image alpha, location term); that is
  a few elementwise ops on 1-channel maps, negligible next to the network, so the speed
  comparison is unaffected by the simpler loss here.
  """
  total = soft_iou_loss(fused, labels)
  for i, side in enumerate(sides):
    total = total + soft_iou_loss(side, F.max_pool2d(labels, 2**i) if i else labels)
  return total / (len(sides) + 1)
