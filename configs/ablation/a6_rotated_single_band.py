"""Ablation row a6_rotated_single_band: L1 + learnable rotation of a single line band (the paper's code).

    python main.py --config=configs/ablation/a6_rotated_single_band.py --workdir=runs/ablation/a6_rotated_single_band
"""
from configs import full_model


def get_config(dataset: str = 'irstd1k'):
  config = full_model.dataset_config(dataset)
  config.loss.scale_weight = 'diff'
  config.loss.location = 'mass'
  config.model.spatial_attention = 'rotated_pinwheel'
  config.model.attention.num_arms = 1
  config.model.attention.straight_through = True
  config.model.stem_conv = 'plain'
  return config
