"""SIRST-UAVB (PConv + SD loss, AAAI 2025): about 3,000 real infrared images of UAVs and birds.

    python -m irstd_jax.tfds_sources sirst_uavb --manual_dir=PATH/TO/SIRST-UAVB
"""
from tfds_builders import base


class Builder(base.IrstdBuilder):
  """SIRST-UAVB from the manual directory (registry entry sirst_uavb)."""
