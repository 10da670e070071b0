"""Where a raw dataset folder keeps its images, masks and official split lists.

`find_layout(root)` recognises the published layouts (IRSTD-1k, MSHNet, BasicIRSTD, DNANet,
SIRST-UAVB, mmseg; LAYOUTS), descending through an archive's top folder, and returns a
`Layout`: one `SplitSource` (list file, image folder, mask folder) per official split.
`fingerprint(layout)` digests what a build of the layout reads. No file is decoded here
(irstd_jax.raw_entries pairs the listed ids with files; irstd_jax.raw_data decodes them).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from typing import Iterable

from irstd_jax import dataset_registry
from irstd_jax.raw_data import IMAGE_EXTENSIONS
from irstd_jax.raw_issues import RawDataError, error

LAYOUTS = ('irstd1k', 'mshnet', 'basicirstd', 'dnanet', 'uavb', 'mmseg')
# The lists every layout has; an official validation list is optional (Layout.splits).
LISTED_SPLITS = ('train', 'test')

_IMAGE_DIRS = ('images', 'irstd1k_img', 'imgs', 'img', 'image')
_MASK_DIRS = ('masks', 'irstd1k_label', 'labels', 'label', 'mask', 'gt')
_SPLIT_DIRS = ('50_50', 'splits')  # plus every idx_* folder (SIRST's idx_320, idx_427)


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
    return dataset_registry.SPLITS if self.validation else LISTED_SPLITS

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
  for _ in range(3):
    if _looks_like_dataset(root):
      return root
    subdirs = _subdirs(root)
    named = [d for d in subdirs if dataset_registry.names_dataset(d.name, dataset)]
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
    # Several datasets' lists side by side: the one named like the dataset comes first.
    pairs.sort(key=lambda p: not dataset_registry.names_dataset(p[1].stem[len('train_'):],
                                                                 dataset))
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
    raise RawDataError.from_issues([error('no_layout', root, 'folder does not exist')], root)
  if images is None and masks is None:
    root = _dataset_root(root, dataset)

  def fail(detail):
    seen = ', '.join(sorted(p.name + ('/' if p.is_dir() else '') for p in root.iterdir()))
    issue = error('no_layout', root, f'{detail} (found: {seen or "nothing"})')
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
