"""Ablation row a9_gsconv: L1 + Gaussian-pinwheel attention + Gaussian-shaped convs (GSConv) in E0.

    python main.py --config=configs/ablation/a9_gsconv.py --workdir=runs/ablation/a9_gsconv
"""
from configs import full_model


def get_config(dataset: str = 'irstd1k'):
  config = full_model.dataset_config(dataset)
  config.loss.scale_weight = 'diff'
  config.loss.location = 'mass'
  config.model.spatial_attention = 'gaussian_pinwheel'
  config.model.stem_conv = 'gsconv'
  return config
