"""Leakage between splits: training images equal or nearly equal to a held-out image.

Two checks, both on the decoded grey pixels (raw_data.read_image), never on file bytes:

* exact: the SHA-1 of the pixels and shape (`raw_data.Sample.image_hash`). Two files with
  the same pixels match even when their encodings differ (PNG vs BMP, other compression).
* near: consecutive video frames, or one background reused with other targets. Each image
  is reduced to a THUMB x THUMB thumbnail by area averaging (Pillow's BOX filter, float
  grey levels), and two images are near-duplicates when

      relative distance = RMS(thumb_a - thumb_b) / sqrt((var(thumb_a) + var(thumb_b)) / 2 + 1)

  is at most NEAR_THRESHOLD. The RMS difference measures how far apart the scenes are in
  grey levels; dividing by the thumbnails' own spread makes the test scale-free, so a flat
  sky (spread of a few grey levels) must match far more closely than a textured scene to
  count, and the +1 keeps two perfectly flat images apart unless they are within 1 grey
  level. Area averaging to 32x32 removes sensor noise and the targets themselves (a 3x3
  target of +100 moves one thumbnail pixel by about 14 grey levels), so two frames that
  differ only in their targets, or by a shift of a few pixels, stay close.

Threshold 0.3, measured on NUDT-SIRST's official split (docs/datasets.md): pairs at
relative distance 0.1-0.3 were the same scene, with other targets or a camera shift of a
few percent of the frame (a horizon moved by ~10 px); at 0.4 still the same place after a
larger move; at 0.5 and above, different scenes. 0.3 keeps every pair flagged a true same-
scene pair at the cost of missing the larger moves. The measure is not brightness-invariant:
a frame whose grey levels are all offset by more than about 0.3 x the scene's thumbnail
spread (an automatic gain change) counts as different. Subtracting each thumbnail's mean
first was tried: at the same threshold it flagged 11 more NUDT-SIRST pairs, most of them
different flat skies of other brightness. 54 of NUDT-SIRST's 663 training images
have a near-duplicate in its test list by this rule, none an exact one.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from PIL import Image

THUMB = 32
NEAR_THRESHOLD = 0.3
KINDS = ('exact', 'near')


@dataclasses.dataclass(frozen=True)
class Fingerprint:
  """What the checks compare of one image."""
  pixel_hash: str
  thumbnail: np.ndarray  # float32 [THUMB * THUMB], grey levels


def thumbnail(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W] or [H, W, 1] -> float32 [THUMB * THUMB], area-averaged grey levels."""
  grey = np.asarray(image, np.uint8).reshape(image.shape[:2])
  small = Image.fromarray(grey, mode='L').convert('F').resize((THUMB, THUMB), Image.BOX)
  return np.asarray(small, np.float32).ravel()


def relative_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Thumbnails a [N, D] and b [M, D] -> [N, M] relative distances (module docstring)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  sq = (np.square(a).sum(1)[:, None] + np.square(b).sum(1)[None]
        - 2.0 * a @ b.T) / a.shape[1]
  spread = (a.var(1)[:, None] + b.var(1)[None]) / 2.0 + 1.0
  return np.sqrt(np.maximum(sq, 0.0) / spread)


@dataclasses.dataclass(frozen=True)
class Leak:
  """A training image that equals (exact) or nearly equals (near) a held-out image."""
  kind: str  # 'exact' or 'near'
  train: object  # raw_entries.Entry
  held_out: object  # raw_entries.Entry
  held_out_split: str  # 'test' or 'validation' (an official validation list)
  distance: float  # relative distance; 0.0 for exact


def find_leaks(train: Sequence[tuple[object, Fingerprint]],
               held_out: Sequence[tuple[str, object, Fingerprint]],
               threshold: float = NEAR_THRESHOLD, chunk: int = 512) -> list[Leak]:
  """Each training image with an exact or near duplicate among the held-out images.

  Args:
    train: (entry, fingerprint) pairs.
    held_out: (split, entry, fingerprint) triples.
    threshold: the near-duplicate threshold on the relative distance.
    chunk: training images compared at a time (bounds memory to chunk x len(held_out)).

  Returns:
    One Leak per leaking training image (exact when a held-out image has its pixel hash,
    else its nearest held-out image when within `threshold`), in the order of `train`.
  """
  if not train or not held_out:
    return []
  by_hash = {}
  for split, entry, fp in held_out:
    by_hash.setdefault(fp.pixel_hash, (split, entry))
  thumbs_b = np.stack([fp.thumbnail for _, _, fp in held_out])
  leaks = []
  for start in range(0, len(train), chunk):
    part = train[start:start + chunk]
    dist = relative_distances(np.stack([fp.thumbnail for _, fp in part]), thumbs_b)
    nearest = dist.argmin(1)
    for row, (entry, fp) in enumerate(part):
      if fp.pixel_hash in by_hash:
        split, other = by_hash[fp.pixel_hash]
        leaks.append(Leak('exact', entry, other, split, 0.0))
      elif dist[row, nearest[row]] <= threshold:
        split, other, _ = held_out[nearest[row]]
        leaks.append(Leak('near', entry, other, split, float(dist[row, nearest[row]])))
  return leaks


def repeated(entries: Sequence[object], fingerprints: dict) -> list[tuple[object, object]]:
  """(later copy, first copy) for each entry whose pixels equal an earlier entry's."""
  first, out = {}, []
  for entry in entries:
    fp = fingerprints.get(entry)
    if fp is None:
      continue
    if fp.pixel_hash in first:
      out.append((entry, first[fp.pixel_hash]))
    else:
      first[fp.pixel_hash] = entry
  return out
