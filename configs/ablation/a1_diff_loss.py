"""Ablation row a1_diff_loss: the diff-based scale loss (L1) alone, CBAM spatial attention.

    python main.py --config=configs/ablation/a1_diff_loss.py --workdir=runs/ablation/a1_diff_loss
"""
from configs import full_model


def get_config(dataset: str = 'irstd1k'):
  config = full_model.dataset_config(dataset)
  config.loss.scale_weight = 'diff'
  config.loss.location = 'mass'
  config.model.spatial_attention = 'cbam'
  config.model.stem_conv = 'plain'
  return config
