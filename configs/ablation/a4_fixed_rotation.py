"""Ablation row a4_fixed_rotation: L1 + 4 fixed rotations of the Gaussian pinwheel, max-response routing.

    python main.py --config=configs/ablation/a4_fixed_rotation.py --workdir=runs/ablation/a4_fixed_rotation
"""
from configs import full_model


def get_config(dataset: str = 'irstd1k'):
  config = full_model.dataset_config(dataset)
  config.loss.scale_weight = 'diff'
  config.loss.location = 'mass'
  config.model.spatial_attention = 'fixed_rotation'
  config.model.attention.num_rotations = 4
  config.model.stem_conv = 'plain'
  return config
