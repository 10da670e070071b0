"""MSHNet + the paper's diff-based scale loss on NUAA-SIRST (SIRST v1, 427 real images).

Two named splits (data.split_lists): 'basicirstd' (the default; BasicIRSTD's 213 / 214 lists,
validation carved from train) and 'acm' (idx_427: train.txt + the official val.txt / test.txt,
341 / 86). Put the raw files in <data_dir>/downloads/manual/nuaa_sirst (see
tfds_builders/nuaa_sirst), or point at them with --config.data.manual_dir. One image's mask
has another size in some copies: the build names it; --config.data.drop_size_mismatch=True
drops such pairs instead.

    python main.py --config=configs/nuaa_sirst.py --workdir=runs/nuaa_sirst
    python main.py --config=configs/nuaa_sirst.py --workdir=runs/nuaa_acm --config.data.split_lists=acm
"""
from configs import base


def get_config():
  return base.get_config('nuaa_sirst')
