"""Ablation row a8_pconv_sd: the AAAI 2025 baseline: PConv (k = 4, 3) in E0 + the SD loss, CBAM.

    python main.py --config=configs/ablation/a8_pconv_sd.py --workdir=runs/ablation/a8_pconv_sd
"""
from configs import full_model


def get_config(dataset: str = 'irstd1k'):
  config = full_model.dataset_config(dataset)
  config.loss.scale_weight = 'variance'
  config.loss.location = 'mean'
  config.loss.location_skip_empty = False  # the reference's behaviour on empty labels
  config.loss.dynamic = 'sd'
  config.model.spatial_attention = 'cbam'
  config.model.stem_conv = 'pconv'
  config.model.stem_pconv_k = (4, 3)
  return config
