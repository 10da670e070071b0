"""IRSTD-1k (ISNet, CVPR 2022): 1,001 real infrared images, 512x512, 800 trainval / 201 test.

    python -m irstd_jax.tfds_sources irstd1k --manual_dir=PATH/TO/IRSTD-1k
"""
from tfds_builders import base


class Builder(base.IrstdBuilder):
  """IRSTD-1k from the manual directory (registry entry irstd1k)."""
