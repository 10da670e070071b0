"""The paper's full model: diff-based scale loss (L1) + Gaussian-shaped spatial attention
with the learnable rotated pinwheel mask (straight-through angle), on any dataset.

    python main.py --config=configs/full_model.py --workdir=runs/full_irstd1k
    python main.py --config=configs/full_model.py:nudt_sirst --workdir=runs/full_nudt
    python -m irstd_jax.tools.summary --config=configs/full_model.py
"""
import importlib
import importlib.util

from configs import base
from irstd_jax import dataset_registry


def dataset_config(dataset: str = 'irstd1k'):
  """The recipe on `dataset`: `configs/<dataset>.py` where a dataset has overrides of its
  own (synthetic), else configs/base.py's recipe with data.name = dataset."""
  names = dataset_registry.config_names()
  if dataset not in names:
    raise ValueError(f'unknown dataset {dataset!r}; valid: {", ".join(names)}')
  if importlib.util.find_spec(f'configs.{dataset}') is not None:
    return importlib.import_module(f'configs.{dataset}').get_config()
  return base.get_config(dataset)


def get_config(dataset: str = 'irstd1k'):
  config = dataset_config(dataset)
  config.loss.scale_weight = 'diff'
  config.loss.location = 'mass'
  config.model.spatial_attention = 'rotated_pinwheel'
  config.model.stem_conv = 'plain'
  return config
