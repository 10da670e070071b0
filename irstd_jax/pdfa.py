"""Pd-Fa curves: the BasicIRSTD metrics swept over probability thresholds.

At probability threshold t an image's prediction is `p > t`, evaluated as
`logit > log(t / (1 - t))` so that t = 0.5 is `logit > 0`, bit for bit the plain
evaluation (`metrics.image_stats`). At every threshold the counts are exactly what
`metrics.image_stats` would give for that binary prediction (tests check it threshold by
threshold), so the curve's points are ordinary IoU / nIoU / Pd / Fa values.

One pass per image: the image is cropped to the pixels above the lowest threshold, the
thresholds are stacked into a [K, h, w] volume and labelled with one `ndimage.label` call
whose structuring element connects the 8 neighbours within a slice and nothing across
slices. Component sizes and centroids of every threshold then come from three bincounts,
and the Pd rule runs for all thresholds at once (metrics.match_targets_grouped, the
vectorised form of metrics.match_targets: one step per label component). Pixel counts come from two sorted arrays and `searchsorted`.

Curve summaries (docs/metrics.md):
  * pd_at_fa(f): the highest Pd over thresholds whose Fa <= f (the detector's best operating
    point within a false-alarm budget; Fa is not monotone in the threshold, since a false
    alarm merging with a hit stops being one).
  * auc: the area under that envelope over Fa in [0, fa_max], divided by fa_max: the mean
    best Pd over false-alarm budgets up to fa_max (default 1e-4), in [0, 1].
  * tpr / fpr: pixel-level true / false positive rates at each threshold (a pixel ROC).

Figures of curves: pdfa_plots.py. The command that draws evaluated runs' curves:
irstd_jax/tools/pdfa_curves.py.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import ndimage

from irstd_jax import metrics

FA_TARGETS = (1e-6, 1e-5)
AUC_FA_MAX = 1e-4
_EPS = np.spacing(1)  # as metrics.ImageStats.iou
# Components connect within a threshold slice only (8-connected), never across slices.
_SLICE_STRUCTURE = np.zeros((3, 3, 3), bool)
_SLICE_STRUCTURE[1] = metrics.EIGHT_CONNECTED
_VOLUME_BUDGET = 1 << 24  # elements of one labelled [k, h, w] chunk (64 MiB of labels)
_CHUNK = 8  # thresholds per chunk at most (each chunk has its own crop)


def logit_grid(num: int, logit_range: float) -> np.ndarray:
  """`num` (odd) thresholds uniform in logit over [-range, range], exactly 0 in the middle."""
  if num < 3 or num % 2 == 0:
    raise ValueError(f'the number of thresholds must be odd and >= 3 (to contain p = 0.5), '
                     f'got {num}')
  thresholds = np.linspace(-logit_range, logit_range, num)
  thresholds[num // 2] = 0.0  # exactly, whatever linspace's rounding
  return thresholds


def default_logit_thresholds() -> np.ndarray:
  """305 thresholds: logit step 0.1 on [-10, 10], 0.5 on to +-36; 0 (p = 0.5) included.

  p = sigmoid(logit) runs from 2.3e-16 to 1 - 2.3e-16 (+-36 is the last logit whose p is
  distinct from 1 in float64); step 0.1 is at most 0.025 in p. Trained detectors are
  confident (logits of +-30 and beyond), and their low-Fa operating points lie at
  p = 1 - 1e-9 and above, which a grid uniform in p cannot reach.
  """
  fine = np.arange(-100, 101) * 0.1  # integer multiples: 0 is exactly 0
  coarse = np.arange(21, 73) * 0.5
  return np.concatenate([-coarse[::-1], fine, coarse])


def probability_to_logit(p) -> np.ndarray:
  """log(p / (1 - p)) in float64; 0.5 maps to exactly 0."""
  p = np.asarray(p, np.float64)
  if np.any((p <= 0) | (p >= 1)):
    raise ValueError('probability thresholds must lie strictly between 0 and 1')
  return np.log(p) - np.log1p(-p)


@dataclasses.dataclass(frozen=True)
class ImageSweep:
  """Per-image counts at every threshold (arrays [K]); see metrics.ImageStats."""
  intersection: np.ndarray
  union: np.ndarray
  num_detected: np.ndarray
  false_alarm_pixels: np.ndarray
  predicted_pixels: np.ndarray
  num_targets: int
  label_pixels: int
  num_pixels: int

  @property
  def iou(self) -> np.ndarray:
    return self.intersection / (self.union + _EPS)


def _count_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
  """#{v > t} for each t; `values` sorted ascending."""
  return values.size - np.searchsorted(values, thresholds, side='right')


def sweep_image(logits: np.ndarray, label: np.ndarray,
                logit_thresholds: np.ndarray) -> ImageSweep:
  """Counts of `metrics.image_stats(logits > t, label)` for every t, in one pass.

  Args:
    logits: [H, W] float logits (finite).
    label: [H, W] binary label.
    logit_thresholds: [K] thresholds on the logit, any order.

  Returns:
    The ImageSweep (arrays indexed like `logit_thresholds`).
  """
  logits = np.asarray(logits)
  label = np.asarray(label).astype(bool)
  th = np.asarray(logit_thresholds, np.float64)
  if logits.shape != label.shape or logits.ndim != 2:
    raise ValueError(f'expected [H, W] logits and label of one shape, got {logits.shape} '
                     f'and {label.shape}')
  if not np.all(np.isfinite(logits)):
    raise ValueError('logits contain NaN or inf')
  num_k = th.size
  label_pixels = int(np.count_nonzero(label))
  _, num_targets, label_centroids = metrics._components(label)  # pylint: disable=protected-access
  zeros = np.zeros(num_k, np.int64)
  detected, fa_pixels = zeros.copy(), zeros.copy()

  if not np.any(logits > th.min()):
    return ImageSweep(zeros, zeros + label_pixels, detected, fa_pixels, zeros.copy(),
                      num_targets, label_pixels, int(logits.size))
  predicted = _count_above(np.sort(logits, axis=None), th)
  intersection = _count_above(np.sort(logits[label], axis=None), th)

  # Components of every threshold, threshold-major: component ids grow with the threshold
  # rank and, within one threshold, follow ndimage.label's raster order. Each chunk of
  # thresholds is cropped to the bounding box of its lowest threshold's prediction
  # (cropping keeps the raster order the greedy matching relies on), so the many high
  # thresholds of a confident detector cost a few pixels each.
  order = np.argsort(th, kind='stable')
  sizes, sum_y, sum_x, comp_k = [], [], [], []
  start = 0
  while start < num_k:
    above = logits > th[order[start]]
    rows = np.flatnonzero(above.any(1))
    if rows.size == 0:
      break  # nothing above this threshold, nor above any higher one
    cols = np.flatnonzero(above.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    sub = logits[y0:y1, x0:x1]
    h, w = sub.shape
    ks = order[start:start + max(1, min(_CHUNK, _VOLUME_BUDGET // sub.size))]
    start += ks.size
    labels, n = ndimage.label(sub[None] > th[ks, None, None], structure=_SLICE_STRUCTURE)
    if n == 0:
      continue
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    ids = flat[where]
    slice_index, offset = np.divmod(where, h * w)
    yy, xx = np.divmod(offset, w)
    sizes.append(np.bincount(ids, minlength=n + 1)[1:])
    # Sums of full-image coordinates (integers, exact in float64), divided as
    # ndimage.center_of_mass does, so centroids match metrics.image_stats bit for bit.
    sum_y.append(np.bincount(ids, weights=yy + y0, minlength=n + 1)[1:])
    sum_x.append(np.bincount(ids, weights=xx + x0, minlength=n + 1)[1:])
    k_of = np.empty(n, np.int64)
    k_of[ids - 1] = ks[slice_index]
    comp_k.append(k_of)
  if sizes:
    sizes = np.concatenate(sizes)
    centroids = np.stack([np.concatenate(sum_y) / sizes, np.concatenate(sum_x) / sizes], 1)
    comp_k = np.concatenate(comp_k)
    # Rank of each component's threshold in processing order: non-decreasing along ids.
    rank = np.empty(num_k, np.int64)
    rank[order] = np.arange(num_k)
    comp_rank = rank[comp_k]
    # The Pd rule for every threshold at once (one group per threshold).
    used = metrics.match_targets_grouped(label_centroids, centroids, comp_rank)
    detected = np.bincount(comp_k[used], minlength=num_k).astype(np.int64)
    matched_pixels = np.bincount(comp_k[used], weights=sizes[used], minlength=num_k)
    fa_pixels = predicted - matched_pixels.astype(np.int64)
  union = predicted + label_pixels - intersection
  return ImageSweep(intersection, union, detected, fa_pixels, predicted, num_targets,
                    label_pixels, int(logits.size))


class SweepAccumulator:
  """Streams ImageSweeps into dataset-level IoU, nIoU, Pd and Fa at every threshold.

  The arithmetic is metrics.MetricAccumulator's, element-wise, in the same order, so the
  point at threshold 0 (p = 0.5) equals MetricAccumulator's result exactly.
  """

  def __init__(self, logit_thresholds: np.ndarray | None = None):
    self.logit_thresholds = (default_logit_thresholds() if logit_thresholds is None
                             else np.asarray(logit_thresholds, np.float64))
    k = self.logit_thresholds.size
    self.intersection = np.zeros(k, np.int64)
    self.union = np.zeros(k, np.int64)
    self.iou_sum = np.zeros(k, np.float64)
    self.num_detected = np.zeros(k, np.int64)
    self.false_alarm_pixels = np.zeros(k, np.int64)
    self.predicted_pixels = np.zeros(k, np.int64)
    self.num_images = 0
    self.num_targets = 0
    self.label_pixels = 0
    self.num_pixels = 0

  def add(self, s: ImageSweep) -> None:
    self.intersection += s.intersection
    self.union += s.union
    self.iou_sum += s.iou
    self.num_detected += s.num_detected
    self.false_alarm_pixels += s.false_alarm_pixels
    self.predicted_pixels += s.predicted_pixels
    self.num_images += 1
    self.num_targets += s.num_targets
    self.label_pixels += s.label_pixels
    self.num_pixels += s.num_pixels

  def update(self, logits: np.ndarray, label: np.ndarray) -> ImageSweep:
    s = sweep_image(logits, label, self.logit_thresholds)
    self.add(s)
    return s

  def result(self) -> dict:
    """Curves (lists, one entry per threshold), their summaries and the counts."""
    iou = self.intersection / np.maximum(self.union, 1)
    niou = self.iou_sum / max(self.num_images, 1)
    pd = self.num_detected / max(self.num_targets, 1)
    fa = self.false_alarm_pixels / max(self.num_pixels, 1)
    tp = self.intersection
    fp = self.predicted_pixels - self.intersection
    tpr = tp / max(self.label_pixels, 1)
    fpr = fp / max(self.num_pixels - self.label_pixels, 1)
    out = {
        'thresholds': metrics.sigmoid(self.logit_thresholds).tolist(),
        'logit_thresholds': self.logit_thresholds.tolist(),
        'iou': iou.tolist(), 'niou': niou.tolist(), 'pd': pd.tolist(), 'fa': fa.tolist(),
        'tpr': tpr.tolist(), 'fpr': fpr.tolist(),
        'num_detected': self.num_detected.tolist(),
        'false_alarm_pixels': self.false_alarm_pixels.tolist(),
        'num_images': self.num_images, 'num_targets': self.num_targets,
        'num_pixels': self.num_pixels,
    }
    out.update(summarize(fa, pd, self.logit_thresholds))
    return out


def pd_at_fa(fa: Sequence[float], pd: Sequence[float], fa_target: float,
             thresholds: Sequence[float] | None = None) -> dict:
  """The best Pd among operating points with Fa <= fa_target (0 when there is none)."""
  fa, pd = np.asarray(fa, np.float64), np.asarray(pd, np.float64)
  ok = np.flatnonzero(fa <= fa_target)
  if ok.size == 0:
    return {'pd': 0.0, 'fa': None, 'threshold': None}
  best = ok[np.argmax(pd[ok])]
  return {'pd': float(pd[best]), 'fa': float(fa[best]),
          'threshold': None if thresholds is None else float(thresholds[best])}


def envelope(fa: Sequence[float], pd: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  """Steps of f -> max{Pd_i : Fa_i <= f}: (Fa at each step, Pd from that Fa on)."""
  fa, pd = np.asarray(fa, np.float64), np.asarray(pd, np.float64)
  order = np.lexsort((pd, fa))
  fa_sorted, best = fa[order], np.maximum.accumulate(pd[order])
  last = np.r_[fa_sorted[1:] != fa_sorted[:-1], True]  # one step per distinct Fa
  return fa_sorted[last], best[last]


def envelope_auc(fa: Sequence[float], pd: Sequence[float],
                 fa_max: float = AUC_FA_MAX) -> float:
  """Area under the Pd(Fa) envelope over [0, fa_max], divided by fa_max (in [0, 1])."""
  steps_fa, steps_pd = envelope(fa, pd)
  keep = steps_fa <= fa_max
  steps_fa, steps_pd = steps_fa[keep], steps_pd[keep]
  if steps_fa.size == 0:
    return 0.0
  widths = np.diff(np.r_[steps_fa, fa_max])
  return float(np.sum(widths * steps_pd) / fa_max)


def summarize(fa, pd, logit_thresholds, *,
              fa_targets: Sequence[float] = FA_TARGETS, fa_max: float = AUC_FA_MAX) -> dict:
  probabilities = metrics.sigmoid(logit_thresholds)
  out = {
      'auc': envelope_auc(fa, pd, fa_max),
      'auc_fa_max': fa_max,
      'pd_at_fa': {f'{f:.0e}': pd_at_fa(fa, pd, f, probabilities) for f in fa_targets},
  }
  return out
