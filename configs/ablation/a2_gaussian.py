"""Ablation row a2_gaussian: L1 + a plain learnable Gaussian (no pinwheel mask) as spatial attention.

    python main.py --config=configs/ablation/a2_gaussian.py --workdir=runs/ablation/a2_gaussian
"""
from configs import full_model


def get_config(dataset: str = 'irstd1k'):
  config = full_model.dataset_config(dataset)
  config.loss.scale_weight = 'diff'
  config.loss.location = 'mass'
  config.model.spatial_attention = 'gaussian'
  config.model.stem_conv = 'plain'
  return config
