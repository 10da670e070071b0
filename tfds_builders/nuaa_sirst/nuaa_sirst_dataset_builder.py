"""NUAA-SIRST / SIRST v1 (ACM, WACV 2021): 427 real infrared images of mixed sizes and modes.

Two named splits: 'basicirstd' (the default; img_idx/{train,test}_NUAA-SIRST.txt, 213 / 214)
and 'acm' (idx_427/train.txt + val.txt / test.txt, 341 / 86, with the official validation list).

    python -m irstd_jax.tfds_sources nuaa_sirst --manual_dir=PATH/TO/sirst [--split_lists=acm]
"""
from tfds_builders import base


class Builder(base.IrstdBuilder):
  """NUAA-SIRST from the manual directory (registry entry nuaa_sirst)."""
