"""MSHNet + the paper's diff-based scale loss on SIRST3 (NUAA-SIRST + NUDT-SIRST + IRSTD-1k,
1,676 train / 1,079 test by BasicIRSTD's lists), the union SCTransNet and BasicIRSTD train on.

Put the three datasets' folders side by side in <data_dir>/downloads/manual/sirst3 (see
tfds_builders/sirst3), or point at the folder holding them with --config.data.manual_dir.

    python main.py --config=configs/sirst3.py --workdir=runs/sirst3
"""
from configs import base


def get_config():
  return base.get_config('sirst3')
