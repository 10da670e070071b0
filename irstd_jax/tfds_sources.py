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

The second half of this module is what the four builders share (features, configs, split and
example generation), so each builder file only names its dataset.

    python -m irstd_jax.tfds_sources nudt_sirst --manual_dir=../shared/data/NUDT-SIRST
builds a dataset ahead of time and prints its per-split totals.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import logging
import os
import pathlib
import re
import shutil
import sys
import time
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from irstd_jax import errors
from irstd_jax import raw_data

NAMES = ('irstd1k', 'nudt_sirst', 'sirst_uavb', 'irstd_folder')
SPLITS = ('train', 'validation', 'test')
DEFAULT_VAL_FRACTION = 0.1


class DatasetNotFoundError(errors.UserError, FileNotFoundError):
  """The raw files are not in the manual directory; the message says what to put where."""


def default_data_dir() -> pathlib.Path:
  """$TFDS_DATA_DIR, else ~/tensorflow_datasets (TFDS's own default)."""
  return pathlib.Path(os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')).expanduser()


def _paths(name, data_dir, manual_dir):
  if name not in NAMES:
    raise ValueError(f'unknown dataset {name!r}; expected one of {NAMES} (or "synthetic")')
  data_dir = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()
  manual = (pathlib.Path(manual_dir).expanduser() if manual_dir
            else data_dir / 'downloads' / 'manual' / name)
  return data_dir, manual


def builder_class(name: str):
  """The `Builder` class of tfds_builders/<name> (imported on demand)."""
  if name not in NAMES:
    raise ValueError(f'unknown dataset {name!r}; expected one of {NAMES}')
  return importlib.import_module(f'tfds_builders.{name}.{name}_dataset_builder').Builder


def _config_for(name, manual, val_fraction, mask_threshold=None):
  """The builder config: 'val10' style for the named datasets; for irstd_folder, one per
  raw folder and content (its name, a hash of its absolute path and raw_data.fingerprint
  of its lists and files), so two folders never share a build, and a folder whose files
  changed is built afresh rather than read from a stale build."""
  tag = val_config_name(val_fraction)
  if mask_threshold is not None:
    tag += f'_mask{mask_threshold}'
  if name != 'irstd_folder':
    if tag in {c.name for c in builder_class(name).BUILDER_CONFIGS}:
      return tag
    return IrstdConfig(name=tag, val_fraction=val_fraction, mask_threshold=mask_threshold,
                       description=(f'{val_fraction:g} of the official train list held out '
                                    'as validation'))
  resolved = str(manual.resolve())
  slug = re.sub(r'[^a-z0-9]+', '_', manual.resolve().name.lower()).strip('_')[:40] or 'data'
  digest = hashlib.sha1(resolved.encode()).hexdigest()[:8]
  try:
    content = raw_data.fingerprint(raw_data.find_layout(manual, dataset=name))[:8]
  except (raw_data.RawDataError, OSError):  # no layout: _require_raw_files says why
    content = 'nolayout'
  return IrstdConfig(name=f'{slug}_{digest}_{content}_{tag}', val_fraction=val_fraction,
                     mask_threshold=mask_threshold,
                     description=f'raw folder {resolved} (content {content})')


def _require_raw_files(name, manual):
  instructions = raw_data.manual_instructions(name, manual)
  if not manual.is_dir() or not any(manual.iterdir()):
    state = 'does not exist' if not manual.exists() else 'is empty'
    raise DatasetNotFoundError(
        f'{raw_data.DATASETS[name].title}: the manual directory {manual} {state}, so the '
        'dataset cannot be built', 'data.manual_dir',
        'put the downloaded files there as below (nothing is downloaded at run time)',
        details=instructions)
  try:
    raw_data.find_layout(manual, dataset=name)
  except raw_data.RawDataError as e:
    raise DatasetNotFoundError(
        f'{raw_data.DATASETS[name].title}: no dataset recognised in {manual}',
        'data.manual_dir', 'arrange the files as below',
        details=f'{e.issues[0]}\n{instructions}') from e


_REBUILT: set = set()  # builds this process already remade (rebuild=True remakes each once)


def build(name: str, *, data_dir: str = '', manual_dir: str = '',
          val_fraction: float = DEFAULT_VAL_FRACTION, rebuild: bool = False,
          mask_threshold: int | None = None):
  """Returns the prepared builder of `name`, building it from the raw files if needed.

  `rebuild` removes an existing build of this config first (once per process, so the
  three splits of one run share one rebuild); `mask_threshold`: raw_data.load_sample.

  Raises:
    DatasetNotFoundError: the manual directory is missing, empty or holds no dataset.
    raw_data.RawDataError: the raw files are bad (the message names each file). Nothing of
      the failed build is left behind in data_dir.
  """
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f'val_fraction must be in [0, 1), got {val_fraction}')
  data_dir, manual = _paths(name, data_dir, manual_dir)
  config = _config_for(name, manual, val_fraction, mask_threshold)
  builder = builder_class(name)(data_dir=os.fspath(data_dir), config=config,
                                file_format='array_record')
  key = (os.fspath(data_dir), name, builder.builder_config.name)
  if rebuild and key not in _REBUILT and builder.is_prepared():
    _require_raw_files(name, manual)  # never delete a build that cannot be remade
    shutil.rmtree(data_dir / name / builder.builder_config.name)
    logging.info('%s: removed the build %s to rebuild it', name, builder.builder_config.name)
    builder = builder_class(name)(data_dir=os.fspath(data_dir), config=config,
                                  file_format='array_record')
  _REBUILT.add(key)
  if builder.is_prepared():
    return builder
  _require_raw_files(name, manual)
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
               val_fraction: float = DEFAULT_VAL_FRACTION, rebuild: bool = False,
               mask_threshold: int | None = None) -> Sequence[dict]:
  """Returns a random-access source of one split of a real dataset.

  Args:
    name: 'irstd1k', 'nudt_sirst', 'sirst_uavb' or 'irstd_folder' (any folder of images,
      masks and split lists; manual_dir is then required).
    split: 'train' (the official train list minus validation), 'validation' (carved from
      the official train list by a hash of the id) or 'test' (the official test list).
    data_dir: where TFDS keeps built datasets; '' -> $TFDS_DATA_DIR or ~/tensorflow_datasets.
    manual_dir: the raw files; '' -> <data_dir>/downloads/manual/<name>.
    val_fraction: share of the official train list held out as 'validation'.
    rebuild, mask_threshold: see build.

  Returns:
    A `Sequence[dict]` (TFDS ArrayRecordDataSource) of {'image', 'mask', 'id',
    'num_targets', 'target_area'} records; see the module docstring.

  Raises:
    DatasetNotFoundError: the manual directory is missing or empty; the message says which
      folder to create and what to put in it.
    raw_data.RawDataError: the raw files are bad; nothing half-built is left behind.
  """
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')
  if name == 'irstd_folder' and not manual_dir:
    raise errors.UserError('irstd_folder needs the raw folder', 'data.manual_dir',
                           'pass the folder with images/, masks/ and the split lists '
                           '(python -m irstd_jax.validate_dataset FOLDER checks it)')
  builder = build(name, data_dir=data_dir, manual_dir=manual_dir, val_fraction=val_fraction,
                  rebuild=rebuild, mask_threshold=mask_threshold)
  if split not in builder.info.splits:
    raise errors.UserError(
        f'{name} ({builder.builder_config.name}) has no {split!r} split: it had no examples '
        f'(splits: {sorted(builder.info.splits)})',
        'data.val_fraction' if split == 'validation' else 'data.manual_dir',
        'a validation split needs val_fraction > 0 and at least 2 training ids; set '
        'train.eval_every_epochs=0 to train without one' if split == 'validation' else
        'fix the raw folder (python -m irstd_jax.validate_dataset FOLDER), then rebuild')
  return builder.as_data_source(split)


# -- shared by the builders in tfds_builders/ -------------------------------------------------

@dataclasses.dataclass(eq=False)
class IrstdConfig(tfds.core.BuilderConfig):
  """Builder config: how much of the train list is validation, and optional layout overrides.

  Attributes:
    val_fraction: share of the official train list held out as 'validation'.
    mask_threshold: mask pixels > this are target (None: raw_data's default rule).
    layout: force one of raw_data.LAYOUTS (None: detect).
    images, masks, train_list, test_list: explicit paths inside the manual directory.
  """
  val_fraction: float = DEFAULT_VAL_FRACTION
  mask_threshold: int | None = None  # raw_data.load_sample; None: the default rule
  layout: str | None = None
  images: str | None = None
  masks: str | None = None
  train_list: str | None = None
  test_list: str | None = None


def val_config_name(val_fraction: float) -> str:
  """0.1 -> 'val10', 0.125 -> 'val12p5', 0 -> 'val0'."""
  return 'val' + f'{val_fraction * 100:g}'.replace('.', 'p')


def builder_configs() -> list[IrstdConfig]:
  """The predefined configs: 'val10' (the default) and 'val0' (train on the whole list)."""
  return [IrstdConfig(name='val10', val_fraction=0.1,
                      description='10% of the official train list held out as validation'),
          IrstdConfig(name='val0', val_fraction=0.0,
                      description='no validation split: train is the whole official list')]


def features() -> tfds.features.FeaturesDict:
  # Images go in as PNG bytes we encode ourselves: TFDS then writes them without
  # TensorFlow (numpy arrays would go through tf.image), and reads them back with Pillow.
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 1), dtype=np.uint8,
                                   encoding_format='png', doc='grey image, uint8'),
      'mask': tfds.features.Image(shape=(None, None, 1), dtype=np.uint8,
                                  encoding_format='png', doc='binary target mask, {0, 1}'),
      'id': tfds.features.Text(doc='official image id'),
      'num_targets': tfds.features.Scalar(dtype=np.int32,
                                          doc='8-connected components of the mask'),
      'target_area': tfds.features.Scalar(dtype=np.int32, doc='target pixels'),
  })


def dataset_info(builder, homepage: str | None) -> tfds.core.DatasetInfo:
  return builder.dataset_info_from_configs(
      features=features(), supervised_keys=('image', 'mask'), homepage=homepage)


def split_generators(builder, dl_manager) -> dict:
  """Finds and checks the raw folder, then returns one example generator per split.

  Every file is decoded and checked before anything is written, so bad data fails fast with
  the validator's messages; the few problems only writing can meet raise the same errors.
  """
  config = builder.builder_config
  layout = raw_data.find_layout(
      dl_manager.manual_dir, dataset=builder.name, layout=config.layout, images=config.images,
      masks=config.masks, train_list=config.train_list, test_list=config.test_list)
  threshold = getattr(config, 'mask_threshold', None)
  report = raw_data.scan(layout, dataset=builder.name, mask_threshold=threshold)
  logging.info('%s: %s', builder.name, layout.describe())
  for issue in report.warnings[:20]:
    logging.warning('%s: %s', builder.name, issue)
  if len(report.warnings) > 20:
    logging.warning('%s: ... and %d more warnings', builder.name, len(report.warnings) - 20)
  if report.errors:
    raise raw_data.RawDataError.from_issues(report.errors, layout.root)
  train, validation = raw_data.carve_validation(report.entries['train'], config.val_fraction)
  splits = {'train': train, 'validation': validation, 'test': report.entries['test']}
  # TFDS refuses a split with no examples (e.g. validation of a one-image train list).
  return {split: generate_examples(entries, mask_threshold=threshold)
          for split, entries in splits.items() if entries}


def generate_examples(entries: Sequence[raw_data.Entry], *, mask_threshold: int | None = None
                      ) -> Iterator[tuple[str, dict]]:
  for entry in entries:
    sample, issues = raw_data.load_sample(entry, mask_threshold=mask_threshold)
    if sample is None:
      raise raw_data.RawDataError.from_issues(issues, entry.image.parent.parent)
    yield entry.id, {
        'image': raw_data.encode_png(sample.image),
        'mask': raw_data.encode_png(sample.mask),
        'id': entry.id,
        'num_targets': sample.num_targets,
        'target_area': sample.target_area,
    }


# -- command line -----------------------------------------------------------------------------

def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m irstd_jax.tfds_sources',
      description='Build a dataset from its manual directory and print per-split totals.')
  parser.add_argument('name', choices=NAMES)
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--manual_dir', default='')
  parser.add_argument('--val_fraction', type=float, default=DEFAULT_VAL_FRACTION)
  parser.add_argument('--mask_threshold', type=int, default=None,
                      help='mask pixels > this are target (default: raw_data\'s rule)')
  parser.add_argument('--rebuild', action='store_true',
                      help='remove an existing build of this dataset and config first')
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    builder = build(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir,
                    val_fraction=args.val_fraction, rebuild=args.rebuild,
                    mask_threshold=args.mask_threshold)
  except (DatasetNotFoundError, raw_data.RawDataError) as e:
    print(e, file=sys.stderr)
    return 1
  print(f'{builder.info.full_name} at {builder.data_dir} '
        f'({time.perf_counter() - start:.1f} s)')
  for split in SPLITS:
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
