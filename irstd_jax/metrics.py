"""IRSTD metrics exactly as the field (BasicIRSTD) defines them.

All four are accumulated over a test set, one image at a time, on the host (connected
components are not an accelerator job). For one image with binary prediction `pred`
(logit > 0, at the image's native resolution) and binary label `label`:

* IoU ("mIoU" in papers): sum over images of |pred & label| / sum over images of
  |pred | label|. A dataset-level ratio, not a mean of ratios.
* nIoU: mean over images of |pred & label| / (|pred | label| + eps), eps = np.spacing(1)
  as in DNANet's SamplewiseSigmoidMetric. An image with an empty label and an empty
  prediction therefore scores 0, as in the peers, so nIoU is comparable with theirs.
* Pd: label and prediction are split into 8-connected components. Label components are
  visited in raster order of their first pixel; each is matched to the first
  not-yet-used predicted component whose centroid lies strictly closer than 3 px.
  Pd = matched label components / all label components. The rule is `match_targets`,
  its one home (the sweep and predict's TP/FP/FN use it too).
* Fa: pixels of predicted components that were not matched, summed over images, divided
  by the total number of pixels of all images. Matching is by component identity; some
  peers match by comparing AREA values, which silently drops every false alarm that
  happens to be as large as a hit.

Pd-Fa curves reuse the same per-image routine at each threshold.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy import spatial

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
CENTROID_DISTANCE_PX = 3.0
_EPS = np.spacing(1)


@dataclasses.dataclass(frozen=True)
class ImageStats:
  """Per-image counts from which every dataset metric is an aggregate."""
  intersection: int
  union: int
  num_targets: int  # label components
  num_detected: int  # label components matched by a predicted component
  false_alarm_pixels: int  # pixels of unmatched predicted components
  num_pixels: int
  predicted_pixels: int = 0  # every predicted pixel, matched or not

  @property
  def iou(self) -> float:
    return self.intersection / (self.union + _EPS)


def sigmoid(logits) -> np.ndarray:
  """float64 probabilities of logits, overflow-free; a logit of 0 gives exactly 0.5.

  The one host-side sigmoid: probability maps (predict) and threshold grids (pdfa) use it,
  so `p > 0.5` and `logit > 0` always agree.
  """
  x = np.asarray(logits, np.float64)
  e = np.exp(-np.abs(x))
  return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _components(mask: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
  """Labels 8-connected components; returns (labels, count, centroids [count, 2])."""
  labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
  if count == 0:
    return labels, 0, np.zeros((0, 2))
  centroids = np.asarray(
      ndimage.center_of_mass(np.ones_like(mask, dtype=np.float64), labels,
                             np.arange(1, count + 1)), dtype=np.float64)
  return labels, count, centroids.reshape(count, 2)


def match_targets(target_centroids: np.ndarray, predicted_centroids: np.ndarray
                  ) -> np.ndarray:
  """The Pd matching rule, its one definition.

  Targets (label components) are visited in the order given (raster order of their first
  pixel); each takes the first not-yet-used predicted component (in the order given:
  raster order) whose centroid lies strictly closer than CENTROID_DISTANCE_PX.

  Args:
    target_centroids: [T, 2] (row, col) of the label components.
    predicted_centroids: [N, 2] (row, col) of the predicted components.

  Returns:
    int64 [T]: the index of the predicted component each target takes, or -1 (missed).
  """
  target_centroids = np.asarray(target_centroids, np.float64).reshape(-1, 2)
  predicted_centroids = np.asarray(predicted_centroids, np.float64).reshape(-1, 2)
  matched = np.full(len(target_centroids), -1, np.int64)
  used = np.zeros(len(predicted_centroids), dtype=bool)
  if not len(predicted_centroids):
    return matched
  for t, centroid in enumerate(target_centroids):
    distances = np.linalg.norm(predicted_centroids - centroid, axis=1)
    candidates = np.flatnonzero((distances < CENTROID_DISTANCE_PX) & ~used)
    if candidates.size:
      used[candidates[0]] = True  # greedy: the first unused component in raster order
      matched[t] = candidates[0]
  return matched


def match_targets_grouped(target_centroids: np.ndarray, predicted_centroids: np.ndarray,
                          group: np.ndarray) -> np.ndarray:
  """`match_targets` run independently in every group of predicted components, at once.

  The Pd-Fa sweep's form (pdfa.sweep_image): one group per threshold. Equal to calling
  `match_targets(target_centroids, predicted_centroids[group == g])` for each g
  (tests/test_metrics.py checks it on random crowded cases). A k-d tree finds the few
  components near each target (a margin over 3 px, then match_targets' exact test), so
  crowded maps with hundreds of thresholds stay linear-time.

  Args:
    target_centroids: [T, 2], in the order match_targets visits them.
    predicted_centroids: [N, 2]; within one group, components in raster order.
    group: [N] int, the group of each component.

  Returns:
    bool [N]: whether each predicted component was taken by a target of its group.
  """
  target_centroids = np.asarray(target_centroids, np.float64).reshape(-1, 2)
  predicted_centroids = np.asarray(predicted_centroids, np.float64).reshape(-1, 2)
  group = np.asarray(group)
  used = np.zeros(len(predicted_centroids), bool)
  if not len(target_centroids) or not len(predicted_centroids):
    return used
  near = spatial.cKDTree(predicted_centroids).query_ball_point(
      target_centroids, r=CENTROID_DISTANCE_PX * (1 + 1e-9) + 1e-9, return_sorted=True)
  for centroid, nearby in zip(target_centroids, near):
    nearby = np.asarray(nearby, np.int64)
    distances = np.linalg.norm(predicted_centroids[nearby] - centroid, axis=1)
    candidates = nearby[(distances < CENTROID_DISTANCE_PX) & ~used[nearby]]
    if candidates.size:
      # The first unused candidate of each group (indices are raster-ordered in it).
      _, first = np.unique(group[candidates], return_index=True)
      used[candidates[first]] = True
  return used


def image_stats(pred: np.ndarray, label: np.ndarray) -> ImageStats:
  """Computes the per-image counts.

  Args:
    pred: binary prediction [H, W] (bool or {0, 1}).
    label: binary label [H, W].

  Returns:
    The image's ImageStats.
  """
  pred = np.asarray(pred).astype(bool)
  label = np.asarray(label).astype(bool)
  if pred.shape != label.shape:
    raise ValueError(f'prediction {pred.shape} and label {label.shape} differ in shape')
  if pred.ndim != 2:
    raise ValueError(f'expected [H, W] masks, got shape {pred.shape}')
  intersection = int(np.count_nonzero(pred & label))
  union = int(np.count_nonzero(pred | label))

  pred_labels, num_pred, pred_centroids = _components(pred)
  _, num_label, label_centroids = _components(label)
  matched = match_targets(label_centroids, pred_centroids)
  used = np.zeros(num_pred, dtype=bool)
  used[matched[matched >= 0]] = True
  detected = int(np.count_nonzero(matched >= 0))
  pred_sizes = np.bincount(pred_labels.ravel(), minlength=num_pred + 1)[1:]
  false_alarm_pixels = int(pred_sizes[~used].sum())
  return ImageStats(intersection, union, num_label, detected, false_alarm_pixels,
                    int(pred.size), int(pred_sizes.sum()))


@dataclasses.dataclass
class MetricAccumulator:
  """Streams ImageStats into the dataset-level IoU, nIoU, Pd and Fa."""
  intersection: int = 0
  union: int = 0
  iou_sum: float = 0.0
  num_images: int = 0
  num_targets: int = 0
  num_detected: int = 0
  false_alarm_pixels: int = 0
  num_pixels: int = 0
  predicted_pixels: int = 0

  def add(self, stats: ImageStats) -> None:
    self.intersection += stats.intersection
    self.union += stats.union
    self.iou_sum += stats.iou
    self.num_images += 1
    self.num_targets += stats.num_targets
    self.num_detected += stats.num_detected
    self.false_alarm_pixels += stats.false_alarm_pixels
    self.num_pixels += stats.num_pixels
    self.predicted_pixels += stats.predicted_pixels

  def update(self, pred: np.ndarray, label: np.ndarray) -> ImageStats:
    stats = image_stats(pred, label)
    self.add(stats)
    return stats

  def result(self) -> dict:
    """Returns iou, niou, pd, fa (a plain fraction) and the counts behind them."""
    return {
        'iou': self.intersection / max(self.union, 1),
        'niou': self.iou_sum / max(self.num_images, 1),
        'pd': self.num_detected / max(self.num_targets, 1),
        'fa': self.false_alarm_pixels / max(self.num_pixels, 1),
        'num_images': self.num_images,
        'num_targets': self.num_targets,
        'num_detected': self.num_detected,
        'false_alarm_pixels': self.false_alarm_pixels,
        'num_pixels': self.num_pixels,
        # What a collapsed model shows first: most pixels predicted as target.
        'positive_fraction': self.predicted_pixels / max(self.num_pixels, 1),
    }


def format_results(results: dict) -> str:
  """One line: IoU and nIoU in %, Pd in %, Fa x 1e-6."""
  return (f"IoU {100 * results['iou']:.2f}  nIoU {100 * results['niou']:.2f}  "
          f"Pd {100 * results['pd']:.2f}  Fa {1e6 * results['fa']:.2f}e-6")
