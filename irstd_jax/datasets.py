"""Which source a config's `data.name` and a split resolve to.

The dataset registry (irstd_jax.dataset_registry) names each dataset's loader: the built-in
scene generator for 'synthetic' (no files needed), TFDS builders from `tfds_builders/`, built
from their manual directory on first use, for every other one. Loaders are imported on first
use, so the synthetic default never pulls in tensorflow_datasets.
"""
from __future__ import annotations

from typing import Sequence

from irstd_jax import dataset_registry


def load_split(data_config, split: str, *, seed: int = 0) -> Sequence[dict]:
  """Returns a random-access source of {'image', 'mask', 'id'} records.

  Args:
    data_config: the `config.data` ConfigDict.
    split: 'train', 'validation' (carved from the official train list, or the official
      validation list where one exists) or 'test'.
    seed: seed of the synthetic generator (ignored for real datasets).

  Raises:
    tfds_sources.DatasetNotFoundError: the raw files of a real dataset are missing; the
      message says which folder to create and what to put in it.
  """
  if split not in dataset_registry.SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {dataset_registry.SPLITS}')
  return dataset_registry.loader(data_config.name)(data_config, split, seed=seed)
