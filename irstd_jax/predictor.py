"""Logit maps for images of any size: tiling, size buckets, batching across images, TTA.

How an image is run (`Predictor`):
  * Images whose sides are at most `max_side` (1024) go through the network whole. Larger
    frames are cut into `tile_size` tiles overlapping by at least `overlap` pixels; the
    tiles' probabilities are blended with weights that ramp down linearly across the
    overlaps (and not at the frame's border), so there are no seams.
  * Each image or tile is zero-padded at the bottom/right to a bucket size per side
    (BUCKETS: multiples of 32, about 1.25x apart), and batched with other inputs of the
    same bucket shape, so a folder of many sizes compiles a handful of shapes, not one per
    size (a stream's sizes are not known in advance, so unlike `--mode=eval`'s per-split
    buckets, eval_batching.size_buckets, the ladder is fixed).
  * `tta`: the 8 flips/transposes of each input, each undone on its output, averaged in
    probability space.
  * The output is a logit map: the network's own logits when one view covers a pixel,
    else the logit of the averaged probability (float64, capped at +-37 where that
    probability rounds to 0 or 1). Mask = logit > 0, i.e. p > 0.5; without TTA or tiling
    exactly eval's prediction.

predict.py runs it over image files (`--mode=predict`).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from irstd_jax import eval_batching
from irstd_jax import metrics as metrics_lib

BUCKETS = (32, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024)
_LOGIT_CAP = 37.0  # |logit| beyond which a float64 probability is exactly 0 or 1


# ------------------------------------------------------------------------ geometry


def bucket(n: int, buckets: Sequence[int] = BUCKETS, multiple: int = 32) -> int:
  """The smallest bucket >= n (beyond the last one: n rounded up to `multiple`)."""
  for b in buckets:
    if b >= n:
      return b
  return eval_batching.round_up(n, multiple)


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
  """Starts of tiles of length `tile` covering [0, n), neighbours overlapping >= overlap."""
  if n <= tile:
    return [0]
  if overlap >= tile:
    raise ValueError(f'overlap {overlap} must be smaller than the tile size {tile}')
  count = -(-(n - overlap) // (tile - overlap))
  return [round(i * (n - tile) / (count - 1)) for i in range(count)]


def _ramp(length: int, start: int, total: int, overlap: int) -> np.ndarray:
  """Blend weights along one axis: rising over `overlap` px unless at the frame border."""
  i = np.arange(length, dtype=np.float64)
  w = np.ones(length)
  ramp = max(overlap, 1)
  if start > 0:
    w = np.minimum(w, (i + 1) / (ramp + 1))
  if start + length < total:
    w = np.minimum(w, (length - i) / (ramp + 1))
  return w


def transform(x: np.ndarray, k: int) -> np.ndarray:
  """The k-th (0..7) element of the flips/transposes group on [H, W] arrays."""
  if k & 4:
    x = x.T
  if k & 1:
    x = x[::-1]
  if k & 2:
    x = x[:, ::-1]
  return x


def inverse_transform(x: np.ndarray, k: int) -> np.ndarray:
  if k & 2:
    x = x[:, ::-1]
  if k & 1:
    x = x[::-1]
  if k & 4:
    x = x.T
  return x


# ---------------------------------------------------------------------- the predictor


@dataclasses.dataclass
class _Pending:
  """One image being assembled from its tiles / TTA views."""
  key: object
  shape: tuple[int, int]
  prob_sum: np.ndarray
  weight_sum: np.ndarray
  logit: np.ndarray  # the one logit of each pixel, when a single view covers it
  views: int = 0
  remaining: int = 0


class Predictor:
  """Logit maps for images of any size (see the module docstring).

  Args:
    logits_fn: uint8 images [B, Hb, Wb, 1] -> logits [B, Hb, Wb, 1] (numpy); B is always
      `batch_size` (unused rows are zeros). Evaluator.logits bound to a state is one.
    batch_size: rows per call.
    tile_size, overlap, max_side: tiling of frames with a side above max_side.
    tta: average the 8 flips/transposes in probability space.
  """

  def __init__(self, logits_fn: Callable[[np.ndarray], np.ndarray], *, batch_size: int = 4,
               tile_size: int = 512, overlap: int = 64, max_side: int = 1024,
               tta: bool = False, buckets: Sequence[int] = BUCKETS):
    if tile_size % 32 or tile_size > max_side:
      raise ValueError(f'tile_size {tile_size} must be a multiple of 32 and <= max_side')
    self.logits_fn = logits_fn
    self.batch_size = batch_size
    self.tile_size, self.overlap, self.max_side = tile_size, overlap, max_side
    self.tta = tta
    self.buckets = tuple(buckets)
    self.shapes_run: collections.Counter = collections.Counter()  # bucket shape -> calls

  def _views(self, image: np.ndarray):
    """(y0, x0, tile [h, w], blend weight [h, w] or None, k) for every network input."""
    h, w = image.shape
    if max(h, w) <= self.max_side:
      boxes = [(0, 0, h, w)]
    else:
      boxes = [(y, x, min(self.tile_size, h), min(self.tile_size, w))
               for y in tile_starts(h, self.tile_size, self.overlap)
               for x in tile_starts(w, self.tile_size, self.overlap)]
    for y, x, th, tw in boxes:
      weight = None
      if len(boxes) > 1:
        weight = np.outer(_ramp(th, y, h, self.overlap), _ramp(tw, x, w, self.overlap))
      for k in (range(8) if self.tta else (0,)):
        yield y, x, transform(image[y:y + th, x:x + tw], k), weight, k

  def predict(self, images: Iterable[tuple[object, np.ndarray]]
              ) -> Iterator[tuple[object, np.ndarray]]:
    """Yields (key, logits [H, W] float32) for each (key, uint8 image [H, W]).

    Probability = sigmoid(logits), mask = logits > 0 (see the module docstring).

    Images are yielded as soon as all their views are done (not necessarily in input
    order): inputs of one bucket shape are batched across images.
    """
    queues: dict[tuple[int, int], list] = collections.defaultdict(list)
    open_images: dict[int, _Pending] = {}

    def run(shape):
      items = queues.pop(shape)
      batch = np.zeros((self.batch_size, *shape, 1), np.uint8)
      for row, (_, _, _, view, _, _) in enumerate(items):
        batch[row, :view.shape[0], :view.shape[1], 0] = view
      logits = np.asarray(self.logits_fn(batch))
      self.shapes_run[shape] += 1
      finished = []
      for row, (index, y, x, view, weight, k) in enumerate(items):
        logit = inverse_transform(logits[row, :view.shape[0], :view.shape[1], 0], k)
        p = open_images[index]
        th, tw = logit.shape
        region = (slice(y, y + th), slice(x, x + tw))
        wgt = 1.0 if weight is None else weight
        p.prob_sum[region] += wgt * metrics_lib.sigmoid(logit)
        p.weight_sum[region] += wgt
        p.logit[region] = logit
        p.remaining -= 1
        if p.remaining == 0:
          finished.append(index)
      for index in finished:
        p = open_images.pop(index)
        if p.views == 1:  # the network's own logits: the mask is exactly eval's
          yield p.key, p.logit
          continue
        prob = p.prob_sum / p.weight_sum
        with np.errstate(divide='ignore'):
          logit = np.log(prob) - np.log1p(-prob)
        yield p.key, np.clip(logit, -_LOGIT_CAP, _LOGIT_CAP).astype(np.float32)

    for index, (key, image) in enumerate(images):
      image = np.asarray(image)
      image = image[..., 0] if image.ndim == 3 else image
      views = list(self._views(image))
      open_images[index] = _Pending(
          key, image.shape, np.zeros(image.shape), np.zeros(image.shape),
          np.zeros(image.shape, np.float32), views=len(views), remaining=len(views))
      for y, x, view, weight, k in views:
        shape = (bucket(view.shape[0], self.buckets), bucket(view.shape[1], self.buckets))
        queues[shape].append((index, y, x, view, weight, k))
        if len(queues[shape]) == self.batch_size:
          yield from run(shape)
    for shape in sorted(queues):
      yield from run(shape)
