"""Random-access sources of the real datasets, built with TFDS on first use.

`load_split(name, split)` is what `datasets.load_split` calls for every dataset but the
synthetic one. It builds `tfds_builders/<name>` from the raw files in the manual directory
the first time (array_record, read back with `as_data_source`: no TensorFlow anywhere) and
returns a `Sequence` of records:

  'image': uint8 [H, W, 1]      grey image (converted from RGB/RGBA/palette when needed)
  'mask': uint8 [H, W, 1]       {0, 1}
  'id': bytes                   the official image id, e.g. b'XDU0'
  'num_targets': int            8-connected components of the mask
  'target_area': int            target pixels

The builders themselves share one base class (tfds_builders/base.py); which datasets exist
is irstd_jax.dataset_registry's table. This module only imports a builder, never the other
way round.

    python -m irstd_jax.tfds_sources nudt_sirst --manual_dir=../shared/data/NUDT-SIRST
builds a dataset ahead of time and prints its per-split totals.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import pathlib
import shutil
import sys
import time
from typing import Sequence

import tensorflow_datasets as tfds
from absl import logging

from irstd_jax import dataset_registry
from irstd_jax import dataset_splits
from irstd_jax import errors
from irstd_jax.raw_issues import RawDataError

# The dataset_splits.Options fields a config's `data` block sets (configs/base.py) besides
# val_fraction; the others (layout, images, masks, lists) are for the Python API and the
# validator.
_CONFIG_OPTIONS = ('split_lists', 'drop_size_mismatch', 'deduplicate', 'subset',
                   'mask_threshold')


class DatasetNotFoundError(errors.UserError, FileNotFoundError):
  """The raw files are not in the manual directory; the message says what to put where."""


def default_data_dir() -> pathlib.Path:
  """$TFDS_DATA_DIR, else ~/tensorflow_datasets (TFDS's own default)."""
  return pathlib.Path(os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')).expanduser()


def _check_builder_name(name):
  if name not in dataset_registry.builder_names():
    raise ValueError(f'unknown dataset {name!r}; expected one of '
                     f'{", ".join(dataset_registry.builder_names())} (or "synthetic")')


def _paths(name, data_dir, manual_dir):
  _check_builder_name(name)
  data_dir = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()
  manual = (pathlib.Path(manual_dir).expanduser() if manual_dir
            else data_dir / 'downloads' / 'manual' / name)
  return data_dir, manual


def builder_class(name: str):
  """The `Builder` class of tfds_builders/<name> (imported on demand)."""
  _check_builder_name(name)
  return importlib.import_module(f'tfds_builders.{name}.{name}_dataset_builder').Builder


def _config_for(name, manual, options):
  """A predefined config when one fits (e.g. 'val10'); else one made for these options (and,
  for a user's folder, for this folder: two folders never share a build)."""
  from tfds_builders import base  # pylint: disable=g-import-not-at-top
  per_folder = dataset_registry.get(name).per_folder
  wanted = base.config_name(name, options, manual if per_folder else None)
  if wanted in {c.name for c in builder_class(name).BUILDER_CONFIGS}:
    return wanted
  return base.make_config(name, options, manual if per_folder else None)


def _require_raw_files(name, manual, options):
  instructions = dataset_registry.manual_instructions(name, manual)
  if not manual.is_dir() or not any(manual.iterdir()):
    state = 'does not exist' if not manual.exists() else 'is empty'
    raise DatasetNotFoundError(
        f'{dataset_registry.get(name).title}: the manual directory {manual} {state}, so the '
        'dataset cannot be built', 'data.manual_dir',
        'put the downloaded files there as below (nothing is downloaded at run time)',
        details=instructions)
  try:
    dataset_splits.find_layouts(manual, name, options)
  except RawDataError as e:
    raise DatasetNotFoundError(
        f'{dataset_registry.get(name).title}: no dataset recognised in {manual}',
        'data.manual_dir', 'arrange the files as below',
        details=f'{e.issues[0]}\n{instructions}') from e


_REBUILT: set = set()  # builds this process already remade (rebuild=True remakes each once)


def build(name: str, *, data_dir: str = '', manual_dir: str = '',
          val_fraction: float = dataset_registry.DEFAULT_VAL_FRACTION, rebuild: bool = False,
          **options):
  """Returns the prepared builder of `name`, building it from the raw files if needed.

  `options` are the other fields of dataset_splits.Options (split_lists, drop_size_mismatch,
  deduplicate, subset, mask_threshold); each combination is its own builder config.
  `rebuild` removes an existing build of this config first (once per process, so the
  three splits of one run share one rebuild).

  Raises:
    DatasetNotFoundError: the manual directory is missing, empty or holds no dataset.
    RawDataError: the raw files are bad (the message names each file). Nothing of
      the failed build is left behind in data_dir.
  """
  data_dir, manual = _paths(name, data_dir, manual_dir)
  options = dataset_splits.Options(val_fraction=val_fraction, **options)
  options.check(name)  # before anything is written
  config = _config_for(name, manual, options)
  builder = builder_class(name)(data_dir=os.fspath(data_dir), config=config,
                                file_format='array_record')
  key = (os.fspath(data_dir), name, builder.builder_config.name)
  if rebuild and key not in _REBUILT and builder.is_prepared():
    _require_raw_files(name, manual, options)  # never delete a build that cannot be remade
    shutil.rmtree(data_dir / name / builder.builder_config.name)
    logging.info('%s: removed the build %s to rebuild it', name, builder.builder_config.name)
    builder = builder_class(name)(data_dir=os.fspath(data_dir), config=config,
                                  file_format='array_record')
  _REBUILT.add(key)
  if builder.is_prepared():
    return builder
  _require_raw_files(name, manual, options)
  # TFDS writes into an incomplete.* folder and renames it on success, but leaves the
  # <name>/ and <name>/<config>/ folders it made on the way; remove those too on failure.
  made = [p for p in (data_dir / name, data_dir / name / builder.builder_config.name)
          if not p.exists()]
  downloads = data_dir / 'downloads'  # TFDS makes downloads/extracted/, empty for us
  made_downloads = not downloads.exists()
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual)))
  except BaseException:
    if made:
      shutil.rmtree(made[0], ignore_errors=True)
    if made_downloads:
      for empty in (downloads / 'extracted', downloads):
        if empty.is_dir() and not any(empty.iterdir()):
          empty.rmdir()
    raise
  return builder


def load_split(name: str, split: str, *, data_dir: str = '', manual_dir: str = '',
               val_fraction: float = dataset_registry.DEFAULT_VAL_FRACTION, rebuild: bool = False,
               **options) -> Sequence[dict]:
  """Returns a random-access source of one split of a real dataset.

  Args:
    name: a dataset of irstd_jax.dataset_registry with a builder ('irstd1k', 'nuaa_sirst',
      'sirst3', ...; for 'irstd_folder' and 'basicirstd', a user's folder, manual_dir is
      required).
    split: 'train' (the official train list minus validation), 'validation' (carved from
      the official train list by a hash of the id) or 'test' (the official test list).
    data_dir: where TFDS keeps built datasets; '' -> $TFDS_DATA_DIR or ~/tensorflow_datasets.
    manual_dir: the raw files; '' -> <data_dir>/downloads/manual/<name>.
    val_fraction: share of the official train list held out as 'validation'.
    rebuild: see build.
    **options: split_lists, drop_size_mismatch, deduplicate, subset, mask_threshold
      (dataset_splits.Options).

  Returns:
    A `Sequence[dict]` (TFDS ArrayRecordDataSource) of {'image', 'mask', 'id',
    'num_targets', 'target_area'} records; see the module docstring.

  Raises:
    DatasetNotFoundError: the manual directory is missing or empty; the message says which
      folder to create and what to put in it.
    RawDataError: the raw files are bad; nothing half-built is left behind.
  """
  if split not in dataset_registry.SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {dataset_registry.SPLITS}')
  if name in dataset_registry.DATASETS and dataset_registry.get(name).per_folder and (
      not manual_dir):
    raise errors.UserError(f'{name} needs the raw folder', 'data.manual_dir',
                           'pass the folder with images/, masks/ and the split lists '
                           '(python -m irstd_jax.validate_dataset FOLDER checks it)')
  builder = build(name, data_dir=data_dir, manual_dir=manual_dir, val_fraction=val_fraction,
                  rebuild=rebuild, **options)
  if split not in builder.info.splits:
    raise errors.UserError(
        f'{name} ({builder.builder_config.name}) has no {split!r} split: it had no examples '
        f'(splits: {sorted(builder.info.splits)})',
        'data.val_fraction' if split == 'validation' else 'data.manual_dir',
        'a validation split needs val_fraction > 0 and at least 2 training ids; set '
        'train.eval_every_epochs=0 to train without one' if split == 'validation' else
        'fix the raw folder (python -m irstd_jax.validate_dataset FOLDER), then rebuild')
  return builder.as_data_source(split)


def load_from_config(data_config, split: str, *, seed: int = 0) -> Sequence[dict]:
  """`load_split` with the arguments of a config's `data` block (the registry's loader)."""
  del seed  # the built dataset is fixed; shuffling is the input pipeline's
  # Configs written before these fields existed (a saved run's config) build as before.
  options = {f.name: data_config.get(f.name, f.default)
             for f in dataclasses.fields(dataset_splits.Options) if f.name in _CONFIG_OPTIONS}
  return load_split(data_config.name, split, data_dir=data_config.data_dir,
                    manual_dir=data_config.manual_dir, val_fraction=data_config.val_fraction,
                    rebuild=data_config.get('rebuild', False), **options)


# -- command line -----------------------------------------------------------------------------

def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m irstd_jax.tfds_sources',
      description='Build a dataset from its manual directory and print per-split totals.')
  parser.add_argument('name', choices=dataset_registry.builder_names())
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--manual_dir', default='')
  parser.add_argument('--val_fraction', type=float,
                      default=dataset_registry.DEFAULT_VAL_FRACTION)
  parser.add_argument('--split_lists', default='', help='a named split, e.g. acm for nuaa_sirst')
  parser.add_argument('--drop_size_mismatch', action='store_true',
                      help='drop image/mask pairs of different sizes instead of refusing')
  parser.add_argument('--deduplicate', default='none', choices=dataset_splits.DEDUPLICATE,
                      help='drop repeated frames and training images equal (exact) or near '
                      '(near) to a held-out image')
  parser.add_argument('--subset', default='', help='basicirstd: the <Name> to build')
  parser.add_argument('--mask_threshold', type=int, default=None,
                      help='mask pixels > this are target (default: raw_data\'s rule)')
  parser.add_argument('--rebuild', action='store_true',
                      help='remove an existing build of this dataset and config first')
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    builder = build(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir,
                    val_fraction=args.val_fraction, split_lists=args.split_lists,
                    drop_size_mismatch=args.drop_size_mismatch, deduplicate=args.deduplicate,
                    subset=args.subset, mask_threshold=args.mask_threshold,
                    rebuild=args.rebuild)
  except (DatasetNotFoundError, RawDataError, ValueError) as e:
    print(e, file=sys.stderr)
    return 1
  print(f'{builder.info.full_name} at {builder.data_dir} '
        f'({time.perf_counter() - start:.1f} s)')
  print(f'config {builder.builder_config.name}: {builder.builder_config.description}')
  for split in dataset_registry.SPLITS:
    if split not in builder.info.splits:
      print(f'{split}: no examples')
      continue
    source = builder.as_data_source(split)
    targets = area = 0
    for i in range(len(source)):
      record = source[i]
      targets += int(record['num_targets'])
      area += int(record['target_area'])
    print(f'{split}: {len(source)} images, {targets} targets, {area} target pixels')
  return 0


if __name__ == '__main__':
  sys.exit(main())
