"""Any dataset in BasicIRSTD's layout: <Name>/images, <Name>/masks, <Name>/img_idx/.

    python -m irstd_jax.tfds_sources basicirstd --manual_dir=BasicIRSTD/datasets --subset=<Name>
"""
from tfds_builders import base


class Builder(base.IrstdBuilder):
  """One dataset of a BasicIRSTD datasets/ folder (registry entry basicirstd)."""
