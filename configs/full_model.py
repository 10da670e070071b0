"""The paper's full model: diff-based scale loss (L1) + Gaussian-shaped spatial attention
with the learnable rotated pinwheel mask (straight-through angle), on any dataset.

    python main.py --config=configs/full_model.py --workdir=runs/full_irstd1k
    python main.py --config=configs/full_model.py:nudt_sirst --workdir=runs/full_nudt
    python -m irstd_jax.tools.summary --config=configs/full_model.py
"""
import importlib

from irstd_jax import dataset_registry


def dataset_config(dataset: str = 'irstd1k'):
  """The dataset config `configs/<dataset>.py` (base recipe + that dataset)."""
  names = dataset_registry.config_names()
  if dataset not in names:
    raise ValueError(f'unknown dataset {dataset!r}; valid: {", ".join(names)}')
  return importlib.import_module(f'configs.{dataset}').get_config()


def get_config(dataset: str = 'irstd1k'):
  config = dataset_config(dataset)
  config.loss.scale_weight = 'diff'
  config.loss.location = 'mass'
  config.model.spatial_attention = 'rotated_pinwheel'
  config.model.stem_conv = 'plain'
  return config
