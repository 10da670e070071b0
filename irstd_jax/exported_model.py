"""Runs a model written by `python -m irstd_jax.tools.export`, with only jax and numpy.

This module imports nothing else (no flax, optax, orbax, configs or the training code),
so it can be copied next to an exported file and used on its own:

    from irstd_jax.exported_model import ExportedModel
    model = ExportedModel('runs/synthetic/model.jaxexport')
    logits = model.logits(frames)   # uint8 [B, H, W, 1] (or [H, W]) -> float32, same layout
    masks = logits > 0              # the eval threshold (p > 0.5)

The file is a numpy .npz archive:
  exported      uint8: `jax.export.Exported.serialize()` of the inference function
                (weights, images) -> logits: StableHLO with symbolic batch, height and width
  weight_NNNNN  the trained parameters and BatchNorm statistics, in the function's order
  metadata      utf-8 JSON: the run, checkpoint step, model config, platforms, contract

The function takes uint8 images [B, H, W, 1] of any B, H, W, pads them with zeros at the
bottom/right to a multiple of 32 (as `--mode=eval` does), runs the network in inference
mode and returns the logits cropped back to [B, H, W, 1], so its masks are eval's.
"""
from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
from jax import export

FORMAT = 'irstd_jax exported model'


def weight_name(index: int) -> str:
  return f'weight_{index:05d}'


class ExportedModel:
  """An exported model, ready to call. Compiles once per input shape (jax.jit)."""

  def __init__(self, path: str):
    with np.load(path, allow_pickle=False) as archive:
      if 'metadata' not in archive or 'exported' not in archive:
        raise ValueError(f'{path}: not an irstd_jax exported model (no metadata/exported '
                         'entries); write one with python -m irstd_jax.tools.export')
      self.metadata: dict[str, Any] = json.loads(archive['metadata'].tobytes().decode())
      if self.metadata.get('format') != FORMAT:
        raise ValueError(f'{path}: format {self.metadata.get("format")!r}, expected {FORMAT!r}')
      self.exported = export.deserialize(bytearray(archive['exported'].tobytes()))
      self.weights = [jax.device_put(archive[weight_name(i)])
                      for i in range(self.metadata['num_weights'])]
    platform = jax.devices()[0].platform
    platform = 'cuda' if platform == 'gpu' else platform
    if platform not in self.exported.platforms:
      raise ValueError(f'{path} was exported for {list(self.exported.platforms)}, this '
                       f'machine runs {platform}; export again with --platforms')
    self._call = jax.jit(self.exported.call)

  def logits(self, images: np.ndarray) -> np.ndarray:
    """Logits (float32) of uint8 images [B, H, W, 1], [B, H, W] or [H, W], same layout."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
      raise ValueError(f'expected uint8 images (0-255, as the model was trained), got '
                       f'{images.dtype}')
    shape = images.shape
    if images.ndim == 2:
      images = images[None, :, :, None]
    elif images.ndim == 3:
      images = images[..., None]
    elif images.ndim != 4 or images.shape[-1] != 1:
      raise ValueError(f'expected [B, H, W, 1], [B, H, W] or [H, W], got {shape}')
    return np.asarray(self._call(self.weights, images)).reshape(shape)
