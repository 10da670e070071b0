"""Which source a config's `data.name` and a split resolve to.

'synthetic' is the built-in scene generator (no files needed); every other name is a TFDS
builder from `tfds_builders/`, built from its manual directory on first use.
"""
from __future__ import annotations

from typing import Sequence

from irstd_jax import synthetic

SPLITS = ('train', 'validation', 'test')


def load_split(data_config, split: str, *, seed: int = 0) -> Sequence[dict]:
  """Returns a random-access source of {'image', 'mask', 'id'} records.

  Args:
    data_config: the `config.data` ConfigDict.
    split: 'train', 'validation' (carved from the official train list) or 'test'.
    seed: seed of the synthetic generator (ignored for real datasets).

  Raises:
    tfds_sources.DatasetNotFoundError: the raw files of a real dataset are missing; the
      message says which folder to create and what to put in it.
  """
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')
  if data_config.name == 'synthetic':
    syn = data_config.synthetic
    sizes = {'train': syn.num_train, 'validation': syn.num_val, 'test': syn.num_test}
    return synthetic.SyntheticSource(
        split, sizes[split], seed=seed,
        cfg=synthetic.SceneConfig(image_size=syn.image_size))
  # Imported lazily: building TFDS datasets pulls in tensorflow_datasets, which the
  # synthetic default never needs.
  from irstd_jax import tfds_sources  # pylint: disable=g-import-not-at-top
  return tfds_sources.load_split(data_config.name, split, data_dir=data_config.data_dir,
                                 manual_dir=data_config.manual_dir,
                                 val_fraction=data_config.val_fraction,
                                 rebuild=data_config.get('rebuild', False),
                                 mask_threshold=data_config.get('mask_threshold', None))
