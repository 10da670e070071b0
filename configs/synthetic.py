"""The built-in default: procedurally generated infrared scenes, no download needed.

Sized so the whole run (train, validate, test) takes minutes on a 2-core CPU: a
half-width MSHNet on 96x96 scenes, 16 epochs of 1200 images; targets keep their real
sizes (1-81 px). Otherwise the paper's recipe (Adagrad 0.05, constant, batch 4, one
warm-up epoch, the L1 scale loss).

    python main.py --config=configs/synthetic.py --workdir=runs/synthetic
"""
from configs import base


def get_config():
  config = base.get_config('synthetic')
  config.data.synthetic.image_size = 96
  config.data.synthetic.num_train = 1200
  config.data.synthetic.num_val = 100
  config.data.synthetic.num_test = 200
  config.data.crop_size = 96
  # [0.75, 1.5] x the scene size, narrower than the recipe's [0.5, 2]: at 0.5x the 1-4 px
  # targets shrink below a pixel and their labels become noise, and at 2x the largest
  # targets stop looking small; a 16-epoch run cannot afford either.
  config.data.resize_range = (72, 144)
  config.model.widths = (8, 16, 32, 64, 128)
  config.train.batch_size = 4  # the recipe's batch: twice the updates of batch 8 per image
  config.train.num_epochs = 16
  config.train.warm_epochs = 1
  config.train.log_every_steps = 50
  config.train.checkpoint_every_steps = 500
  config.train.eval_every_epochs = 2
  config.eval.batch_size = 8
  return config
