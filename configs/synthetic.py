"""The built-in default: procedurally generated infrared scenes, no download needed.

Sized so the whole run (train, validate, test) takes a few minutes on a 2-core CPU: a
half-width MSHNet on 96x96 scenes, 6 epochs of 1000 images, with the paper's recipe
(Adagrad, batch 4, a warm-up epoch, the L1 scale loss) except for three choices made for a
short run, each measured over seeds (README, "Quick start"):

    python main.py --config=configs/synthetic.py --workdir=runs/synthetic
"""
from configs import base


def get_config():
  config = base.get_config('synthetic')
  config.data.synthetic.image_size = 96
  config.data.synthetic.num_train = 1000
  config.data.synthetic.num_val = 100
  config.data.synthetic.num_test = 200
  config.data.crop_size = 96
  # No scale augmentation: the scenes already hold targets of every size (1-81 px), and
  # rescaling made the largest targets and the smallest clutter the same size, so the
  # network learned to reject large targets (Pd 0.61 on targets over 50 px).
  config.data.resize_range = (96, 96)
  config.model.widths = (8, 16, 32, 64, 128)
  # The recipe's batch. Larger batches run faster per image at this size (1.3x at 8, 1.6x at
  # 16) but did worse on seed 0: batch 8 (rate 0.1) ended at test Pd 0.906; batch 16 (rate
  # 0.2) collapsed when its 62-step warm-up ended (99.8 % of pixels positive at epoch 4).
  config.train.batch_size = 4
  config.train.num_epochs = 6
  config.train.warm_epochs = 1
  # Twice the recipe's rate, annealed to zero over the run. With the recipe's 0.05 (and the
  # same cosine schedule) 1,500 steps left test Pd at 0.92, 0.87 and 0.80 for seeds 0-2;
  # 0.1 reached 0.93 on each. (The cosine schedule came from the runs that chose the
  # length; a constant rate was not compared at this setting.)
  config.optim.learning_rate = 0.1
  config.optim.schedule = 'cosine'
  config.train.log_every_steps = 50
  config.train.checkpoint_every_steps = 500
  config.train.eval_every_epochs = 2
  config.eval.batch_size = 8
  return config
