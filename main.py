"""Entry point: `python main.py --config=configs/synthetic.py --workdir=runs/synthetic`.

Intentionally kept short: flags and set-up here, the work in irstd_jax/train.py
(--mode=train, the default), irstd_jax/evaluate.py (--mode=eval) and irstd_jax/predict.py
(--mode=predict). Any config field can be overridden, e.g. `--config.train.num_epochs=3`;
a misspelt field is an error. eval and predict restore WORKDIR's checkpoint onto the
model the config describes, so pass the config (and overrides) the run was trained with:

    python main.py --config=configs/synthetic.py --workdir=runs/synthetic --mode=eval \
        [--split=test] [--protocol=basicirstd|mshnet] [--checkpoint=last|best]
    python main.py --config=configs/synthetic.py --workdir=runs/synthetic --mode=predict \
        --input='frames/*.png' [--labels=masks/] [--tta] [--output=DIR] [--overwrite]

A user error (bad flag, config field, file or folder) prints one `error: ...` line and exits
with 2; Ctrl-C / SIGTERM save what is finished and exit with 130 / 143 (irstd_jax/errors.py,
irstd_jax/interrupts.py).
"""
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from irstd_jax import dataset_registry
from irstd_jax.errors import EXIT_USER_ERROR, UserError, format_error

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.',
                               required=True)
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict'],
                          'train (then evaluate), eval a checkpoint, or predict images.')
_SPLIT = flags.DEFINE_enum('split', None, dataset_registry.SPLITS,
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
    '<checkpoint>, the layout training writes too, or WORKDIR/predictions).')
_TTA = flags.DEFINE_bool('tta', False, 'predict: average the 8 flips/transposes.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'predict: write into an output folder that holds files (what an '
    'earlier predict wrote there is removed first; other files are kept).')
_KEEP_FREED = flags.DEFINE_bool(
    'keep_freed_memory', False,
    'glibc keeps freed memory in one arena (irstd_jax/host_memory.py); whether that is '
    'faster depends on the model and on the compilation cache (benchmarks/README.md).')
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
    raise UserError(f'unexpected arguments {argv[1:]}', 'command line',
                    'pass every option as --name=value')
  if _MODE.value == 'predict' and not _INPUT.value:
    raise UserError('--mode=predict needs images', '--input',
                    'pass --input=FILE, a folder or a quoted glob')
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
  from irstd_jax import train  # pylint: disable=g-import-not-at-top
  config = flags.FLAGS.config
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
                        checkpoint=_CHECKPOINT.value, tta=_TTA.value,
                        overwrite=_OVERWRITE.value)


def _config_path(argv: list[str]) -> str | None:
  """The file of `--config=FILE[:ARG]` (or `--config FILE`), if given."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg[len('--config='):].partition(':')[0]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1].partition(':')[0]
  return None


def _override_error(error: BaseException, argv: list[str]) -> UserError:
  """A config override that failed to parse, as one line naming the flag."""
  chain = [error]  # ml_collections chains three exceptions; one of them has the hint
  while chain[-1].__cause__ or chain[-1].__context__:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  texts = [str(e.args[0] if e.args else e).strip('"\'') for e in chain]
  text = next((t for t in texts if 'Did you mean' in t), texts[-1])
  while '\\n' in text or "\\'" in text:  # str() of a KeyError inside an AttributeError
    text = text.encode().decode('unicode_escape').strip('"\'')
  name, _, hint = text.partition('\n')
  name = name.strip('\'"')
  hint = hint.strip().replace(' instead of', ', not')
  flag = next((a.split('=')[0] for a in argv if a.startswith('--config.')
               and f'.{name}.' in a.split('=')[0] + '.'), '--config.*')
  return UserError(f'no config field {name!r}', flag,
                   (hint.rstrip('?') + '?' if hint else
                    'check the field name in the config file (configs/base.py lists all)'))


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with bad flags and config files as one-line user errors."""
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path):
    _exit_with(UserError(f'the config file {path} does not exist', '--config',
                         'pass a file from configs/, e.g. --config=configs/synthetic.py'))
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # an unknown flag, a bad value, a missing required flag
    _exit_with(UserError(str(e).replace('\n', ' '), 'command line',
                         'see python main.py --helpfull'))
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # a config override
    _exit_with(_override_error(e, argv))
  raise AssertionError('unreachable')


def _exit_with(error: UserError) -> None:
  print(format_error(error), file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


def run(argv: list[str]) -> None:
  """main() with the one error path: user errors and interrupts end in one line.

  A UserError exits 2; nothing is left behind (a workdir this call created is removed again
  when it is empty). An interrupt exits 128 + the signal number (130 for Ctrl-C) once the
  finished work is saved. Anything else is a bug and keeps its traceback.
  """
  from irstd_jax import interrupts  # pylint: disable=g-import-not-at-top
  workdir = _WORKDIR.value
  workdir_existed = os.path.exists(workdir)
  try:
    main(argv)
  except UserError as e:
    if not workdir_existed and os.path.isdir(workdir) and not os.listdir(workdir):
      os.rmdir(workdir)
    _exit_with(e)
  except interrupts.Interrupted as e:
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(e.exit_code)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(run, flags_parser=parse_flags)
