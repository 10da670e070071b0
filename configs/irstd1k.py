"""MSHNet + the paper's diff-based scale loss on IRSTD-1k (800 trainval / 201 test, 512x512).

Put the raw files in <data_dir>/downloads/manual/irstd1k (see tfds_builders/irstd1k).

    python main.py --config=configs/irstd1k.py --workdir=runs/irstd1k
"""
from configs import base


def get_config():
  return base.get_config('irstd1k')
