"""The one TFDS builder every dataset folder here subclasses.

A dataset folder `tfds_builders/<name>/<name>_dataset_builder.py` holds only

    class Builder(base.IrstdBuilder):
      '''<one line>'''

plus README.md (the description), CITATIONS.bib, dummy_data/ and a test. Everything else
comes from the dataset's entry in irstd_jax.dataset_registry (manual-download instructions,
homepage, named splits, the predefined configs) and from irstd_jax.dataset_splits (which
examples go where). Records:

  'image': uint8 [H, W, 1]      grey image (converted from RGB/RGBA/palette when needed)
  'mask': uint8 [H, W, 1]       {0, 1}
  'id': str                     the official image id, e.g. 'XDU0'
  'num_targets': int32          8-connected components of the mask
  'target_area': int32          target pixels

Stored as array_record (random access for tfds.data_source and grain; no TensorFlow).
Dependencies point one way: tfds_builders -> irstd_jax.{dataset_registry, dataset_splits,
raw_*}; nothing in irstd_jax imports a builder but tfds_sources, which loads one by name.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import pathlib
import re
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from irstd_jax import dataset_registry
from irstd_jax import dataset_splits
from irstd_jax import raw_data
from irstd_jax import raw_layout
from irstd_jax.raw_entries import Entry
from irstd_jax.raw_issues import RawDataError

_MAX_LOGGED_WARNINGS = 20


def _options(self) -> dataset_splits.Options:
  """The dataset_splits.Options this config builds with."""
  return dataset_splits.Options(**{f.name: getattr(self, f.name)
                                   for f in dataclasses.fields(dataset_splits.Options)})


# Builder config: TFDS's BuilderConfig fields (name, description, ...) plus every field of
# dataset_splits.Options with its default, so the two never disagree. Made from Options'
# fields rather than inheriting from Options: Options is frozen, BuilderConfig is not.
IrstdConfig = dataclasses.make_dataclass(
    'IrstdConfig',
    [(f.name, f.type, dataclasses.field(default=f.default))
     for f in dataclasses.fields(dataset_splits.Options)],
    bases=(tfds.core.BuilderConfig,), eq=False,
    namespace={'options': _options, '__module__': __name__,
               '__doc__': 'Builder config: the fields of dataset_splits.Options (see there).'})


def val_config_name(val_fraction: float) -> str:
  """0.1 -> 'val10', 0.125 -> 'val12p5', 0 -> 'val0'."""
  return 'val' + f'{val_fraction * 100:g}'.replace('.', 'p')


def config_name(dataset: str, options: dataset_splits.Options,
                manual_dir: str | pathlib.Path | None = None) -> str:
  """The config name that tells builds apart: e.g. 'val10', 'acm', 'basicirstd_val0',
  'val10_dedup_exact', and for a user's folder '<folder>_<hash of its path>_val10'."""
  spec = dataset_registry.get(dataset)
  named = spec.split(options.split_lists)
  parts = []
  if spec.per_folder and manual_dir is not None:
    resolved = pathlib.Path(manual_dir).expanduser().resolve()
    label = options.subset or resolved.name
    # The folder's path and its content (raw_layout.fingerprint of its lists and files): a
    # folder whose files changed is built afresh, never read from a stale build.
    try:
      content = raw_layout.fingerprint(
          next(iter(dataset_splits.find_layouts(resolved, dataset, options).values())))[:8]
    except (RawDataError, OSError, StopIteration):  # no layout: the build says why
      content = 'nolayout'
    parts.append((re.sub(r'[^a-z0-9]+', '_', label.lower()).strip('_')[:40] or 'data') + '_'
                 + hashlib.sha1(str(resolved).encode()).hexdigest()[:8] + '_' + content)
  if len(spec.splits) > 1:
    parts.append(named.name)
  if not named.validation:
    parts.append(val_config_name(options.val_fraction))
  if options.deduplicate != 'none':
    parts.append(f'dedup_{options.deduplicate}')
  if options.drop_size_mismatch:
    parts.append('dropsize')
  if options.mask_threshold is not None:
    parts.append(f'mask{options.mask_threshold}')
  return '_'.join(parts)


def make_config(dataset: str, options: dataset_splits.Options,
                manual_dir=None) -> IrstdConfig:
  named = dataset_registry.get(dataset).split(options.split_lists)
  how = ('official validation list' if named.validation else
         f'{options.val_fraction:g} of the train list held out as validation')
  fields = dataclasses.asdict(options)
  fields['split_lists'] = named.name
  return IrstdConfig(name=config_name(dataset, options, manual_dir),
                     description=f'{named.name} split ({named.description}); {how}'
                     + (f'; raw folder {manual_dir}' if manual_dir else ''), **fields)


def predefined_configs(dataset: str) -> list[IrstdConfig]:
  """For each named split: 'val10' (the default) and 'val0' (no validation), or the one
  config of a split with an official validation list."""
  configs = []
  for named in dataset_registry.get(dataset).splits:
    fractions = (None,) if named.validation else (dataset_registry.DEFAULT_VAL_FRACTION, 0.0)
    for fraction in fractions:
      options = dataset_splits.Options(split_lists=named.name, val_fraction=fraction or 0.0)
      configs.append(make_config(dataset, options))
  return configs


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


class IrstdBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """An IRSTD dataset from its manual directory: grey images, binary masks, target counts.

  A subclass named `Builder` in `tfds_builders/<name>/<name>_dataset_builder.py` gets its
  name from the module (TFDS's rule) and everything else from the registry entry `<name>`.
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: the official split lists, validation carved '
                            'from train by a hash of the id (or the official validation list).'}

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    spec = dataset_registry.get(cls.name)
    cls.MANUAL_DOWNLOAD_INSTRUCTIONS = dataset_registry.manual_instructions(cls.name)
    cls.BUILDER_CONFIGS = predefined_configs(cls.name)
    cls.HOMEPAGE = spec.homepage

  def __init__(self, *, file_format=None, **kwargs):
    # array_record: random access for tfds.data_source and grain, and no TensorFlow.
    super().__init__(file_format=file_format or 'array_record', **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features(), supervised_keys=('image', 'mask'), homepage=self.HOMEPAGE)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Finds and checks the raw folder, then returns one example generator per split.

    Every file is decoded and checked before anything is written, so bad data fails fast with
    the validator's messages; the few problems only writing can meet raise the same errors.
    """
    plan = dataset_splits.plan(dl_manager.manual_dir, self.name,
                               self.builder_config.options())
    for note in plan.notes:
      logging.info('%s: %s', self.name, note)
    for issue in plan.warnings[:_MAX_LOGGED_WARNINGS]:
      logging.warning('%s: %s', self.name, issue)
    if len(plan.warnings) > _MAX_LOGGED_WARNINGS:
      logging.warning('%s: ... and %d more warnings', self.name,
                      len(plan.warnings) - _MAX_LOGGED_WARNINGS)
    dataset_splits.require(plan, dl_manager.manual_dir)
    # TFDS refuses a split with no examples (e.g. validation of a one-image train list).
    return {split: self._generate_examples(entries)
            for split, entries in plan.splits.items() if entries}

  def _generate_examples(self, entries: Sequence[Entry]) -> Iterator[tuple[str, dict]]:
    for entry in entries:
      sample, issues = raw_data.load_sample(
          entry, mask_threshold=self.builder_config.mask_threshold)
      if sample is None:
        raise RawDataError.from_issues(issues, entry.image.parent.parent)
      yield entry.id, {
          'image': raw_data.encode_png(sample.image),
          'mask': raw_data.encode_png(sample.mask),
          'id': entry.id,
          'num_targets': sample.num_targets,
          'target_area': sample.target_area,
      }
