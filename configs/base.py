"""The paper's recipe (docs/method.md section 7) on IRSTD-1k-sized inputs, for any dataset.

`get_config(dataset)` is the recipe on any dataset of irstd_jax.dataset_registry, so a new
registry entry is trainable at once (`--config=configs/base.py:<name>`, and
`configs/full_model.py:<name>` or `configs/ablation/<row>.py:<name>`). A file
`configs/<name>.py` is needed only for a dataset with overrides of its own (synthetic.py);
the others there are shorthands. Tuples, not lists, so that command-line overrides
(`--config.model.widths=(8,16,32,64,128)`) work.

    python main.py --config=configs/irstd1k.py --workdir=runs/irstd1k
    python main.py --config=configs/base.py:nudt_sirst --workdir=runs/nudt_sirst
"""
import math

import ml_collections

from irstd_jax import dataset_registry


def get_config(dataset: str = 'irstd1k') -> ml_collections.ConfigDict:
  """The recipe on `dataset` (a name of dataset_registry; ValueError naming them else)."""
  dataset_registry.get(dataset)
  config = ml_collections.ConfigDict()
  config.seed = 0

  # -- network (docs/method.md section 5) -----------------------------------------------------
  config.model = ml_collections.ConfigDict()
  config.model.in_channels = 1
  # Stem/E0, E1, E2, E3 and the middle stage; MSHNet uses (16, 32, 64, 128, 256).
  config.model.widths = (16, 32, 64, 128, 256)
  # Res blocks per encoder stage E1..E3 / middle / decoder stage (MSHNet: 2 each).
  config.model.blocks_per_stage = 2
  config.model.channel_reduction = 16
  # cbam (MSHNet) | gaussian_pinwheel (the paper) | rotated_pinwheel (learnable angle,
  # straight-through) | fixed_rotation (n rotations, max-response routing) | gaussian.
  config.model.spatial_attention = 'cbam'
  # Options of the spatial attention; each kind takes the fields it has and ignores the
  # rest (spatial_attention.options_for), so one block serves every ablation row.
  config.model.attention = ml_collections.ConfigDict()
  config.model.attention.size = 7  # kernel size of every kind
  config.model.attention.sigma_init = 1.5
  config.model.attention.theta_init = math.pi / 6  # the paper's code; 0 = fixed pinwheel
  config.model.attention.tau_init = 0.1
  config.model.attention.num_arms = 4  # rotated_pinwheel line bands; 1 = the paper's code
  config.model.attention.radius = ml_collections.config_dict.placeholder(float)  # None: size//2
  config.model.attention.straight_through = True  # False: soft mask in the forward pass
  config.model.attention.num_rotations = 4  # fixed_rotation
  # E0's two 3x3 convs: plain | pconv (AAAI 2025) | gsconv (Gaussian-shaped).
  config.model.stem_conv = 'plain'
  config.model.stem_pconv_k = (4, 3)  # PConv arm lengths of those two convs ("P43")
  # Who runs every nnx.Conv: xla (lax.conv) | onednn (irstd_jax/onednn_conv.py) | auto.
  # onednn and auto use oneDNN where it can run (extension built, one CPU device) and
  # lax.conv elsewhere. auto because oneDNN gives the same results within float32 rounding
  # and a faster CPU train step (benchmarks/README.md, "oneDNN convolutions").
  config.model.conv_backend = 'auto'

  # -- loss (docs/method.md section 1); fields map 1:1 onto losses.mshnet_loss keywords --------
  config.loss = ml_collections.ConfigDict()
  config.loss.scale_weight = 'diff'  # diff (L1, the paper) | variance (L2 = SLS) | ...
  config.loss.location = 'mass'  # mass | mean | none
  config.loss.lambda_loc = 1.0
  # No location term for images without a target (an empty label has no centroid; the
  # reference's origin centroid pulls predictions to the top edge). False = reference.
  config.loss.location_skip_empty = True
  config.loss.k_over = 1.0
  config.loss.k_under = 1.0
  config.loss.detach_alpha = False
  config.loss.dynamic = 'none'  # none | sd
  config.loss.sd_delta = 0.5

  # -- optimiser: Adagrad with PyTorch semantics ------------------------------------------
  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 0.05
  config.optim.initial_accumulator_value = 0.0
  config.optim.eps = 1e-10
  # > 0: at the switch from warm-up to the scale loss, Adagrad accumulators still at 0 (the
  # fused and side heads, which the reference's warm-up never trains) start at this value,
  # so their first step is not lr * sign(grad). 0 = the reference (docs/reproduction.md).
  config.optim.accumulator_at_switch = 0.0
  config.optim.schedule = 'constant'  # the recipe; 'cosine' anneals over the run
  config.optim.final_lr_fraction = 0.0  # cosine: the last step's lr / learning_rate

  # -- training loop -------------------------------------------------------------------
  config.train = ml_collections.ConfigDict()
  config.train.num_epochs = 400
  config.train.batch_size = 4  # global batch, split over the 'data' mesh axis
  # Epochs of warm-up (soft IoU on the d0 head, no validation) before the scale loss and
  # deep supervision. The reference's warm_epoch = 5 warms up for SIX epochs (it tests
  # `epoch > warm_epoch` with 0-based epochs), so the recipe is 6 here.
  config.train.warm_epochs = 6
  # The fused head when deep supervision starts: 'as_initialised' (the reference: its random
  # init, since warm-up never trains it) or 'd0' (reset to pass the trained d0 head through,
  # so the prediction does not jump to a random mix of heads; docs/reproduction.md).
  config.train.fuse_at_switch = 'as_initialised'
  config.train.log_every_steps = 50
  config.train.checkpoint_every_steps = 1000
  config.train.eval_every_epochs = 10  # validation split; 0 disables
  config.train.max_to_keep = 3

  # -- data (docs/method.md sections 7-8) ---------------------------------------------------
  config.data = ml_collections.ConfigDict()
  config.data.name = dataset
  config.data.data_dir = ''  # TFDS data dir; '' -> ~/tensorflow_datasets
  config.data.manual_dir = ''  # raw files; '' -> <data_dir>/downloads/manual/<name>
  config.data.crop_size = 256
  config.data.resize_range = (128, 512)  # long side drawn uniformly from [lo, hi]
  config.data.hflip_prob = 0.5
  config.data.blur_prob = 0.5
  config.data.blur_max_radius = 1.0
  config.data.val_fraction = dataset_registry.DEFAULT_VAL_FRACTION  # from train, never test
  # Which examples are built (irstd_jax.dataset_splits.Options; docs/datasets.md):
  config.data.split_lists = ''  # a named split: 'acm' for nuaa_sirst; '' = the default
  config.data.drop_size_mismatch = False  # drop image/mask pairs of different sizes
  config.data.deduplicate = 'none'  # 'exact' | 'near': drop repeats and train-test leaks
  config.data.subset = ''  # basicirstd: the <Name> of the BasicIRSTD folder
  # Real datasets: rebuild the TFDS dataset from the raw files even if a build exists.
  config.data.rebuild = False
  # Mask pixels > this are target; None: > 127, and a mask that would come out empty
  # although it has non-zero pixels is an error (irstd_jax/raw_data.py).
  config.data.mask_threshold = ml_collections.config_dict.placeholder(int)
  # Normalisation of the [0, 1] grey image (ImageNet's mean/std averaged over RGB).
  config.data.mean = 0.449
  config.data.std = 0.226
  config.data.worker_count = 0  # grain worker processes (0 = in-process)
  # Synthetic scene generator (used when data.name == 'synthetic').
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.image_size = 256
  config.data.synthetic.num_train = 1000
  config.data.synthetic.num_val = 100
  config.data.synthetic.num_test = 200

  # -- evaluation (docs/method.md section 6) -------------------------------------------------
  config.eval = ml_collections.ConfigDict()
  config.eval.split = 'test'
  config.eval.batch_size = 4
  config.eval.pad_multiple = 32
  # At most this many padded shapes (one compilation each) per split: images are padded into
  # size buckets (eval_batching.size_buckets). None: one shape per size rounded to 32.
  config.eval.max_shapes = 4
  # Sweep the Pd-Fa curve (pdfa.py) in every test evaluation: pdfa.json/png and the
  # eval_results.json keys auc, auc_fa_max, pd_at_fa. False skips it (IoU, nIoU, Pd and Fa
  # at p > 0.5 are unchanged): the sweep labels components at 305 thresholds, which on a
  # collapsed model (most pixels positive) costs minutes per split.
  config.eval.pdfa_sweep = True
  return config
