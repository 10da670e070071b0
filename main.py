"""Entry point: `python main.py --config=configs/synthetic.py --workdir=runs/synthetic`.

Intentionally kept short: flags and set-up here, the work in irstd_jax/train.py
(--mode=train, the default), irstd_jax/evaluate.py (--mode=eval) and irstd_jax/predict.py
(--mode=predict). Any config field can be overridden, e.g. `--config.train.num_epochs=3`;
a misspelt field is an error. eval and predict restore WORKDIR's checkpoint onto the
model the config describes, so pass the config (and overrides) the run was trained with:

    python main.py --config=configs/synthetic.py --workdir=runs/synthetic --mode=eval \
        [--split=test] [--protocol=basicirstd|mshnet] [--checkpoint=last|best]
    python main.py --config=configs/synthetic.py --workdir=runs/synthetic --mode=predict \
        --input='frames/*.png' [--labels=masks/] [--tta] [--output=DIR]
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.',
                               required=True)
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict'],
                          'train (then evaluate), eval a checkpoint, or predict images.')
_SPLIT = flags.DEFINE_enum('split', None, ['train', 'validation', 'test'],
                           'eval: the split (default: config.eval.split).')
_PROTOCOL = flags.DEFINE_enum('protocol', 'basicirstd', ['basicirstd', 'mshnet'],
                              'eval: native resolution, or test images resized to 256.')
_CHECKPOINT = flags.DEFINE_enum('checkpoint', 'last', ['last', 'best'],
                                'eval/predict: the last or the validation-best checkpoint.')
_INPUT = flags.DEFINE_string('input', None, 'predict: an image file, a folder or a glob.')
_LABELS = flags.DEFINE_string('labels', None,
                              'predict: folder of masks named like the images (optional).')
_OUTPUT = flags.DEFINE_string(
    'output', None, 'eval/predict: output folder (default WORKDIR/eval_<split>_<protocol>_'
    '<checkpoint> or WORKDIR/predictions).')
_TTA = flags.DEFINE_bool('tta', False, 'predict: average the 8 flips/transposes.')
_KEEP_FREED = flags.DEFINE_bool(
    'keep_freed_memory', False,
    'glibc keeps freed memory in one arena (irstd_jax/host_memory.py). On a 2-core CPU it '
    'made full-size steps about 20% faster and synthetic-default steps 20% faster when the '
    'compilation cache was warm, but 13% slower when this process compiled: see '
    'benchmarks/README.md.')
_CACHE = flags.DEFINE_string(
    'compilation_cache', os.path.expanduser('~/.cache/irstd_jax/jax_cache'),
    "JAX persistent compilation cache ('' disables); makes re-runs start faster.")
config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                lock_config=True)
# Multi-host runs (see README "Pods and multi-host"); all default to the environment.
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 for jax.distributed.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (0-based).')
_DISTRIBUTED_AUTO = flags.DEFINE_bool(
    'distributed_auto', False, 'Let JAX detect the cluster (TPU pods, SLURM, Open MPI).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _MODE.value == 'predict' and not _INPUT.value:
    raise app.UsageError('--mode=predict needs --input (a file, a folder or a glob)')
  if _KEEP_FREED.value:  # before jax starts its threads
    from irstd_jax import host_memory  # pylint: disable=g-import-not-at-top
    host_memory.keep_freed_memory()
  import jax  # pylint: disable=g-import-not-at-top
  from irstd_jax import reporting  # pylint: disable=g-import-not-at-top
  reporting.hide_library_chatter()
  from irstd_jax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(coordinator_address=_COORDINATOR.value,
                         num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                         auto=_DISTRIBUTED_AUTO.value)
  if _CACHE.value:
    jax.config.update('jax_compilation_cache_dir', _CACHE.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  from irstd_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from irstd_jax import train  # pylint: disable=g-import-not-at-top
  config = flags.FLAGS.config
  logging.info('config:\n%s', config)
  try:
    if _MODE.value == 'train':
      train.train_and_evaluate(config, _WORKDIR.value)
    elif _MODE.value == 'eval':
      from irstd_jax import evaluate  # pylint: disable=g-import-not-at-top
      evaluate.run_eval(config, _WORKDIR.value, split=_SPLIT.value, protocol=_PROTOCOL.value,
                        checkpoint=_CHECKPOINT.value, output=_OUTPUT.value)
    else:
      from irstd_jax import predict  # pylint: disable=g-import-not-at-top
      predict.run_predict(config, _WORKDIR.value, input_spec=_INPUT.value,
                          output=_OUTPUT.value, labels_dir=_LABELS.value,
                          checkpoint=_CHECKPOINT.value, tta=_TTA.value)
  except FileNotFoundError as e:  # e.g. a dataset's raw files are missing: say where
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except checkpointing.CheckpointMismatchError as e:  # another config's checkpoints
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except train.Preempted as e:  # the checkpoint is written; exit as a SIGTERM'd job does
    print(f'{e}', file=sys.stderr)
    sys.exit(143)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main)
