"""MSHNet + the paper's diff-based scale loss on SIRST-UAVB (UAVs and birds, real scenes).

Put the raw files in <data_dir>/downloads/manual/sirst_uavb (see tfds_builders/sirst_uavb).

    python main.py --config=configs/sirst_uavb.py --workdir=runs/sirst_uavb
"""
from configs import base


def get_config():
  return base.get_config('sirst_uavb')
