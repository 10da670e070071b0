"""Evaluation batches at native resolution: each image padded into a size bucket, never scored
beyond its own extent.

`eval_batches(source, batch_size=...)` groups a split into padded batches of at most
`eval.max_shapes` distinct shapes (`size_buckets`: one compilation of the network per shape);
`round_up` is the one ceil-to-multiple rule (padded sides, device-divisible batch sizes,
prediction tiles). The training stream is irstd_jax.input_pipeline's.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


def as_2d(array: np.ndarray) -> np.ndarray:
  """[H, W, 1] or [H, W] -> [H, W]."""
  array = np.asarray(array)
  return array[..., 0] if array.ndim == 3 else array


def round_up(n: int, multiple: int) -> int:
  """The smallest multiple of `multiple` that is >= n (padded image sides, device-divisible
  batch sizes, prediction buckets: the one ceil-to-multiple rule)."""
  return -(-n // multiple) * multiple


@dataclasses.dataclass
class EvalBatch:
  """One padded eval batch; every row with valid=False is filler."""
  image: np.ndarray  # uint8 [B, Hp, Wp, 1]; zero beyond each image's own extent
  mask: np.ndarray  # uint8 [B, Hp, Wp, 1]
  valid: np.ndarray  # bool [B]
  heights: np.ndarray  # int [B], native heights
  widths: np.ndarray  # int [B]
  ids: list[str]


def record_id(record: dict, index: int) -> str:
  """A record's id as text (TFDS stores bytes); its index when it has none."""
  rid = record.get('id', index)
  return rid.decode() if isinstance(rid, bytes) else str(rid)


def size_buckets(shapes: Sequence[tuple[int, int]], *, pad_multiple: int = 32,
                 max_shapes: int | None = None) -> list[tuple[int, int]]:
  """The padded shape each image is evaluated at: at most `max_shapes` distinct ones.

  Every (h, w) is first rounded up to a multiple of `pad_multiple`. While there are more
  distinct shapes than `max_shapes`, the two whose merge (the elementwise maximum) adds the
  fewest padded pixels over the split are merged; each image then goes to the smallest-area
  shape that holds it. On a CPU a new shape costs a compilation of the whole network (several
  seconds) while padding costs pixels, so a split of many sizes compiles a few programs
  instead of one per size. Depends only on the multiset of sizes: not on order, batch size
  or the other images' content.

  Args:
    shapes: (h, w) of each image.
    pad_multiple: every side is padded to a multiple of this (the network's stride).
    max_shapes: bound on the distinct shapes (None: no bound, one per padded size).

  Returns:
    The padded (H, W) of each image, in input order; H >= h and W >= w.
  """
  padded = [(round_up(h, pad_multiple), round_up(w, pad_multiple)) for h, w in shapes]
  counts: dict[tuple[int, int], int] = {}
  for shape in padded:
    counts[shape] = counts.get(shape, 0) + 1
  buckets = dict(counts)  # bucket shape -> number of images in it
  while max_shapes is not None and len(buckets) > max(max_shapes, 1):
    keys = sorted(buckets)
    best = None
    for i, a in enumerate(keys):
      for b in keys[i + 1:]:
        merged = (max(a[0], b[0]), max(a[1], b[1]))
        added = ((buckets[a] + buckets[b]) * merged[0] * merged[1]
                 - buckets[a] * a[0] * a[1] - buckets[b] * b[0] * b[1])
        if best is None or added < best[0]:
          best = (added, a, b, merged)
    _, a, b, merged = best
    n = buckets.pop(a) + buckets.pop(b)
    buckets[merged] = buckets.get(merged, 0) + n
  by_area = sorted(buckets, key=lambda s: (s[0] * s[1], s))
  return [next(b for b in by_area if b[0] >= h and b[1] >= w) for h, w in padded]


def eval_batches(source: Sequence[dict], *, batch_size: int, pad_multiple: int = 32,
                 max_shapes: int | None = None) -> list[EvalBatch]:
  """Groups a split into padded batches at native resolution.

  Images are zero-padded at the bottom/right to a shape from `size_buckets` (a multiple of
  `pad_multiple`, at most `max_shapes` distinct shapes per split) and batched only with
  images of the same padded shape, so a prediction never depends on the batch size or on
  which other images share its batch (predictions are then cropped back to the native size;
  the padding is never scored). The last batch of each shape is filled up with invalid rows
  so that one compiled step per shape serves the whole split.

  Returns:
    The batches, in a deterministic order; every image appears exactly once.
  """
  items = []
  for index in range(len(source)):
    record = source[index]
    image, mask = as_2d(record['image']), as_2d(record['mask'])
    if image.shape != mask.shape:
      raise ValueError(f'{record_id(record, index)}: image {image.shape} and mask '
                       f'{mask.shape} differ in size')
    items.append((record_id(record, index), image, mask))
  keys = size_buckets([img.shape for _, img, _ in items], pad_multiple=pad_multiple,
                      max_shapes=max_shapes)
  groups: dict[tuple[int, int], list[tuple[str, np.ndarray, np.ndarray]]] = {}
  for key, item in zip(keys, items):
    groups.setdefault(key, []).append(item)
  batches = []
  for (hp, wp), items in sorted(groups.items()):
    for start in range(0, len(items), batch_size):
      chunk = items[start:start + batch_size]
      image = np.zeros((batch_size, hp, wp, 1), np.uint8)
      mask = np.zeros((batch_size, hp, wp, 1), np.uint8)
      heights = np.zeros(batch_size, np.int64)
      widths = np.zeros(batch_size, np.int64)
      for row, (_, img, msk) in enumerate(chunk):
        h, w = img.shape
        image[row, :h, :w, 0] = img
        mask[row, :h, :w, 0] = msk
        heights[row], widths[row] = h, w
      valid = np.arange(batch_size) < len(chunk)
      batches.append(EvalBatch(image, mask, valid, heights, widths, [c[0] for c in chunk]))
  return batches
