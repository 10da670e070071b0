"""Ablation row a3_gaussian_pinwheel: L1 + Gaussian-pinwheel spatial attention (one sigma per block).

    python main.py --config=configs/ablation/a3_gaussian_pinwheel.py --workdir=runs/ablation/a3_gaussian_pinwheel
"""
from configs import full_model


def get_config(dataset: str = 'irstd1k'):
  config = full_model.dataset_config(dataset)
  config.loss.scale_weight = 'diff'
  config.loss.location = 'mass'
  config.model.spatial_attention = 'gaussian_pinwheel'
  config.model.stem_conv = 'plain'
  return config
