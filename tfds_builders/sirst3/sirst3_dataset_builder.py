"""SIRST3: NUAA-SIRST + NUDT-SIRST + IRSTD-1k by BasicIRSTD's lists, 1,676 / 1,079.

    python -m irstd_jax.tfds_sources sirst3 --manual_dir=PATH/HOLDING/THE/THREE/FOLDERS
"""
from tfds_builders import base


class Builder(base.IrstdBuilder):
  """SIRST3 from three manual folders (registry entry sirst3)."""
