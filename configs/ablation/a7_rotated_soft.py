"""Ablation row a7_rotated_soft: L1 + learnable rotated pinwheel with the soft mask in the forward pass
(no straight-through estimator).

    python main.py --config=configs/ablation/a7_rotated_soft.py --workdir=runs/ablation/a7_rotated_soft
"""
from configs import full_model


def get_config(dataset: str = 'irstd1k'):
  config = full_model.dataset_config(dataset)
  config.loss.scale_weight = 'diff'
  config.loss.location = 'mass'
  config.model.spatial_attention = 'rotated_pinwheel'
  config.model.attention.num_arms = 4
  config.model.attention.straight_through = False
  config.model.stem_conv = 'plain'
  return config
