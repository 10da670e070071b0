"""What a run's config must satisfy, checked once, before anything is created or compiled.

`validate_config(config, mode=..., workdir=...)` is called first by `train.train_and_evaluate`,
`evaluate.run_eval` and `predict.run_predict`. Every rule raises an `errors.UserError` naming
the config field (as `--config.<field>` would) and the fix, so a bad config costs a second
and leaves no workdir, checkpoint folder or event file behind. The rules that belong to a
module (the kinds of spatial attention, the losses, the dataset names) are read from that
module, never copied here.
"""
from __future__ import annotations

import os

import ml_collections

from irstd_jax import dataset_registry
from irstd_jax.errors import UserError

MODES = ('train', 'eval', 'predict')
SYNTHETIC = 'synthetic'
# The network pools 4 times (1/16) and eval pads every image to a multiple of this.
NETWORK_STRIDE = 16


def _field(config: ml_collections.ConfigDict, path: str):
  node = config
  for part in path.split('.'):
    if part not in node:
      raise UserError(f'the config has no field {path!r}', path,
                      'pass a config file from configs/ (or one that starts from '
                      'configs/base.py)')
    node = node[part]
  return node


def _positive_int(config, path: str, *, minimum: int = 1, why: str = '') -> int:
  value = _field(config, path)
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise UserError(f'{path} = {value!r} is not an integer >= {minimum}{why}', path,
                    f'set --config.{path} to an integer >= {minimum}')
  return value


def _is_real(value) -> bool:
  """An int or float, not a bool (True would read as 1)."""
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _one_of(config, path: str, allowed) -> str:
  value = _field(config, path)
  if value not in allowed:
    raise UserError(f'unknown {path} {value!r}', path,
                    f'use one of {", ".join(map(str, allowed))}')
  return value


def check_workdir(workdir: str | None, mode: str) -> None:
  """A train workdir may be new or a folder; eval/predict need an existing folder."""
  if not workdir:
    raise UserError('no workdir given', '--workdir', 'pass --workdir=DIR')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'the workdir {workdir} is a file, not a folder', '--workdir',
                    'pass a folder (new, or a run to resume)')
  if mode != 'train' and not os.path.isdir(workdir):
    raise UserError(f'the workdir {workdir} does not exist', '--workdir',
                    'pass the --workdir of a trained run')


def check_model(config: ml_collections.ConfigDict) -> None:
  """The model fields, then the model built abstractly (no parameter is computed)."""
  from irstd_jax import convs  # pylint: disable=g-import-not-at-top
  from irstd_jax import models  # pylint: disable=g-import-not-at-top
  from irstd_jax import onednn_conv  # pylint: disable=g-import-not-at-top
  from irstd_jax import spatial_attention  # pylint: disable=g-import-not-at-top
  widths = _field(config, 'model.widths')
  if (not isinstance(widths, (tuple, list)) or len(widths) != 5
      or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)):
    raise UserError(f'model.widths = {widths!r} is not 5 positive integers', 'model.widths',
                    'give the stem/E0, E1, E2, E3 and middle widths, e.g. '
                    '--config.model.widths=(16,32,64,128,256)')
  _positive_int(config, 'model.in_channels')
  _positive_int(config, 'model.blocks_per_stage')
  _positive_int(config, 'model.channel_reduction')
  _one_of(config, 'model.spatial_attention', spatial_attention.KINDS)
  _one_of(config, 'model.stem_conv', convs.STEM_CONV_KINDS)
  if 'conv_backend' in config.model:  # absent in older configs: 'xla'
    _one_of(config, 'model.conv_backend', onednn_conv.BACKENDS)
  try:  # what only the modules know (e.g. PConv needs widths divisible by 4)
    models.abstract_model(config.model)
  except (ValueError, TypeError) as e:
    raise UserError(f'the model config cannot build MSHNet: {e}', 'model',
                    'fix the model field the message names') from None


def check_loss_and_optimizer(config: ml_collections.ConfigDict) -> None:
  from irstd_jax import losses  # pylint: disable=g-import-not-at-top
  _one_of(config, 'loss.scale_weight', losses.SCALE_WEIGHTS)
  _one_of(config, 'loss.location', losses.LOCATIONS)
  _one_of(config, 'loss.dynamic', losses.DYNAMICS)
  _one_of(config, 'optim.schedule', ('constant', 'cosine'))
  lr = _field(config, 'optim.learning_rate')
  if not _is_real(lr) or not lr > 0:
    raise UserError(f'optim.learning_rate = {lr!r} is not a positive number',
                    'optim.learning_rate', 'set it to a positive number, e.g. 0.05')
  seed = config.optim.get('accumulator_at_switch', 0.0)  # absent in older configs: 0
  if not _is_real(seed) or seed < 0:
    raise UserError(f'optim.accumulator_at_switch = {seed!r} is not a number >= 0',
                    'optim.accumulator_at_switch',
                    'set it to 0 (the reference) or a positive value, e.g. 0.1')


def check_data(config: ml_collections.ConfigDict, mode: str) -> None:
  """The dataset name, where its files are, and the split sizes a run needs."""
  name = _field(config, 'data.name')
  _one_of(config, 'data.name', tuple(dataset_registry.DATASETS))
  if dataset_registry.get(name).has_builder:  # built from raw files
    if dataset_registry.get(name).per_folder and not _field(config, 'data.manual_dir'):
      raise UserError(f'data.name {name} needs the raw folder', 'data.manual_dir',
                      'pass --config.data.manual_dir=FOLDER (images/, masks/, split lists; '
                      '`python -m irstd_jax.validate_dataset FOLDER` checks it)')
    manual_dir = _field(config, 'data.manual_dir')
    if manual_dir and not os.path.isdir(os.path.expanduser(manual_dir)):
      raise UserError(f'the raw folder {manual_dir} does not exist', 'data.manual_dir',
                      'pass the folder that holds the downloaded dataset')
  threshold = config.data.get('mask_threshold', None)
  if threshold is not None and not (isinstance(threshold, int) and 0 <= threshold < 255):
    raise UserError(f'data.mask_threshold = {threshold!r} is not an integer in [0, 254]',
                    'data.mask_threshold', 'mask pixels above it are target; e.g. 50')
  val_fraction = _field(config, 'data.val_fraction')
  if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
    raise UserError(f'data.val_fraction = {val_fraction!r} is not in [0, 1)',
                    'data.val_fraction',
                    f'set it to e.g. {dataset_registry.DEFAULT_VAL_FRACTION:g} '
                    '(0: no validation split)')
  if mode == 'train':
    crop = _positive_int(config, 'data.crop_size', minimum=NETWORK_STRIDE)
    if crop % NETWORK_STRIDE:
      raise UserError(f'data.crop_size {crop} is not a multiple of {NETWORK_STRIDE} (the '
                      'network pools 4 times)', 'data.crop_size',
                      f'use a multiple of {NETWORK_STRIDE}, e.g. {crop // 16 * 16 or 16}')
    lo, hi = _field(config, 'data.resize_range')
    if not 0 < lo <= hi:
      raise UserError(f'data.resize_range = ({lo}, {hi}) is not 0 < low <= high',
                      'data.resize_range', 'give (low, high) long-side sizes, e.g. (128,512)')
  if name == SYNTHETIC:
    _positive_int(config, 'data.synthetic.image_size', minimum=NETWORK_STRIDE)
    _positive_int(config, 'data.synthetic.num_test')
    if mode == 'train':
      batch = config.train.batch_size
      _positive_int(config, 'data.synthetic.num_train', minimum=batch,
                    why=f' (one batch is {batch} images)')
      if config.train.eval_every_epochs:
        _positive_int(config, 'data.synthetic.num_val',
                      why=' (train.eval_every_epochs > 0 validates)')


def check_batches(config: ml_collections.ConfigDict, mode: str,
                  num_devices: int | None, num_processes: int = 1) -> None:
  """Batch sizes are positive and the global training batch divides over the devices."""
  if mode == 'train':
    batch = _positive_int(config, 'train.batch_size')
    for devices, what in ((num_devices, 'devices'), (num_processes, 'processes')):
      if devices and batch % devices:
        raise UserError(f'train.batch_size {batch} does not divide over {devices} {what}',
                        'train.batch_size', f'use a multiple of {devices}')
  _positive_int(config, 'eval.batch_size')  # rounded up to the device count by Evaluator
  if config.eval.get('max_shapes', None) is not None:
    _positive_int(config, 'eval.max_shapes')
  multiple = _positive_int(config, 'eval.pad_multiple')
  if multiple % NETWORK_STRIDE:
    raise UserError(f'eval.pad_multiple {multiple} is not a multiple of {NETWORK_STRIDE}',
                    'eval.pad_multiple', 'use 32 (the default)')


def check_training(config: ml_collections.ConfigDict) -> None:
  _positive_int(config, 'train.num_epochs',
                why=' (0 epochs would evaluate an untrained model)')
  _positive_int(config, 'train.warm_epochs', minimum=0)
  _positive_int(config, 'train.log_every_steps')
  _positive_int(config, 'train.checkpoint_every_steps')
  _positive_int(config, 'train.eval_every_epochs', minimum=0)
  _positive_int(config, 'train.max_to_keep')
  if 'fuse_at_switch' in config.train:  # absent in older configs: the reference
    from irstd_jax import train_state  # pylint: disable=g-import-not-at-top
    _one_of(config, 'train.fuse_at_switch', train_state.FUSE_AT_SWITCH)


def validate_config(config: ml_collections.ConfigDict, *, mode: str = 'train',
                    workdir: str | None = None, num_devices: int | None = None,
                    num_processes: int | None = None) -> None:
  """Raises errors.UserError for the first field `mode` cannot run with.

  Args:
    config: the run's ConfigDict (configs/*.py plus overrides).
    mode: 'train', 'eval' or 'predict'.
    workdir: the --workdir (checked when given).
    num_devices, num_processes: what the training batch must divide over (default: JAX's
      device and process counts).
  """
  if mode not in MODES:
    raise ValueError(f'unknown mode {mode!r}; expected one of {MODES}')
  if workdir is not None:
    check_workdir(workdir, mode)
  if mode == 'train':
    check_training(config)
  if num_devices is None or num_processes is None:
    import jax  # pylint: disable=g-import-not-at-top
    num_devices = jax.device_count() if num_devices is None else num_devices
    num_processes = jax.process_count() if num_processes is None else num_processes
  check_batches(config, mode, num_devices, num_processes)
  _one_of(config, 'eval.split', dataset_registry.SPLITS)
  if mode != 'predict':  # predict reads the user's files, not the dataset
    check_data(config, mode)
  check_loss_and_optimizer(config)
  check_model(config)
