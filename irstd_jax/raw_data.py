"""Raw image and mask files -> uint8 arrays: the decoding rules every reader shares.

The TFDS builders (through irstd_jax.raw_report and dataset_splits), the validator and
`--mode=predict` decode files here, so an image means the same pixels everywhere. A raw
folder is found by irstd_jax.raw_layout, its examples listed by raw_entries, checked as a
whole by raw_report; problems are raw_issues.Issue. Plain numpy, Pillow and scipy; no
TensorFlow, no TFDS.

Conventions (docs/method.md section 8):
  * Image -> uint8 [H, W, 1]. L is kept; 1/P/LA/PA/RGB/RGBA/CMYK/YCbCr are converted with
    Pillow's ITU-R 601-2 luma, which keeps an RGB image with R == G == B exactly.
    Sensor frames of more than 8 bits (16-bit PNG/TIFF, 14-bit data in 16-bit files, 32-bit
    integer or float TIFF) are mapped to uint8 by `stretch_to_uint8`, a linear stretch
    between the frame's own 1st and 99.99th percentiles, the same in the builders (training,
    evaluation) and in predict. Masks of more than 8 bits keep their high byte.
  * Mask -> uint8 [H, W, 1] in {0, 1}: a pixel is target when its grey value is > 127
    (MASK_THRESHOLD; a builder config or the validator may set another). A mask whose values
    all lie in {0, 1} is taken as it is (> 127 would empty it). Any value other than 0 and 255
    (IRSTD-1k's stray 64s, JPEG ringing) is reported with its pixel count. A mask with
    non-zero pixels none of which passes the default threshold (targets drawn as 100) is an
    error, unless the threshold was set explicitly.
  * A target is an 8-connected component of the binary mask (`metrics.EIGHT_CONNECTED`, the
    same definition Pd uses); the target area is the number of target pixels.
  * A mask whose size differs from its image is an error, never cropped or resized.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import pathlib
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage

from irstd_jax import metrics
from irstd_jax.raw_issues import Issue, error, warning

if TYPE_CHECKING:  # raw_entries imports this module for IMAGE_EXTENSIONS
  from irstd_jax.raw_entries import Entry

IMAGE_EXTENSIONS = ('.png', '.bmp', '.jpg', '.jpeg', '.tif', '.tiff')
MASK_SUFFIX = '_pixels0'  # ACM / SIRST mask names: images/Misc_1.png <-> masks/Misc_1_pixels0.png
_GREY_MODES = ('1', 'L', 'P', 'LA', 'PA', 'RGB', 'RGBA', 'RGBX', 'CMYK', 'YCbCr')
# More than 8 bits per pixel: 16-bit PNG/TIFF (Pillow: I;16*), 32-bit integer and float TIFF.
HIGH_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F')
# The stretch of frames with more than 8 bits: these percentiles of the frame map to 0 and 255.
# The low one ignores dead pixels; the high one, 0.01 % (33 px of a 640x512 frame), lets a
# few hot pixels saturate without compressing the rest, and keeps small targets bright.
STRETCH_PERCENTILES = (1.0, 99.99)
MASK_THRESHOLD = 127  # mask pixels > this are target, unless a threshold is set


def stretch_to_uint8(frame: np.ndarray,
                     percentiles: tuple[float, float] = STRETCH_PERCENTILES) -> np.ndarray:
  """A frame of any bit depth [H, W] -> uint8 [H, W]: the documented normalisation.

  x -> round(255 * clip((x - lo) / (hi - lo), 0, 1)), with lo and hi the frame's
  `percentiles` (numpy's linear interpolation). A constant frame maps to 0. Per frame, so
  it does not depend on the camera's bit depth (14 bits in a 16-bit file, or 16) or on its
  offset, as the automatic gain control of an 8-bit camera output does not.
  """
  x = np.asarray(frame, np.float64)
  lo, hi = np.percentile(x, percentiles)
  if not hi > lo:
    return np.zeros(x.shape, np.uint8)
  return np.rint(255.0 * np.clip((x - lo) / (hi - lo), 0.0, 1.0)).astype(np.uint8)


def _read_grey(path: pathlib.Path, *, is_mask: bool = False) -> np.ndarray:
  """Decodes one file to uint8 [H, W]; raises ValueError (with the reason) when it cannot.

  Frames of more than 8 bits go through stretch_to_uint8; masks of more than 8 bits keep
  their high byte (0/65535 -> 0/255) unless all values fit in 8 bits already.
  """
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode in HIGH_BIT_MODES:
        array = np.asarray(im)
        if array.ndim != 2 or not np.all(np.isfinite(array)):
          raise ValueError(f'unsupported {im.mode} image (not one finite grey channel)')
        if not is_mask:
          return stretch_to_uint8(array)
        if array.min() >= 0 and array.max() <= 255:
          return array.astype(np.uint8)
        return np.clip(np.asarray(array, np.float64) / 256.0, 0, 255).astype(np.uint8)
      if im.mode not in _GREY_MODES:
        raise ValueError(f'unsupported pixel mode {im.mode}; save it as 8-bit or 16-bit grey')
      if im.mode in ('PA', 'CMYK', 'YCbCr'):
        im = im.convert('RGB')
      return np.asarray(im if im.mode == 'L' else im.convert('L'), dtype=np.uint8)
  except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
    raise ValueError(f'cannot decode: {type(e).__name__}: {e}') from e


def read_image(path: pathlib.Path) -> np.ndarray:
  """uint8 [H, W, 1] grey image (any bit depth, see stretch_to_uint8).

  Raises ValueError when the file cannot be decoded.
  """
  return _read_grey(path)[..., None]


def read_mask(path: pathlib.Path) -> np.ndarray:
  """uint8 [H, W, 1] grey mask, before binarise. Raises ValueError when it cannot decode."""
  return _read_grey(path, is_mask=True)[..., None]


def binarise(grey: np.ndarray, threshold: int | None = None
             ) -> tuple[np.ndarray, int, tuple[int, ...]]:
  """Grey mask -> ({0, 1} mask, count of stray pixels, the stray values (up to 5)).

  A pixel is target when > `threshold` (None: MASK_THRESHOLD), except that a mask whose
  values all lie in {0, 1} is taken as it is when no threshold is given. Stray pixels are
  those whose value is neither 0 nor 255 (nor 1, for a {0, 1} mask).
  """
  counts = np.bincount(grey.ravel(), minlength=256)
  if counts[2:].sum() == 0 and threshold is None:  # already {0, 1}
    return (grey == 1).astype(np.uint8), 0, ()
  stray_counts = counts.copy()
  stray_counts[[0, 255]] = 0
  stray_values = tuple(int(v) for v in np.flatnonzero(stray_counts)[:5])
  cut = MASK_THRESHOLD if threshold is None else threshold
  return (grey > cut).astype(np.uint8), int(stray_counts.sum()), stray_values


def count_targets(mask: np.ndarray) -> tuple[int, int]:
  """(number of 8-connected components, number of target pixels) of a {0, 1} mask."""
  mask = np.asarray(mask).reshape(mask.shape[:2]).astype(bool)
  _, num = ndimage.label(mask, structure=metrics.EIGHT_CONNECTED)
  return int(num), int(mask.sum())


@dataclasses.dataclass(frozen=True)
class Sample:
  """One decoded example."""
  id: str
  image: np.ndarray  # uint8 [H, W, 1]
  mask: np.ndarray  # uint8 [H, W, 1] in {0, 1}
  num_targets: int
  target_area: int
  stray_pixels: int  # mask pixels that were neither 0 nor 255
  image_hash: str  # of the decoded grey pixels and shape


def load_sample(entry: Entry, *, mask_threshold: int | None = None
                ) -> tuple[Sample | None, list[Issue]]:
  """Decodes and checks one example.

  Args:
    entry: the example's files.
    mask_threshold: mask pixels > this are target (None: MASK_THRESHOLD, and a mask whose
      non-zero pixels all fall below it is an error rather than an empty mask).

  Returns:
    (sample or None, issues). Errors: unreadable, size_mismatch, mask_below_threshold
    (sample None). Warnings: non_binary_mask, empty_mask.
  """
  issues = []
  arrays = []
  for path, is_mask in ((entry.image, False), (entry.mask, True)):
    try:
      arrays.append(_read_grey(path, is_mask=is_mask))
    except ValueError as e:
      issues.append(error('unreadable', path, str(e)))
  if issues:
    return None, issues
  image, grey_mask = arrays
  if image.shape != grey_mask.shape:
    (ih, iw), (mh, mw) = image.shape, grey_mask.shape
    return None, [error('size_mismatch', entry.mask,
                         f'mask is {mw}x{mh} (WxH) but its image {entry.image.name} is '
                         f'{iw}x{ih}; fix or remove the pair (masks are never cropped or '
                         'resized silently)')]
  mask, stray, values = binarise(grey_mask, mask_threshold)
  cut = MASK_THRESHOLD if mask_threshold is None else mask_threshold
  if mask_threshold is None and not mask.any() and grey_mask.any():
    levels = sorted(int(v) for v in np.unique(grey_mask) if v)[:5]
    return None, [error('mask_below_threshold', entry.mask,
                         f'{int(np.count_nonzero(grey_mask))} non-zero mask pixel(s) (values '
                         f'{levels}) but none > {cut}: binarised it would be empty. Set the '
                         'mask threshold (validator --mask-threshold, data.mask_threshold) '
                         'or save targets as 255')]
  if stray:
    issues.append(warning('non_binary_mask', entry.mask,
                           f'{stray} pixel(s) neither 0 nor 255 (values {list(values)}'
                           f'{"..." if len(values) == 5 else ""}); binarised with > {cut}'))
  num_targets, area = count_targets(mask)
  if num_targets == 0:
    issues.append(warning('empty_mask', entry.mask, 'mask has no target pixel'))
  digest = hashlib.sha1(repr(image.shape).encode() + image.tobytes()).hexdigest()
  return Sample(entry.id, image[..., None], mask[..., None], num_targets, area, stray,
                digest), issues


def encode_png(array: np.ndarray, compress_level: int = 3) -> bytes:
  """uint8 [H, W] or [H, W, 1] -> PNG bytes (what the TFDS image feature stores)."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(array, np.uint8).reshape(array.shape[:2]), mode='L').save(
      buf, format='PNG', compress_level=compress_level)
  return buf.getvalue()
