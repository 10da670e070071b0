"""Raw IRSTD dataset folders: find the layout, read the files, check them.

The one module behind the TFDS builders (`tfds_builders/*`), the validator
(`python -m irstd_jax.validate_dataset`) and `tfds_sources`: a folder the validator accepts is
exactly a folder the builders build, and both word every problem the same way. Plain numpy,
Pillow and scipy; no TensorFlow, no TFDS.

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

import collections
import dataclasses
import hashlib
import io
import math
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from irstd_jax import dataset_registry
from irstd_jax import leakage
from irstd_jax.errors import UserError
from irstd_jax import metrics

IMAGE_EXTENSIONS = ('.png', '.bmp', '.jpg', '.jpeg', '.tif', '.tiff')
MASK_SUFFIX = '_pixels0'  # ACM / SIRST mask names: images/Misc_1.png <-> masks/Misc_1_pixels0.png
LAYOUTS = ('irstd1k', 'mshnet', 'basicirstd', 'dnanet', 'uavb', 'mmseg')
SPLITS = ('train', 'test')  # the lists every layout has; an official validation list is optional

_IMAGE_DIRS = ('images', 'irstd1k_img', 'imgs', 'img', 'image')
_MASK_DIRS = ('masks', 'irstd1k_label', 'labels', 'label', 'mask', 'gt')
_SPLIT_DIRS = ('50_50', 'splits')  # plus every idx_* folder (SIRST's idx_320, idx_427)
_GREY_MODES = ('1', 'L', 'P', 'LA', 'PA', 'RGB', 'RGBA', 'RGBX', 'CMYK', 'YCbCr')
# More than 8 bits per pixel: 16-bit PNG/TIFF (Pillow: I;16*), 32-bit integer and float TIFF.
HIGH_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F')
# The stretch of frames with more than 8 bits: these percentiles of the frame map to 0 and 255.
# The low one ignores dead pixels; the high one, 0.01 % (33 px of a 640x512 frame), lets a
# few hot pixels saturate without compressing the rest, and keeps small targets bright.
STRETCH_PERCENTILES = (1.0, 99.99)
MASK_THRESHOLD = 127  # mask pixels > this are target, unless a threshold is set
_MAX_EXAMPLES = 5  # ids quoted in one aggregated message


# -- problems ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Issue:
  """One problem with a raw folder. `path` names the file (or folder, or split list)."""
  severity: str  # 'error' (the builders refuse the data) or 'warning'
  code: str  # e.g. 'missing_mask', 'size_mismatch', 'non_binary_mask'
  path: str
  detail: str

  def __str__(self) -> str:
    return f'{self.severity.upper()} {self.code}: {self.path}: {self.detail}'


def _error(code, path, detail):
  return Issue('error', code, str(path), detail)


def _warning(code, path, detail):
  return Issue('warning', code, str(path), detail)


class RawDataError(UserError, ValueError):
  """The raw folder cannot be built. `issues` holds the errors; the message lists them."""

  def __init__(self, message: str, issues: Sequence[Issue] = ()):
    super().__init__(message)
    self.issues = tuple(issues)

  @classmethod
  def from_issues(cls, issues: Sequence[Issue], root: str | pathlib.Path = '',
                  limit: int = 20) -> 'RawDataError':
    errors = [i for i in issues if i.severity == 'error']
    lines = [str(i) for i in errors[:limit]]
    if len(errors) > limit:
      lines.append(f'... and {len(errors) - limit} more errors')
    error = cls(f'{len(errors)} error(s) in the raw dataset', errors)
    error.where = str(root or 'the raw folder')
    error.fix = (f'fix the files below; `python -m irstd_jax.validate_dataset '
                 f'{root or "RAW_DIR"}` prints the full report')
    error.details = '\n'.join(lines)
    return error


# -- layout -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SplitSource:
  """Where one official split's files are."""
  list_file: pathlib.Path | None  # None: every image of image_dir (mmseg layout)
  image_dir: pathlib.Path
  mask_dir: pathlib.Path


@dataclasses.dataclass(frozen=True)
class Layout:
  """A raw dataset folder: the official train and test split sources."""
  root: pathlib.Path
  name: str  # one of LAYOUTS, or 'custom' when paths were given explicitly
  train: SplitSource
  test: SplitSource
  notes: tuple[str, ...] = ()  # alternatives that were seen but not used
  validation: SplitSource | None = None  # an official validation list (NUAA-SIRST's ACM split)

  @property
  def splits(self) -> tuple[str, ...]:
    """The splits with a source: ('train', 'test') or ('train', 'validation', 'test')."""
    return ('train', 'validation', 'test') if self.validation else SPLITS

  def describe(self) -> str:
    def rel(p):
      try:
        return str(p.relative_to(self.root))
      except ValueError:
        return str(p)
    parts = [f'layout {self.name} at {self.root}']
    for split in self.splits:
      src = getattr(self, split)
      lst = rel(src.list_file) if src.list_file else f'all of {rel(src.image_dir)}/'
      parts.append(f'{split}: {lst} (images {rel(src.image_dir)}/, masks {rel(src.mask_dir)}/)')
    return '\n  '.join(parts + list(self.notes))


def _norm(name: str) -> str:
  return ''.join(c for c in name.lower() if c.isalnum())


def _aliases(dataset: str | None) -> set[str]:
  """The normalised folder / list names of a registered dataset (empty for None)."""
  spec = dataset_registry.DATASETS.get(dataset) if dataset else None
  return {_norm(a) for a in spec.aliases + (spec.name,)} if spec else set()


def _subdirs(path: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in path.iterdir()
                if p.is_dir() and not p.name.startswith(('.', '__MACOSX')))


def _child(path: pathlib.Path, names: Iterable[str]) -> pathlib.Path | None:
  """The first sub-folder of `path` whose lower-cased name is in `names`."""
  by_name = {p.name.lower(): p for p in _subdirs(path)}
  for name in names:
    if name in by_name:
      return by_name[name]
  return None


def _mmseg_sources(root):
  train = _child(root, ('trainval', 'train'))
  test = _child(root, ('test',))
  if not (train and test):
    return None
  sources = []
  for d in (train, test):
    images, masks = _child(d, _IMAGE_DIRS), _child(d, _MASK_DIRS)
    if not (images and masks):
      return None
    sources.append(SplitSource(None, images, masks))
  return sources


def _looks_like_dataset(root):
  return bool(_child(root, _IMAGE_DIRS) or _mmseg_sources(root))


def _dataset_root(root: pathlib.Path, dataset: str | None) -> pathlib.Path:
  """Descends through archive top folders (one sub-folder, or one named like the dataset)."""
  aliases = _aliases(dataset)
  for _ in range(3):
    if _looks_like_dataset(root):
      return root
    subdirs = _subdirs(root)
    named = [d for d in subdirs if _norm(d.name) in aliases]
    if len(named) == 1:
      root = named[0]
    elif len(subdirs) == 1:
      root = subdirs[0]
    else:
      break
  return root


def _list_candidates(root, image_dir, dataset):
  """(layout name, train list, test list) triples found under root, in priority order."""
  found = []
  test = root / 'test.txt'
  for train_name in ('trainval.txt', 'train.txt'):
    if (root / train_name).is_file() and test.is_file():
      name = 'irstd1k' if image_dir.name.lower() == 'irstd1k_img' else 'mshnet'
      found.append((name, root / train_name, test))
      break
  idx = root / 'img_idx'
  if idx.is_dir():
    pairs = []
    for train in sorted(idx.glob('train_*.txt')):
      test_list = idx / ('test_' + train.name[len('train_'):])
      if test_list.is_file():
        pairs.append(('basicirstd', train, test_list))
    aliases = _aliases(dataset)
    # Several datasets' lists side by side: the one named like the dataset comes first.
    pairs.sort(key=lambda p: _norm(p[1].stem[len('train_'):]) not in aliases)
    found.extend(pairs)
  for d in _subdirs(root):
    if d.name in _SPLIT_DIRS or d.name.startswith('idx_'):
      for train_name in ('trainval.txt', 'train.txt'):
        if (d / train_name).is_file() and (d / 'test.txt').is_file():
          found.append(('dnanet', d / train_name, d / 'test.txt'))
          break
  if (root / 'train.txt').is_file() and (root / 'val.txt').is_file() and not test.is_file():
    found.append(('uavb', root / 'train.txt', root / 'val.txt'))
  return found


def _resolve(root, path):
  path = pathlib.Path(path).expanduser()
  return path if path.is_absolute() else root / path


def find_layout(root: str | pathlib.Path, *, layout: str | None = None,
                dataset: str | None = None, images: str | None = None,
                masks: str | None = None, train_list: str | None = None,
                test_list: str | None = None, val_list: str | None = None) -> Layout:
  """Finds where the images, masks and official split lists of a raw folder are.

  Args:
    root: the folder (the manual directory). One extra level of folders (an archive's top
      folder, or a BasicIRSTD `datasets/` folder holding several datasets) is descended.
    layout: restrict detection to one of LAYOUTS; None tries them all.
    dataset: a name from dataset_registry; picks the matching sub-folder or BasicIRSTD list.
    images, masks, train_list, test_list: explicit paths (relative to the dataset root or
      absolute) that override detection.
    val_list: an official validation list (same folders); the layout then has three splits.

  Returns:
    The Layout.

  Raises:
    RawDataError: code 'no_layout' when nothing recognisable is there.
  """
  if layout is not None and layout not in LAYOUTS:
    raise ValueError(f'unknown layout {layout!r}; expected one of {LAYOUTS}')
  root = pathlib.Path(root).expanduser()
  if not root.is_dir():
    raise RawDataError.from_issues([_error('no_layout', root, 'folder does not exist')], root)
  if images is None and masks is None:
    root = _dataset_root(root, dataset)

  def fail(detail):
    seen = ', '.join(sorted(p.name + ('/' if p.is_dir() else '') for p in root.iterdir()))
    issue = _error('no_layout', root, f'{detail} (found: {seen or "nothing"})')
    return RawDataError.from_issues([issue], root)

  if images is None and masks is None and layout in (None, 'mmseg'):
    mmseg = _mmseg_sources(root)
    if mmseg and train_list is None and test_list is None:
      return Layout(root, 'mmseg', *mmseg)
  if layout == 'mmseg':
    raise fail('expected trainval/{images,masks} and test/{images,masks} folders')

  image_dir = _resolve(root, images) if images else _child(root, _IMAGE_DIRS)
  mask_dir = _resolve(root, masks) if masks else _child(root, _MASK_DIRS)
  if image_dir is None or not image_dir.is_dir():
    raise fail(f'no image folder (looked for {images or "/".join(_IMAGE_DIRS)})')
  if mask_dir is None or not mask_dir.is_dir():
    raise fail(f'no mask folder (looked for {masks or "/".join(_MASK_DIRS)})')
  if images is None:
    image_dir = _descend_to_files(image_dir)
  if masks is None:
    mask_dir = _descend_to_files(mask_dir)

  candidates = _list_candidates(root, image_dir, dataset)
  if layout is not None:
    candidates = [c for c in candidates if c[0] == layout]
  name = candidates[0][0] if candidates else 'custom'
  train = _resolve(root, train_list) if train_list else (
      candidates[0][1] if candidates else None)
  test = _resolve(root, test_list) if test_list else (candidates[0][2] if candidates else None)
  if train_list or test_list or images or masks:
    name = 'custom'
  if train is None or test is None:
    raise fail('no split lists (looked for trainval.txt or train.txt + test.txt, '
               'img_idx/train_<Name>.txt + img_idx/test_<Name>.txt, 50_50/ or idx_*/ '
               'with train.txt + test.txt, train.txt + val.txt'
               + (f', restricted to layout {layout}' if layout else '') + ')')
  for path in (train, test):
    if not path.is_file():
      raise fail(f'split list {path} does not exist')
  validation = None
  if val_list:
    validation = _resolve(root, val_list)
    if not validation.is_file():
      raise fail(f'split list {validation} does not exist')
  unused = candidates if (train_list or test_list) else candidates[1:]
  notes = tuple(f'also found {c[0]} lists {c[1].relative_to(root)} / {c[2].relative_to(root)}'
                f' (not used)' for c in unused)
  return Layout(root, name, SplitSource(train, image_dir, mask_dir),
                SplitSource(test, image_dir, mask_dir), notes,
                SplitSource(validation, image_dir, mask_dir) if validation else None)


def _descend_to_files(directory: pathlib.Path) -> pathlib.Path:
  """SIRST-UAVB unpacks its images to images/all/: a folder holding no image file but one
  sub-folder (or one named 'all') is replaced by that sub-folder."""
  if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in directory.iterdir()):
    return directory
  subdirs = _subdirs(directory)
  named = [d for d in subdirs if d.name.lower() == 'all']
  return (named or subdirs)[0] if len(named) == 1 or len(subdirs) == 1 else directory


# -- split lists and file pairing -------------------------------------------------------------

def read_split_list(path: pathlib.Path) -> tuple[list[str], list[Issue]]:
  """Reads ids, one a line: CRLF/CR/LF, a UTF-8 BOM, blank lines, `#` comments, and names
  given with a folder or an image extension (images/XDU0.png -> XDU0) are all accepted."""
  ids, issues, seen = [], [], set()
  try:
    text = path.read_bytes().decode('utf-8-sig')
  except (OSError, UnicodeDecodeError) as e:
    return [], [_error('unreadable', path, f'cannot read split list: {e}')]
  for line in text.splitlines():
    item = line.strip()
    if not item or item.startswith('#'):
      continue
    item = item.replace('\\', '/').rsplit('/', 1)[-1]
    stem, dot, ext = item.rpartition('.')
    if dot and '.' + ext.lower() in IMAGE_EXTENSIONS:
      item = stem
    if item in seen:
      issues.append(_warning('duplicate_id', path, f'{item!r} listed twice (kept once)'))
      continue
    seen.add(item)
    ids.append(item)
  return ids, issues  # an empty list is collect's error (empty_split)


def _index(directory: pathlib.Path, strip_suffix: bool) -> dict[str, list[pathlib.Path]]:
  index = collections.defaultdict(list)
  for p in sorted(directory.iterdir()):
    if p.name.startswith('.') or p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
      continue
    stem = p.stem
    if strip_suffix and stem.endswith(MASK_SUFFIX):
      stem = stem[:-len(MASK_SUFFIX)]
    index[stem].append(p)
  return index


@dataclasses.dataclass(frozen=True)
class Entry:
  """One listed example: its id, its image file and its mask file."""
  id: str
  image: pathlib.Path
  mask: pathlib.Path


def _examples(ids, limit=_MAX_EXAMPLES):
  ids = sorted(ids)
  more = f' and {len(ids) - limit} more' if len(ids) > limit else ''
  return ', '.join(ids[:limit]) + more


def collect(layout: Layout) -> tuple[dict[str, list[Entry]], list[Issue]]:
  """Pairs each listed id with its image and mask file; no file is opened.

  Returns:
    ({'train': [...], 'test': [...]}, issues). Errors: missing_image, missing_mask,
    ambiguous_file, id_in_two_splits, unreadable (split list), empty_split (a split with no
    example: training needs train, evaluation test). Warnings: unpaired_image,
    unpaired_mask, unlisted, duplicate_id.
  """
  entries, issues, listed = {}, [], {}
  indices = {}
  for split in layout.splits:
    src = getattr(layout, split)
    for d, is_mask in ((src.image_dir, False), (src.mask_dir, True)):
      if d not in indices:
        indices[d] = _index(d, strip_suffix=is_mask)
    image_index, mask_index = indices[src.image_dir], indices[src.mask_dir]
    if src.list_file is None:
      ids = sorted(image_index)
    else:
      ids, list_issues = read_split_list(src.list_file)
      issues += list_issues
    entries[split] = []
    for i in ids:
      images, masks = image_index.get(i, []), mask_index.get(i, [])
      where = src.list_file or src.image_dir
      if not images:
        issues.append(_error('missing_image', src.image_dir / i,
                             f'{i!r} is listed in {where} but has no image file'))
      if not masks:
        issues.append(_error('missing_mask', src.mask_dir / i,
                             f'{i!r} is listed in {where} but has no mask file'))
      for files in (images, masks):
        if len(files) > 1:
          issues.append(_error('ambiguous_file', files[0],
                               'several files for one id: ' + ', '.join(f.name for f in files)))
      if len(images) == 1 and len(masks) == 1:
        entries[split].append(Entry(i, images[0], masks[0]))
    listed[split] = set(ids)
    if not ids:
      issues.append(_error('empty_split', src.list_file or src.image_dir,
                           f'the {split} split has no examples ('
                           + ('the list holds no ids' if src.list_file else 'no images')
                           + '); training needs a train split and evaluation a test split'))
  for k, a in enumerate(layout.splits):
    for b in layout.splits[k + 1:]:
      src = getattr(layout, b)
      for i in sorted(listed[a] & listed[b]):
        issues.append(_error('id_in_two_splits', src.list_file or src.image_dir,
                             f'{i!r} is listed in both the {a} and the {b} split'))
  # Files no split list names: only reported, never built.
  all_listed = set().union(*listed.values())
  for image_dir, mask_dir in {(getattr(layout, s).image_dir, getattr(layout, s).mask_dir)
                              for s in layout.splits}:
    image_ids, mask_ids = set(indices[image_dir]), set(indices[mask_dir])
    for ids, code, d, what in ((image_ids - mask_ids - all_listed, 'unpaired_image', image_dir,
                                'images without a mask'),
                               (mask_ids - image_ids - all_listed, 'unpaired_mask', mask_dir,
                                'masks without an image'),
                               ((image_ids & mask_ids) - all_listed, 'unlisted', image_dir,
                                'image/mask pairs in no split list (not built)')):
      if ids:
        issues.append(_warning(code, d, f'{len(ids)} {what}: {_examples(ids)}'))
  return entries, issues


# -- decoding ---------------------------------------------------------------------------------

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
      issues.append(_error('unreadable', path, str(e)))
  if issues:
    return None, issues
  image, grey_mask = arrays
  if image.shape != grey_mask.shape:
    (ih, iw), (mh, mw) = image.shape, grey_mask.shape
    return None, [_error('size_mismatch', entry.mask,
                         f'mask is {mw}x{mh} (WxH) but its image {entry.image.name} is '
                         f'{iw}x{ih}; fix or remove the pair (masks are never cropped or '
                         'resized silently)')]
  mask, stray, values = binarise(grey_mask, mask_threshold)
  cut = MASK_THRESHOLD if mask_threshold is None else mask_threshold
  if mask_threshold is None and not mask.any() and grey_mask.any():
    levels = sorted(int(v) for v in np.unique(grey_mask) if v)[:5]
    return None, [_error('mask_below_threshold', entry.mask,
                         f'{int(np.count_nonzero(grey_mask))} non-zero mask pixel(s) (values '
                         f'{levels}) but none > {cut}: binarised it would be empty. Set the '
                         'mask threshold (validator --mask-threshold, data.mask_threshold) '
                         'or save targets as 255')]
  if stray:
    issues.append(_warning('non_binary_mask', entry.mask,
                           f'{stray} pixel(s) neither 0 nor 255 (values {list(values)}'
                           f'{"..." if len(values) == 5 else ""}); binarised with > {cut}'))
  num_targets, area = count_targets(mask)
  if num_targets == 0:
    issues.append(_warning('empty_mask', entry.mask, 'mask has no target pixel'))
  digest = hashlib.sha1(repr(image.shape).encode() + image.tobytes()).hexdigest()
  return Sample(entry.id, image[..., None], mask[..., None], num_targets, area, stray,
                digest), issues


def encode_png(array: np.ndarray, compress_level: int = 3) -> bytes:
  """uint8 [H, W] or [H, W, 1] -> PNG bytes (what the TFDS image feature stores)."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(array, np.uint8).reshape(array.shape[:2]), mode='L').save(
      buf, format='PNG', compress_level=compress_level)
  return buf.getvalue()


# -- whole-folder check -----------------------------------------------------------------------

@dataclasses.dataclass
class SplitStats:
  images: int = 0
  targets: int = 0
  area: int = 0
  empty_masks: int = 0
  non_binary_masks: int = 0
  sizes: collections.Counter = dataclasses.field(default_factory=collections.Counter)


@dataclasses.dataclass
class Report:
  """The result of `scan`: the layout, the paired entries, every issue, per-split totals."""
  layout: Layout
  entries: dict[str, list[Entry]]
  issues: list[Issue]
  stats: dict[str, SplitStats]
  # Of every decoded entry: what the leakage checks compare (irstd_jax.leakage).
  fingerprints: dict[Entry, leakage.Fingerprint] = dataclasses.field(default_factory=dict)
  decoded: bool = True  # False: names and pairing only (no file was opened)

  @property
  def errors(self) -> list[Issue]:
    return [i for i in self.issues if i.severity == 'error']

  @property
  def warnings(self) -> list[Issue]:
    return [i for i in self.issues if i.severity == 'warning']

  def format_totals(self) -> list[str]:
    """The layout and one line of totals per split."""
    lines = [self.layout.describe(), '']
    for split, s in self.stats.items():
      sizes = ', '.join(f'{w}x{h}: {n}' for (h, w), n in s.sizes.most_common(4))
      more = ', ...' if len(s.sizes) > 4 else ''
      lines.append(f'{split}: {s.images} images, {s.targets} targets, {s.area} target pixels, '
                   f'{s.empty_masks} empty masks, {s.non_binary_masks} non-binary masks'
                   + (f'; sizes (WxH) {sizes}{more}' if sizes else ''))
    return lines

  def format(self, max_per_code: int = 20) -> str:
    """The human-readable report the validator prints."""
    return '\n'.join(self.format_totals()
                     + format_issues(self.issues, max_per_code, decoded=self.decoded))


def format_issues(issues: Sequence[Issue], max_per_code: int = 20, *,
                  decoded: bool = True) -> list[str]:
  """Issues grouped by code (errors first), then the verdict line (`decoded` False: the
  files were not opened, so no verdict on their content)."""
  lines = []
  by_code = collections.defaultdict(list)
  for issue in issues:
    by_code[(issue.severity != 'error', issue.code)].append(issue)
  for (_, code), group in sorted(by_code.items()):
    lines.append('')
    lines.append(f'{group[0].severity.upper()} {code}: {len(group)}')
    lines += ['  ' + str(i) for i in group[:max_per_code]]
    if len(group) > max_per_code:
      lines.append(f'  ... and {len(group) - max_per_code} more')
  errors = sum(i.severity == 'error' for i in issues)
  if errors:
    verdict = 'the builders will refuse this folder.'
  elif not decoded:
    verdict = ('names and pairing are fine, but no file was opened (--quick): run without '
               '--quick before building.')
  else:
    verdict = 'the builders accept this folder.'
  lines.append('')
  lines.append(f'{errors} error(s), {len(issues) - errors} warning(s): ' + verdict)
  return lines


def scan(layout: Layout, *, decode: bool = True, dataset: str | None = None,
         split: str | None = None, mask_threshold: int | None = None) -> Report:
  """Pairs, decodes and checks every listed example of a layout.

  Args:
    layout: from find_layout.
    decode: False checks only names and pairing (no file is opened).
    dataset: a key of dataset_registry.DATASETS. Its official split sizes are checked (a
      difference is a warning), and for an official benchmark split an image duplicated
      across the splits is a warning rather than an error (the published lists are kept as
      they are).
    split: which of the dataset's named splits the layout holds ('' or None: the default);
      chooses the official sizes. An official validation list counts towards train.
    mask_threshold: see load_sample.

  Returns:
    The Report. Beyond collect's and load_sample's issues, an image whose pixels equal one
    in the other split is an error (duplicate_across_splits; a warning for an official
    split) and within one split a warning (duplicate_within_split).
  """
  spec = dataset_registry.DATASETS.get(dataset) if dataset else None
  leak = _warning if spec and spec.official else _error
  counts = spec.split(split).counts if spec else None
  entries, issues = collect(layout)
  stats = {name: SplitStats() for name in layout.splits}
  fingerprints = {}
  seen = {}  # image hash -> (split, entry)
  for split in layout.splits:  # pylint: disable=redefined-argument-from-local
    st = stats[split]
    if not decode:
      st.images = len(entries[split])
      continue
    for entry in entries[split]:
      sample, sample_issues = load_sample(entry, mask_threshold=mask_threshold)
      issues += sample_issues
      if sample is None:
        continue
      st.images += 1
      st.targets += sample.num_targets
      st.area += sample.target_area
      st.empty_masks += sample.num_targets == 0
      st.non_binary_masks += sample.stray_pixels > 0
      st.sizes[sample.image.shape[:2]] += 1
      fingerprints[entry] = leakage.Fingerprint(sample.image_hash,
                                                leakage.thumbnail(sample.image))
      if sample.image_hash in seen:
        other_split, other = seen[sample.image_hash]
        if other.image == entry.image:
          continue  # one file listed in both splits: already an id_in_two_splits error
        if other_split == split:
          issues.append(_warning('duplicate_within_split', entry.image,
                                 f'same pixels as {other.image.name} ({split})'))
        else:
          issues.append(leak('duplicate_across_splits', entry.image,
                             f'same pixels as {other.image} in the {other_split} split '
                             '(test images leak into training)'))
      else:
        seen[sample.image_hash] = (split, entry)
  if counts:
    got = {'train': len(entries['train']) + len(entries.get('validation', [])),
           'test': len(entries['test'])}
    for name, expected in zip(SPLITS, counts):
      if got[name] != expected:
        what = 'train + validation' if name == 'train' and layout.validation else name
        issues.append(_warning('count_mismatch', getattr(layout, name).list_file or layout.root,
                               f'{got[name]} {what} examples, the official split has '
                               f'{expected}'))
  return Report(layout, entries, issues, stats, fingerprints, decoded=decode)


def fingerprint(layout: Layout) -> str:
  """A digest of what a build of `layout` reads: the split lists' bytes and the name, size
  and modification time of every file in the image and mask folders.

  Any edit, addition, removal or rename of a file there changes it, so a build keyed by it
  is never reused for changed raw files. Files are not read (a stat each): cheap for tens of
  thousands of files.
  """
  digest = hashlib.sha256()
  folders, lists = set(), set()
  for split in layout.splits:
    src = getattr(layout, split)
    folders |= {src.image_dir, src.mask_dir}
    if src.list_file is not None:
      lists.add(src.list_file)
  for path in sorted(lists):
    digest.update(f'list {path.name}\n'.encode())
    digest.update(path.read_bytes() if path.is_file() else b'<missing>')
  for folder in sorted(folders):
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
      if entry.is_file():
        st = entry.stat()
        digest.update(f'{folder.name}/{entry.name} {st.st_size} {st.st_mtime_ns}\n'.encode())
  return digest.hexdigest()


# -- validation split -------------------------------------------------------------------------

def carve_validation(entries: Sequence[Entry], fraction: float) -> tuple[list[Entry],
                                                                           list[Entry]]:
  """Splits the official train list into (train, validation), deterministically.

  The ids are ranked by SHA-256 of the id and the first round(fraction * n) go to validation
  (at least one when fraction > 0 and n >= 2; never all). The result depends only on the set
  of ids: not on their order, the machine or the numpy version. The test split is never used.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f'validation fraction must be in [0, 1), got {fraction}')
  n = len(entries)
  n_val = 0
  if fraction > 0 and n >= 2:
    n_val = min(n - 1, max(1, math.floor(fraction * n + 0.5)))
  ranked = sorted(entries, key=lambda e: hashlib.sha256(e.id.encode('utf-8')).hexdigest())
  val_ids = {e.id for e in ranked[:n_val]}
  return ([e for e in entries if e.id not in val_ids], [e for e in entries if e.id in val_ids])
