"""The listed examples of a raw folder: split lists read, each id paired with its files.

`collect(layout)` reads each split list (`read_split_list`: CRLF, BOM, comments, names with
folders or extensions) and pairs every id with one image and one mask file (`Entry`),
reporting missing, ambiguous and unlisted files and ids listed in two splits. No file is
decoded here (irstd_jax.raw_data does that).
"""
from __future__ import annotations

import collections
import dataclasses
import pathlib

from irstd_jax.raw_data import IMAGE_EXTENSIONS, MASK_SUFFIX
from irstd_jax.raw_issues import Issue, error, warning
from irstd_jax.raw_layout import Layout

_MAX_EXAMPLES = 5  # ids quoted in one aggregated message


def read_split_list(path: pathlib.Path) -> tuple[list[str], list[Issue]]:
  """Reads ids, one a line: CRLF/CR/LF, a UTF-8 BOM, blank lines, `#` comments, and names
  given with a folder or an image extension (images/XDU0.png -> XDU0) are all accepted."""
  ids, issues, seen = [], [], set()
  try:
    text = path.read_bytes().decode('utf-8-sig')
  except (OSError, UnicodeDecodeError) as e:
    return [], [error('unreadable', path, f'cannot read split list: {e}')]
  for line in text.splitlines():
    item = line.strip()
    if not item or item.startswith('#'):
      continue
    item = item.replace('\\', '/').rsplit('/', 1)[-1]
    stem, dot, ext = item.rpartition('.')
    if dot and '.' + ext.lower() in IMAGE_EXTENSIONS:
      item = stem
    if item in seen:
      issues.append(warning('duplicate_id', path, f'{item!r} listed twice (kept once)'))
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
        issues.append(error('missing_image', src.image_dir / i,
                             f'{i!r} is listed in {where} but has no image file'))
      if not masks:
        issues.append(error('missing_mask', src.mask_dir / i,
                             f'{i!r} is listed in {where} but has no mask file'))
      for files in (images, masks):
        if len(files) > 1:
          issues.append(error('ambiguous_file', files[0],
                               'several files for one id: ' + ', '.join(f.name for f in files)))
      if len(images) == 1 and len(masks) == 1:
        entries[split].append(Entry(i, images[0], masks[0]))
    listed[split] = set(ids)
    if not ids:
      issues.append(error('empty_split', src.list_file or src.image_dir,
                           f'the {split} split has no examples ('
                           + ('the list holds no ids' if src.list_file else 'no images')
                           + '); training needs a train split and evaluation a test split'))
  for k, a in enumerate(layout.splits):
    for b in layout.splits[k + 1:]:
      src = getattr(layout, b)
      for i in sorted(listed[a] & listed[b]):
        issues.append(error('id_in_two_splits', src.list_file or src.image_dir,
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
        issues.append(warning(code, d, f'{len(ids)} {what}: {_examples(ids)}'))
  return entries, issues
