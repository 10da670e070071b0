"""Ablation row a5_rotated_pinwheel: the full model: L1 + learnably rotated pinwheel (4 arms, STE).

    python main.py --config=configs/ablation/a5_rotated_pinwheel.py --workdir=runs/ablation/a5_rotated_pinwheel
"""
from configs import full_model


def get_config(dataset: str = 'irstd1k'):
  config = full_model.dataset_config(dataset)
  config.loss.scale_weight = 'diff'
  config.loss.location = 'mass'
  config.model.spatial_attention = 'rotated_pinwheel'
  config.model.attention.num_arms = 4
  config.model.attention.straight_through = True
  config.model.stem_conv = 'plain'
  return config
