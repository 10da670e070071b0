"""The targets of one prediction: its components with a TP / FP / FN status, and drawn.

With a label, the status comes from the Pd rule (metrics.match_targets: label components
in raster order, each taking the first unused predicted component with centroid < 3 px),
so the TP / FP / FN counts agree with Pd and Fa: predicted components matched to a target
are TP, unmatched ones FP (their pixels are Fa's), missed targets FN. Without a label every
predicted component is a 'detection'. `overlay` tints each on the grey image (TP green,
FP red, FN yellow, detection magenta) and boxes it, so tiny ones can be found; predict.py
writes these overlays and tools/panels.py draws its cells in the same colours.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import ndimage

from irstd_jax import metrics as metrics_lib

COLOURS = {'TP': (0, 255, 0), 'FP': (255, 0, 0), 'FN': (255, 255, 0),
           'detection': (255, 0, 255)}


@dataclasses.dataclass(frozen=True)
class Target:
  status: str  # TP | FP | FN | detection
  centroid: tuple[float, float]  # (row, col)
  area: int
  peak_score: float  # highest probability in the component
  mean_score: float
  peak_logit: float
  bbox: tuple[int, int, int, int]  # y0, x0, y1, x1 (exclusive)
  pixels: tuple[np.ndarray, np.ndarray]


def _component_list(mask, logits, status):
  labels, count = ndimage.label(mask, structure=metrics_lib.EIGHT_CONNECTED)
  out = []
  for i, sl in enumerate(ndimage.find_objects(labels), start=1):
    local = labels[sl] == i
    ys, xs = np.nonzero(local)
    ys, xs = ys + sl[0].start, xs + sl[1].start
    scores = metrics_lib.sigmoid(logits[ys, xs])
    out.append(Target(status, (float(ys.mean()), float(xs.mean())), int(ys.size),
                      float(scores.max()), float(scores.mean()), float(logits[ys, xs].max()),
                      (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop), (ys, xs)))
  assert len(out) == count
  return out


def find_targets(mask: np.ndarray, logits: np.ndarray,
                 label: np.ndarray | None = None) -> list[Target]:
  """Predicted components (and missed label components) with their status.

  With a label, the matching is metrics.match_targets, the Pd rule (label components in
  raster order, each taking the first unused predicted component with centroid < 3 px),
  so the TP / FP / FN counts agree with Pd and Fa.
  """
  predicted = _component_list(mask, logits, 'detection' if label is None else 'FP')
  if label is None:
    return predicted
  targets = _component_list(label.astype(bool), logits, 'FN')
  matched = metrics_lib.match_targets([t.centroid for t in targets],
                                      [t.centroid for t in predicted])
  used = np.zeros(len(predicted), bool)
  used[matched[matched >= 0]] = True
  missed = [t for t, m in zip(targets, matched) if m < 0]
  return [dataclasses.replace(t, status='TP') if u else t
          for t, u in zip(predicted, used)] + missed


def overlay(image: np.ndarray, targets: Sequence[Target]) -> np.ndarray:
  """RGB uint8 [H, W, 3]: the grey image, target pixels tinted, a box around each."""
  grey = image.astype(np.float32)
  rgb = np.repeat(grey[..., None], 3, axis=2)
  h, w = image.shape
  thick = max(1, round(max(h, w) / 512))
  margin = 3 * thick
  for t in targets:
    colour = np.asarray(COLOURS[t.status], np.float32)
    ys, xs = t.pixels
    rgb[ys, xs] = 0.35 * rgb[ys, xs] + 0.65 * colour
    y0, x0 = max(t.bbox[0] - margin, 0), max(t.bbox[1] - margin, 0)
    y1, x1 = min(t.bbox[2] + margin, h), min(t.bbox[3] + margin, w)
    for sl in ((slice(y0, y0 + thick), slice(x0, x1)), (slice(y1 - thick, y1), slice(x0, x1)),
               (slice(y0, y1), slice(x0, x0 + thick)), (slice(y0, y1), slice(x1 - thick, x1))):
      rgb[sl] = colour
  return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
