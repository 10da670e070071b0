"""MSHNet + the paper's diff-based scale loss on NUDT-SIRST (663 / 664, 256x256).

Put the raw files in <data_dir>/downloads/manual/nudt_sirst (see tfds_builders/nudt_sirst),
or point at them: --config.data.manual_dir=../shared/data/NUDT-SIRST

    python main.py --config=configs/nudt_sirst.py --workdir=runs/nudt_sirst
"""
from configs import base


def get_config():
  return base.get_config('nudt_sirst')
