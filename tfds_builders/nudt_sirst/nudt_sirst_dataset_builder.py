"""NUDT-SIRST (DNANet, TIP 2023): 1,327 synthetic infrared images, 256x256, 663 / 664 (50_50).

    python -m irstd_jax.tfds_sources nudt_sirst --manual_dir=PATH/TO/NUDT-SIRST
"""
from tfds_builders import base


class Builder(base.IrstdBuilder):
  """NUDT-SIRST from the manual directory (registry entry nudt_sirst)."""
