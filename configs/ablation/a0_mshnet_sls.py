"""Ablation row a0_mshnet_sls: MSHNet (CVPR 2024) as published: SLS loss (L2 alpha, MSHNet's plain-mean
location loss), CBAM spatial attention.

    python main.py --config=configs/ablation/a0_mshnet_sls.py --workdir=runs/ablation/a0_mshnet_sls
"""
from configs import full_model


def get_config(dataset: str = 'irstd1k'):
  config = full_model.dataset_config(dataset)
  config.loss.scale_weight = 'variance'
  config.loss.location = 'mean'
  config.loss.location_skip_empty = False  # the reference's behaviour on empty labels
  config.model.spatial_attention = 'cbam'
  config.model.stem_conv = 'plain'
  return config
