"""MSHNet + the paper's diff-based scale loss on any dataset in BasicIRSTD's layout:
<Name>/images, <Name>/masks, <Name>/img_idx/{train,test}_<Name>.txt.

    python main.py --config=configs/basicirstd.py --workdir=runs/mine \
        --config.data.manual_dir=BasicIRSTD/datasets --config.data.subset=NUDT-SIRST
"""
from configs import base


def get_config():
  return base.get_config('basicirstd')
