"""Tiny synthetic raw IRSTD folders in each layout the builders accept (for tests).

Every image is a deterministic noisy background with 1-3 bright square targets, far enough
apart to be separate 8-connected components; the mask marks them with 255. `write_folder`
returns what a correct reader must find, so tests compare against it.

Also regenerates the builders' dummy_data/ folders:

    python tests/raw_folders.py
"""
from __future__ import annotations

import dataclasses
import pathlib
import shutil
import sys
import zlib

import numpy as np
from PIL import Image
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / 'shared' / 'data'  # ../shared/data, beside the repository


@dataclasses.dataclass(frozen=True)
class Example:
  image: np.ndarray  # uint8 [H, W] grey
  mask: np.ndarray  # uint8 [H, W] in {0, 1}
  num_targets: int
  area: int


def make_example(image_id: str, size=(24, 20), target=3) -> Example:
  """A deterministic scene for `image_id`: size is (H, W); targets are target x target."""
  h, w = size
  rng = np.random.default_rng(zlib.crc32(image_id.encode()))
  image = rng.integers(0, 90, size=(h, w), dtype=np.uint8)
  mask = np.zeros((h, w), np.uint8)
  # A grid of slots one target apart, so no two targets touch (even diagonally).
  slots = [(r, c) for r in range(1, h - target, 2 * target) for c in range(1, w - target,
                                                                          2 * target)]
  n = 1 + zlib.crc32(image_id.encode()) % 3
  for k in rng.choice(len(slots), size=min(n, len(slots)), replace=False):
    r, c = slots[k]
    mask[r:r + target, c:c + target] = 1
    image[r:r + target, c:c + target] = 200 + rng.integers(0, 55)
  return Example(image, mask, int(min(n, len(slots))), int(mask.sum()))


def save(path: pathlib.Path, grey: np.ndarray, mode: str = 'L') -> None:
  """Writes a grey array in the given Pillow mode (RGB/L/RGBA/P/LA); the format follows the
  extension (JPEG at quality 95)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if mode == 'P':
    im = Image.fromarray(grey, mode='P')
    im.putpalette([v for i in range(256) for v in (i, i, i)])
  elif mode == 'L':
    im = Image.fromarray(grey, mode='L')
  else:
    im = Image.fromarray(grey, mode='L').convert(mode)
  kwargs = {'quality': 95} if path.suffix.lower() in ('.jpg', '.jpeg') else {}
  im.save(path, **kwargs)


def write_list(path: pathlib.Path, ids, crlf: bool = False) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  end = '\r\n' if crlf else '\n'
  path.write_bytes(''.join(i + end for i in ids).encode())


# Where each layout keeps its files: (image dir, mask dir, train list, test list), with
# {split} for mmseg's per-split folders (it has no lists).
LAYOUT_PATHS = {
    'irstd1k': ('IRSTD1k_Img', 'IRSTD1k_Label', 'trainval.txt', 'test.txt'),
    'mshnet': ('images', 'masks', 'trainval.txt', 'test.txt'),
    'basicirstd': ('images', 'masks', 'img_idx/train_MyData.txt', 'img_idx/test_MyData.txt'),
    'dnanet': ('images', 'masks', '50_50/train.txt', '50_50/test.txt'),
    'sirst': ('images', 'masks', 'idx_427/trainval.txt', 'idx_427/test.txt'),
    'uavb': ('images', 'masks', 'train.txt', 'val.txt'),
    'mmseg': ('{split}/images', '{split}/masks', None, None),
}


def write_folder(root: pathlib.Path, layout: str = 'dnanet', *, train=None, test=None,
                 size=(24, 20), image_mode='RGB', image_ext='.png', mask_ext='.png',
                 mask_suffix='', mask_mode='L', crlf=False) -> dict[str, Example]:
  """Writes a raw folder; returns {id: Example} of everything written.

  `layout` is a key of LAYOUT_PATHS ('sirst' is the DNANet layout with idx_427/ lists and
  `_pixels0` mask names unless mask_suffix is given).
  """
  train = [f'tr{i:03d}' for i in range(6)] if train is None else list(train)
  test = [f'te{i:03d}' for i in range(3)] if test is None else list(test)
  if layout == 'sirst' and not mask_suffix:
    mask_suffix = '_pixels0'
  image_dir, mask_dir, train_list, test_list = LAYOUT_PATHS[layout]
  examples = {}
  for split, ids in (('trainval', train), ('test', test)):
    for i in ids:
      ex = make_example(i, size)
      examples[i] = ex
      save(root / image_dir.format(split=split) / f'{i}{image_ext}', ex.image, image_mode)
      save(root / mask_dir.format(split=split) / f'{i}{mask_suffix}{mask_ext}', ex.mask * 255,
           mask_mode)
  if train_list:
    write_list(root / train_list, train, crlf)
    write_list(root / test_list, test, crlf)
  return examples


# -- defects -------------------------------------------------------------------------------

def corrupt(path):
  path.write_bytes(path.read_bytes()[:40])  # a truncated PNG


def resize(path):
  Image.open(path).resize((10, 10)).save(path)


def set_pixel(path, value):
  grey = np.asarray(Image.open(path)).copy()
  grey[0, 0] = value
  Image.fromarray(grey).save(path)


def _blank(path):
  save(path, np.zeros((24, 20), np.uint8))


# name: (how to break a write_folder(root, 'dnanet') folder, issue code, severity, the end of
# the path the issue names).
DEFECTS = {
    'missing_image': (lambda r: (r / 'images/tr001.png').unlink(), 'missing_image', 'error',
                      'images/tr001'),
    'missing_mask': (lambda r: (r / 'masks/te002.png').unlink(), 'missing_mask', 'error',
                     'masks/te002'),
    'size_mismatch': (lambda r: resize(r / 'masks/tr002.png'), 'size_mismatch', 'error',
                      'masks/tr002.png'),
    'unreadable_image': (lambda r: corrupt(r / 'images/tr003.png'), 'unreadable', 'error',
                         'images/tr003.png'),
    'unreadable_mask': (lambda r: (r / 'masks/te000.png').write_bytes(b''), 'unreadable',
                        'error', 'masks/te000.png'),
    'duplicate_across_splits': (
        lambda r: shutil.copy(r / 'images/tr000.png', r / 'images/te001.png'),
        'duplicate_across_splits', 'error', 'images/te001.png'),
    'id_in_two_splits': (lambda r: write_list(r / '50_50/test.txt', ['te000', 'tr004']),
                         'id_in_two_splits', 'error', '50_50/test.txt'),
    'ambiguous_file': (lambda r: shutil.copy(r / 'masks/tr000.png', r / 'masks/tr000_pixels0.png'),
                       'ambiguous_file', 'error', 'masks/tr000.png'),
    'non_binary_mask': (lambda r: set_pixel(r / 'masks/tr001.png', 64), 'non_binary_mask',
                        'warning', 'masks/tr001.png'),
    'empty_mask': (lambda r: _blank(r / 'masks/tr004.png'), 'empty_mask', 'warning',
                   'masks/tr004.png'),
    'unpaired_image': (lambda r: _blank(r / 'images/extra.png'), 'unpaired_image', 'warning',
                       'images'),
    'unpaired_mask': (lambda r: _blank(r / 'masks/orphan.png'), 'unpaired_mask', 'warning',
                      'masks'),
    'unlisted': (lambda r: write_list(r / '50_50/train.txt', ['tr000', 'tr001']), 'unlisted',
                 'warning', 'images'),
}


# -- the shared IRSTD-1k sample ----------------------------------------------------------------

IRSTD1K_SAMPLE = SHARED_DATA / 'IRSTD-1k-sample'
needs_irstd1k_sample = pytest.mark.skipif(
    not (IRSTD1K_SAMPLE / 'IRSTD1k_Label' / 'XDU0.png').exists(),
    reason=f'{IRSTD1K_SAMPLE} is absent (the shared data folder beside the repository)')


def irstd1k_sample_folder(tmp_path):
  """An IRSTD-1k layout of the shared sample image: trainval XDU0; test XDU0T, its mirror
  image (an empty split is an error) with the one stray mask pixel cleared."""
  root = tmp_path / 'irstd1k'
  for sub in ('IRSTD1k_Img', 'IRSTD1k_Label'):
    (root / sub).mkdir(parents=True)
    shutil.copy(IRSTD1K_SAMPLE / sub / 'XDU0.png', root / sub / 'XDU0.png')
  image = np.asarray(Image.open(IRSTD1K_SAMPLE / 'IRSTD1k_Img' / 'XDU0.png').convert('L'))
  mask = np.asarray(Image.open(IRSTD1K_SAMPLE / 'IRSTD1k_Label' / 'XDU0.png').convert('L'))
  Image.fromarray(image[:, ::-1].copy()).save(root / 'IRSTD1k_Img' / 'XDU0T.png')
  Image.fromarray(np.where(mask == 255, 255, 0).astype(np.uint8)[:, ::-1].copy()).save(
      root / 'IRSTD1k_Label' / 'XDU0T.png')
  write_list(root / 'trainval.txt', ['XDU0'])
  write_list(root / 'test.txt', ['XDU0T'])
  return root



def write_nuaa(root: pathlib.Path, n: int = 8) -> dict[str, Example]:
  """A NUAA-SIRST folder as the original archive unpacks, plus BasicIRSTD's lists.

  Misc_1..Misc_n in mixed modes (L, RGB, RGBA, palette) and two sizes; masks
  `<id>_pixels0.png` with an .xml annotation beside each (to be ignored). Lists:
  idx_427/{train,val,test,trainval}.txt (ACM: half train, a quarter each val and test) and
  img_idx/{train,test}_NUAA-SIRST.txt (BasicIRSTD: the first and second half).
  """
  ids = [f'Misc_{i}' for i in range(1, n + 1)]
  modes = ('L', 'RGB', 'RGBA', 'P')
  examples = {}
  for k, i in enumerate(ids):
    ex = make_example(i, (24, 20) if k % 2 else (20, 28))
    examples[i] = ex
    save(root / 'images' / f'{i}.png', ex.image, modes[k % len(modes)])
    save(root / 'masks' / f'{i}_pixels0.png', ex.mask * 255)
    (root / 'masks' / f'{i}.xml').write_text('<annotation></annotation>')
  half, quarter = n // 2, n // 4
  write_list(root / 'idx_427' / 'train.txt', ids[:half])
  write_list(root / 'idx_427' / 'val.txt', ids[half:half + quarter])
  write_list(root / 'idx_427' / 'test.txt', ids[half + quarter:])
  write_list(root / 'idx_427' / 'trainval.txt', ids[:half + quarter])
  write_list(root / 'img_idx' / 'train_NUAA-SIRST.txt', ids[:half])
  write_list(root / 'img_idx' / 'test_NUAA-SIRST.txt', ids[half:])
  return examples


def write_uavb(root: pathlib.Path, train, test) -> dict[str, Example]:
  """SIRST-UAVB as it unpacks: images/all/<id>.jpg, masks/<id>.jpg, train.txt, val.txt."""
  examples = {}
  for i in list(train) + list(test):
    ex = make_example(i, (32, 28))
    examples[i] = ex
    save(root / 'images' / 'all' / f'{i}.jpg', ex.image, 'L')
    save(root / 'masks' / f'{i}.jpg', ex.mask * 255)
  write_list(root / 'train.txt', train)
  write_list(root / 'val.txt', test)
  return examples


def write_sirst3(root: pathlib.Path) -> dict[str, Example]:
  """The three SIRST3 parts side by side, each in its own official layout."""
  examples = write_nuaa(root / 'NUAA-SIRST', 4)
  examples.update(write_folder(root / 'NUDT-SIRST', 'dnanet', train=['000001', '000002'],
                               test=['000003'], crlf=True))
  examples.update(write_folder(root / 'IRSTD-1k', 'irstd1k', train=['XDU0', 'XDU1', 'XDU2'],
                               test=['XDU3', 'XDU4']))
  return examples


def write_dummy_data() -> None:
  """The builders' dummy_data/: each dataset's official layout, a few tiny images."""
  builders = REPO / 'tfds_builders'
  # IRSTD-1k: RGB png images, L masks, one stray 64-valued mask pixel (as in the real data).
  d = builders / 'irstd1k' / 'dummy_data'
  write_folder(d, 'irstd1k', train=[f'XDU{i}' for i in range(5)],
               test=[f'XDU{i}' for i in range(5, 7)], image_mode='RGB')
  label = np.asarray(Image.open(d / 'IRSTD1k_Label' / 'XDU0.png')).copy()
  label[0, -1] = 64
  Image.fromarray(label).save(d / 'IRSTD1k_Label' / 'XDU0.png')
  # NUDT-SIRST: DNANet layout, RGB png images, CRLF split lists (as the official ones).
  write_folder(builders / 'nudt_sirst' / 'dummy_data', 'dnanet',
               train=[f'{i:06d}' for i in range(1, 6)], test=[f'{i:06d}' for i in range(6, 8)],
               crlf=True)
  # SIRST-UAVB as it unpacks: images/all/<id>.jpg, jpg masks, train.txt / val.txt.
  d = builders / 'sirst_uavb' / 'dummy_data'
  shutil.rmtree(d, ignore_errors=True)
  write_uavb(d, [f'uavb_{i:04d}' for i in range(5)], [f'uavb_{i:04d}' for i in range(5, 7)])
  # NUAA-SIRST: mixed modes, _pixels0 masks with .xml beside them, ACM and BasicIRSTD lists.
  write_nuaa(builders / 'nuaa_sirst' / 'dummy_data', 8)
  # SIRST3: the three parts' folders.
  write_sirst3(builders / 'sirst3' / 'dummy_data')
  # BasicIRSTD's datasets/ folder holding one dataset.
  write_folder(builders / 'basicirstd' / 'dummy_data' / 'MyData', 'basicirstd',
               train=[f'my{i}' for i in range(5)], test=['my5', 'my6'])
  # A user's folder: ACM/SIRST names (idx_427/, _pixels0 masks), palette images, bmp masks.
  write_folder(builders / 'irstd_folder' / 'dummy_data', 'sirst',
               train=[f'Misc_{i}' for i in range(1, 6)], test=[f'Misc_{i}' for i in range(6, 8)],
               image_mode='P', mask_ext='.bmp')


if __name__ == '__main__':
  write_dummy_data()
  sys.exit(0)
