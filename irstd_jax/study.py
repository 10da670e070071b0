"""A study: a grid of training runs (cells), resumable at every granularity, and its report.

    python -m irstd_jax.study --config=configs/study/nudt_stability.py \
        --workdir=runs/study_nudt --results_dir=docs/reproduction/nudt_stability

A study config (configs/study/*.py) names a dataset, a budget (config fields every cell
shares), and configurations: an ablation row (configs/ablation/<row>.py) plus overrides,
trained over a number of seeds. A cell is one (configuration, seed): an ordinary run
directory, WORKDIR/cells/<configuration>/seed<k>, that `main.py --mode=eval` reads with
`--config=<study config>:<configuration>,<seed>`.

Resumable at every granularity: rerun the same command after any interruption. A cell whose
record is in the results directory is never trained again (so the results directory, which
is small, can be committed while the run directories, which are not, stay behind); a cell
in progress resumes from its latest checkpoint and its history (irstd_jax/history.py), so
the study's results equal an uninterrupted study's.

Warm-up sharing: during warm-up every loss is plain soft IoU on the d0 head, so cells whose
configs differ only in `loss` (the same model, data, recipe and seed) train their warm-up
once, in WORKDIR/warmup/<key>, and fork from its checkpoint at the end of warm-up.

Output, rewritten after every cell: RESULTS/cells/<configuration>/seed<k>.json (every epoch,
the collapse record, the test results of the last and validation-best checkpoints in both
protocols, the cost, the CPU and library versions), RESULTS/study.json (all of them),
RESULTS/study.md (per configuration: mean +- std, min, max over seeds, collapse count) and
RESULTS/study.png (validation IoU and positive fraction per epoch, seeds overlaid).
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import contextlib
import textwrap
import threading
import time

import ml_collections
import numpy as np

from irstd_jax import errors

CHECKPOINTS = ('last', 'best')
METRICS = ('iou', 'niou', 'pd', 'fa')


class StudyConfigError(errors.UserError):
  """A study config names a field, row or cell that does not exist."""

  def __init__(self, what: str, where: str = '', fix: str = 'fix the study config'):
    super().__init__(what, where, fix)


# ----------------------------------------------------------------------------- the grid


def apply_overrides(config: ml_collections.ConfigDict, overrides, where: str) -> None:
  """Sets every field of the nested `overrides` on `config`; an unknown field is an error.

  Args:
    config: the run config, changed in place.
    overrides: a (nested) ConfigDict or dict of the fields to set.
    where: names the overrides in errors, e.g. 'configurations.sls_cbam.overrides'.
  """
  items = overrides.items() if overrides is not None else ()
  for key, value in items:
    if key not in config:
      raise StudyConfigError('no such config field', f'{where}.{key}')
    if isinstance(config[key], ml_collections.ConfigDict):
      if not isinstance(value, (dict, ml_collections.ConfigDict)):
        raise StudyConfigError('a group of fields, not a value', f'{where}.{key}')
      apply_overrides(config[key], value, f'{where}.{key}')
    else:
      config[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def cell_config(study: ml_collections.ConfigDict, name: str,
                seed: int) -> ml_collections.ConfigDict:
  """The run config of cell (configuration `name`, `seed`): the ablation row on the study's
  dataset, then the study's budget, then the configuration's overrides, then the seed."""
  if name not in study.configurations:
    raise StudyConfigError('no such configuration', f'configurations.{name}',
                           f'use one of {", ".join(study.configurations)}')
  spec = study.configurations[name]
  try:
    row = importlib.import_module(f'configs.ablation.{spec.row}')
  except ModuleNotFoundError as e:
    raise StudyConfigError(f'no configs/ablation/{spec.row}.py', f'configurations.{name}.row',
                           'name a file of configs/ablation/') from e
  config = row.get_config(study.dataset)
  apply_overrides(config, study.budget, 'budget')
  apply_overrides(config, spec.get('overrides'), f'configurations.{name}.overrides')
  config.seed = int(seed)
  return config


def parse_cell(arg: str) -> tuple[str, int]:
  """'<configuration>,<seed>' -> (configuration, seed): the config-file argument form."""
  name, sep, seed = arg.partition(',')
  if not sep or not seed.strip().isdigit():
    raise StudyConfigError(f'cell {arg!r} is not <configuration>,<seed>', '--config',
                           'append e.g. :sls_cbam,0 to the config file')
  return name.strip(), int(seed)


def cells(study: ml_collections.ConfigDict) -> list[tuple[str, int]]:
  """Every (configuration, seed), in the order the runner trains them: by the
  configuration's priority, then seed, then name. Cells that can share a warm-up (same
  seed and priority) come one after another, so each warm-up is trained once."""
  order = sorted((spec.get('priority', 0), seed, name)
                 for name, spec in study.configurations.items() for seed in range(spec.seeds))
  return [(name, seed) for _, seed, name in order]


# Config fields that act only after warm-up: cells that differ in nothing else share it.
# (Warm-up is plain soft IoU on the d0 head for every loss; the accumulator seed and the
# fuse reset apply at the first step after it.)
AFTER_WARMUP_FIELDS = ('loss', 'optim.accumulator_at_switch', 'train.fuse_at_switch')


def _warmup_fields(config: ml_collections.ConfigDict) -> dict:
  """The config as a dict, less AFTER_WARMUP_FIELDS."""
  fields = config.to_dict()
  for dotted in AFTER_WARMUP_FIELDS:
    *parents, last = dotted.split('.')
    node = fields
    for key in parents:
      node = node.get(key, {})
    node.pop(last, None)
  return fields


def warmup_name(study: ml_collections.ConfigDict, name: str, seed: int) -> str:
  """The shared warm-up run of cell (`name`, `seed`): '<configuration>-seed<seed>' after the
  alphabetically first configuration whose cell config for that seed equals this one's but
  for AFTER_WARMUP_FIELDS (every such cell trains the identical warm-up and forks from it).

  Named from the study, not hashed from the config, so that a code update which adds config
  fields does not orphan the warm-ups already trained; `check_warmup_config` guards the reuse.
  """
  fields = _warmup_fields(cell_config(study, name, seed))
  same = [other for other in study.configurations
          if other == name or _warmup_fields(cell_config(study, other, seed)) == fields]
  return f'{min(same)}-seed{seed}'


WARMUP_CONFIG = 'warmup_config.json'


def check_warmup_config(config: ml_collections.ConfigDict, warm_dir: str, log=print) -> None:
  """Refuses to reuse a warm-up trained with other settings; writes them on first use.

  warm_dir/warmup_config.json holds the config (less AFTER_WARMUP_FIELDS) the warm-up was
  trained with.
  A field both configs have must be equal. A field only one of them has was added or removed
  by a code update since; its default is taken to reproduce the old behaviour (the project's
  rule for new fields), and the runner says which fields those are.
  """
  from irstd_jax import reporting  # pylint: disable=g-import-not-at-top
  path = os.path.join(warm_dir, WARMUP_CONFIG)
  current = _flatten(_warmup_fields(config))
  if not os.path.exists(path):
    os.makedirs(warm_dir, exist_ok=True)
    reporting.write_json(path, _warmup_fields(config))
    return
  stored = _flatten(json.load(open(path)))
  for key in sorted(set(stored) & set(current)):
    if json.dumps(stored[key], default=str) != json.dumps(current[key], default=str):
      raise StudyConfigError(
          f'the shared warm-up in {warm_dir} was trained with {key}={stored[key]!r}, this '
          f'cell has {current[key]!r}', key,
          f'restore that value, or delete {warm_dir} (and the cells forked from it) to '
          'retrain it')
  changed = sorted(set(stored) ^ set(current))
  if changed:
    log(f'warm-up {os.path.basename(warm_dir)}: fields added or removed since it was trained '
        f'(their defaults are taken to reproduce it): {", ".join(changed)}')


def cell_test_results(config, run_dir: str, final: dict, protocols) -> dict:
  """{protocol: {'last' | 'best': metrics}} of a trained cell on the test split.

  `final` is training's record of its last checkpoint (basicirstd, with `val_best` when
  validation ran). Other protocols are read from the run's evaluation folders or evaluated
  (and written there). A validation-best checkpoint at the last step is the last
  checkpoint: its metrics are the last's, not evaluated again.
  """
  from irstd_jax import eval_outputs  # pylint: disable=g-import-not-at-top
  from irstd_jax import evaluate  # pylint: disable=g-import-not-at-top
  results = {'basicirstd': {'last': _metrics(final)}}
  if 'val_best' in final:
    results['basicirstd']['best'] = _metrics(final['val_best'])
  for protocol in protocols:
    for checkpoint in CHECKPOINTS:
      if checkpoint in results.get(protocol, {}):
        continue
      if checkpoint == 'best' and 'val_best' not in final:
        continue
      if checkpoint == 'best' and final['val_best']['step'] == final['step']:
        results[protocol]['best'] = results[protocol]['last']
        continue
      r = eval_outputs.read_results(run_dir, config.eval.split, protocol, checkpoint)
      if r is None:
        r = evaluate.run_eval(config, run_dir, protocol=protocol, checkpoint=checkpoint)
      results.setdefault(protocol, {})[checkpoint] = _metrics(r)
  return results


def check_conv_backend(config: ml_collections.ConfigDict) -> None:
  """Refuses a cell whose pinned `model.conv_backend` would fall back to another backend here:
  one study table is one set of convolution kernels, so a cell never silently switches."""
  from irstd_jax import onednn_conv  # pylint: disable=g-import-not-at-top
  asked = config.model.conv_backend
  if asked != 'auto' and onednn_conv.resolved_backend(asked) != asked:
    raise StudyConfigError(
        f'the study pins model.conv_backend={asked!r}, which cannot run here '
        f'({onednn_conv.unavailable_here()})', 'budget.model',
        'run `make venv` (it builds the oneDNN extension) or train on a single CPU device')


def _flatten(tree: dict, prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}; lists and tuples stay values (JSON makes both lists)."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = list(value) if isinstance(value, tuple) else value
  return flat


def cell_dir(workdir: str, name: str, seed: int) -> str:
  return os.path.join(workdir, 'cells', name, f'seed{seed}')


def record_path(results_dir: str, name: str, seed: int) -> str:
  return os.path.join(results_dir, 'cells', name, f'seed{seed}.json')


# ----------------------------------------------------------------------------- collapse


def collapse(epochs: list[dict], *, max_iou: float, min_positive_fraction: float) -> dict:
  """The collapse record of a run's history (history.json entries).

  An epoch is collapsed when, after warm-up, the model predicts more than
  `min_positive_fraction` of the validation pixels as target while its validation IoU is
  below `max_iou`: it has given up localising and paints the image. Targets cover well
  under 1 % of the pixels of every IRSTD dataset, so the two thresholds are far apart from
  any working model.

  Returns:
    {'collapsed': bool, 'epoch': first collapsed epoch or None, 'collapsed_epochs': [...],
     'recovered': whether the last validated epoch is healthy again (None if never
     collapsed)}
  """
  validated = [e for e in epochs if not e['warmup'] and e['validation'] is not None]
  bad = [e['epoch'] for e in validated
         if e['validation']['iou'] < max_iou
         and e['validation']['positive_fraction'] > min_positive_fraction]
  return {'collapsed': bool(bad), 'epoch': bad[0] if bad else None, 'collapsed_epochs': bad,
          'recovered': (validated[-1]['epoch'] not in bad) if bad else None}


# ----------------------------------------------------------------------------- environment


def environment(conv_backend: str = 'auto') -> dict:
  """The CPU, library versions and convolution kernels (`model.conv_backend` resolved to
  'onednn' or 'xla') a cell ran on: results repeat on one machine and stack only."""
  import jax  # pylint: disable=g-import-not-at-top
  from irstd_jax import onednn_conv  # pylint: disable=g-import-not-at-top
  versions = {}
  for module in ('jax', 'jaxlib', 'flax', 'optax', 'orbax.checkpoint', 'numpy'):
    try:
      versions[module] = importlib.import_module(module).__version__
    except (ImportError, AttributeError):
      versions[module] = None
  cpu, flags = platform.processor(), ''
  try:
    with open('/proc/cpuinfo') as f:
      lines = f.read().splitlines()
    cpu = next((l.split(':', 1)[1].strip() for l in lines if l.startswith('model name')), cpu)
    flags = next((l for l in lines if l.startswith('flags')), '')
  except OSError:
    pass
  return {'cpu': cpu, 'avx512': ' avx512f' in flags, 'cores': os.cpu_count(),
          'backend': jax.default_backend(), 'devices': jax.device_count(),
          'python': platform.python_version(), 'versions': versions,
          'conv_backend': onednn_conv.resolved_backend(conv_backend),
          'commit': source_commit()}


def source_commit() -> str | None:
  """The git commit of the code that runs, '+dirty' if it has uncommitted changes to tracked
  files; None outside a git checkout. A cell's record names it so its numbers can be traced."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(['git', '-C', root, 'rev-parse', 'HEAD'], capture_output=True,
                            text=True, check=True, timeout=10).stdout.strip()
    dirty = subprocess.run(['git', '-C', root, 'status', '--porcelain', '--untracked-files=no'],
                           capture_output=True, text=True, check=True, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ('+dirty' if dirty else '')


# ----------------------------------------------------------------------------- running


def _add_time(directory: str, key: str, seconds: float) -> float:
  """Accumulates wall time in directory/timing.json across interruptions; returns the total."""
  from irstd_jax import reporting  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, 'timing.json')
  timing = json.load(open(path)) if os.path.exists(path) else {}
  timing[key] = timing.get(key, 0.0) + seconds
  reporting.write_json(path, timing)
  return timing[key]


@contextlib.contextmanager
def timed(directory: str, key: str, flush_every_s: float = 60.0):
  """Adds the block's wall time to directory/timing.json[key], flushing every
  `flush_every_s` seconds as it runs: a cell killed outright (SIGKILL, a session's end)
  keeps all but the last minute of its cost, and the rerun adds the rest. Yields a
  function that returns the total so far."""
  os.makedirs(directory, exist_ok=True)
  lock = threading.Lock()
  stop = threading.Event()
  last = [time.monotonic()]
  total = [_read_time(directory, key)]

  def flush():
    with lock:
      now = time.monotonic()
      total[0] = _add_time(directory, key, now - last[0])
      last[0] = now

  def flusher():
    while not stop.wait(flush_every_s):
      flush()

  thread = threading.Thread(target=flusher, daemon=True)
  thread.start()
  try:
    yield lambda: total[0]
  finally:
    stop.set()
    thread.join()
    flush()


def _read_time(directory: str, key: str) -> float:
  path = os.path.join(directory, 'timing.json')
  return json.load(open(path)).get(key, 0.0) if os.path.exists(path) else 0.0


def _has_checkpoint(run_dir: str, step: int | None = None) -> bool:
  directory = os.path.join(run_dir, 'checkpoints')
  if not os.path.isdir(directory):
    return False
  steps = [int(d) for d in os.listdir(directory) if d.isdigit()]
  return bool(steps) if step is None else step in steps


def _fork(warm_dir: str, run_dir: str, step: int) -> None:
  """Starts `run_dir` from the warm-up's checkpoint at `step` and its history, atomically."""
  tmp = run_dir + '.fork-tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(os.path.join(tmp, 'checkpoints'))
  shutil.copytree(os.path.join(warm_dir, 'checkpoints', str(step)),
                  os.path.join(tmp, 'checkpoints', str(step)))
  shutil.copy(os.path.join(warm_dir, 'history.json'), os.path.join(tmp, 'history.json'))
  shutil.rmtree(run_dir, ignore_errors=True)  # a start that never reached a checkpoint
  os.replace(tmp, run_dir)


def run_cell(study: ml_collections.ConfigDict, name: str, seed: int, *, workdir: str,
             log=print) -> dict:
  """Trains and evaluates one cell (resuming whatever was done) and returns its record."""
  from irstd_jax import datasets  # pylint: disable=g-import-not-at-top
  from irstd_jax import eval_outputs  # pylint: disable=g-import-not-at-top
  from irstd_jax import history as history_lib  # pylint: disable=g-import-not-at-top
  from irstd_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from irstd_jax import train  # pylint: disable=g-import-not-at-top

  config = cell_config(study, name, seed)
  check_conv_backend(config)
  run_dir = cell_dir(workdir, name, seed)
  warm_dir = os.path.join(workdir, 'warmup', warmup_name(study, name, seed))
  num_train = len(datasets.load_split(config.data, 'train', seed=config.seed))
  schedule = input_pipeline.TrainSchedule(num_train, config.train.batch_size,
                                          config.train.num_epochs, config.train.warm_epochs)
  if not _has_checkpoint(run_dir) and schedule.warmup_steps:
    check_warmup_config(config, warm_dir, log)
    if not _has_checkpoint(warm_dir, schedule.warmup_steps):
      log(f'[{name} seed {seed}] warm-up ({config.train.warm_epochs} epochs) in {warm_dir}')
      with timed(warm_dir, 'warmup_s'):
        train.train_and_evaluate(config, warm_dir, stop_at_step=schedule.warmup_steps)
    else:
      log(f'[{name} seed {seed}] forks from the shared warm-up in {warm_dir}')
    _fork(warm_dir, run_dir, schedule.warmup_steps)

  with timed(run_dir, 'train_s') as train_s:
    # Training's record of its last checkpoint (either layout: eval_outputs.py).
    final = eval_outputs.read_results(run_dir, config.eval.split, 'basicirstd', 'last')
    if final is None or final['step'] != schedule.num_steps:
      log(f'[{name} seed {seed}] training in {run_dir}')
      final = train.train_and_evaluate(config, run_dir)
  with timed(run_dir, 'eval_s') as eval_s:
    results = cell_test_results(config, run_dir, final, study.protocols)

  epochs = history_lib.read(run_dir)
  return {
      'configuration': name, 'seed': seed, 'row': study.configurations[name].row,
      'label': study.configurations[name].get('label', name),
      'dataset': study.dataset, 'num_steps': schedule.num_steps,
      'steps_per_epoch': schedule.steps_per_epoch,
      'warmup': os.path.basename(warm_dir), 'warm_epochs': config.train.warm_epochs,
      'epochs': epochs,
      'collapse': collapse(epochs, **study.collapse.to_dict()),
      'test': results,
      'best_step': final.get('val_best', {}).get('step'),
      'cost': {'warmup_s_shared': _read_time(warm_dir, 'warmup_s'), 'train_s': train_s(),
               'eval_s': eval_s()},
      'environment': environment(config.model.conv_backend),
      'eval_command': (f'python main.py --config=<study config>:{name},{seed} '
                       f'--workdir={run_dir} --mode=eval [--protocol=mshnet] '
                       '[--checkpoint=best]'),
  }


def _metrics(results: dict) -> dict:
  keep = METRICS + ('positive_fraction', 'num_images', 'num_targets', 'step')
  return {k: results[k] for k in keep if k in results}


# ----------------------------------------------------------------------------- the report


def ended_healthy(record: dict) -> bool:
  """Whether a cell's last validated epoch was not collapsed: it never collapsed, or it
  recovered."""
  return not record['collapse']['collapsed'] or bool(record['collapse']['recovered'])


def around_the_switch(record: dict) -> dict:
  """The two training figures that, in the study so far, tell a cell's fate at the switch
  from warm-up to the scale loss: `warmup_iou`, the training IoU of the last warm-up epoch
  (a warm-up that has not found the targets ends near 0), and `positive_after`, the fraction
  of training pixels predicted positive over the first epoch after it (about 0.001 when
  the switch goes well, most of the image when it does not). None where the record has no
  such epoch (a run without warm-up) or no such metric."""
  warm = [e for e in record['epochs'] if e['warmup']]
  after = [e for e in record['epochs'] if not e['warmup']]
  return {'warmup_iou': warm[-1]['train'].get('iou') if warm else None,
          'positive_after': after[0]['train'].get('positive_fraction') if after else None}


def _percent(value: float | None, digits: int) -> str:
  return '-' if value is None else f'{100 * value:.{digits}f}'


def _stats(vals: list[float]) -> dict:
  return {'mean': float(np.mean(vals)),
          'std': float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
          'min': float(np.min(vals)), 'max': float(np.max(vals)), 'n': len(vals)}


def summarize(study: ml_collections.ConfigDict, records: list[dict]) -> dict:
  """Per configuration: seeds done / planned, collapses, and for each protocol and
  checkpoint the mean, std (ddof=1 when two or more seeds), min and max of each metric,
  over all seeds done and (`healthy`) over those that ended healthy. The outcomes are
  bimodal (a collapsed cell's IoU is about 0.0006), so the mean over all seeds mixes the
  collapse rate into the metric; the healthy mean says what a run that trains reaches."""
  summary = {}
  for name in study.configurations:
    mine = sorted((r for r in records if r['configuration'] == name), key=lambda r: r['seed'])
    entry = {'label': study.configurations[name].get('label', name),
             'row': study.configurations[name].row,
             'seeds_done': [r['seed'] for r in mine],
             'seeds_planned': study.configurations[name].seeds,
             'collapses': sum(r['collapse']['collapsed'] for r in mine),
             'recovered': sum(bool(r['collapse']['recovered']) for r in mine),
             'test': {}}
    for protocol in ('basicirstd',) + tuple(p for p in study.protocols if p != 'basicirstd'):
      for checkpoint in CHECKPOINTS:
        stats = {}
        for group, rows in (('all', mine), ('healthy', [r for r in mine if ended_healthy(r)])):
          for metric in METRICS:
            vals = [r['test'].get(protocol, {}).get(checkpoint, {}).get(metric) for r in rows]
            vals = [v for v in vals if v is not None]
            if vals:
              target = stats if group == 'all' else stats.setdefault('healthy', {})
              target[metric] = _stats(vals)
        if stats:
          entry['test'].setdefault(protocol, {})[checkpoint] = stats
    summary[name] = entry
  return summary


def _pm(stats: dict | None, scale: float, digits: int = 2) -> str:
  if not stats:
    return '-'
  return (f"{scale * stats['mean']:.{digits}f} ± {scale * stats['std']:.{digits}f} "
          f"({scale * stats['min']:.{digits}f}–{scale * stats['max']:.{digits}f})")


def markdown(study: ml_collections.ConfigDict, summary: dict, records: list[dict]) -> str:
  """study.md: the summary tables, then one line per cell."""
  budget = study.budget.to_dict()
  lines = [f'# Study on {study.dataset}', '',
           f'Budget (every cell): `{json.dumps(budget, sort_keys=True)}`. '
           f"Collapse: after warm-up, validation IoU < {study.collapse.max_iou:g} with more "
           f"than {study.collapse.min_positive_fraction:.0%} of the validation pixels "
           'predicted positive.', '',
           'Test split; mean ± std (min–max) over the seeds done; IoU, nIoU, Pd in %, '
           'Fa in 1e-6. "Healthy IoU": the same over the seeds whose last validated epoch '
           'was not collapsed (n of them), since a collapsed cell scores about 0 and the '
           'mean over all seeds mixes the collapse rate into the metric.', '']
  for protocol in ('basicirstd',) + tuple(p for p in study.protocols if p != 'basicirstd'):
    for checkpoint in CHECKPOINTS:
      title = {'last': 'last checkpoint', 'best': 'validation-best checkpoint'}[checkpoint]
      resolution = 'native resolution' if protocol == 'basicirstd' else '256x256'
      lines += [f'## {protocol} protocol ({resolution}), {title}', '',
                '| configuration | seeds | collapsed | IoU | nIoU | Pd | Fa | healthy IoU (n) |',
                '|---|---|---|---|---|---|---|---|']
      for name, entry in summary.items():
        stats = entry['test'].get(protocol, {}).get(checkpoint, {})
        healthy = stats.get('healthy', {}).get('iou')
        healthy_n = f" ({healthy['n']})" if healthy else ''
        lines.append(
            f"| {entry['label']} | {len(entry['seeds_done'])}/{entry['seeds_planned']} | "
            f"{entry['collapses']} ({entry['recovered']} recovered) | "
            f"{_pm(stats.get('iou'), 100)} | {_pm(stats.get('niou'), 100)} | "
            f"{_pm(stats.get('pd'), 100)} | {_pm(stats.get('fa'), 1e6, 1)} | "
            f"{_pm(healthy, 100)}{healthy_n} |")
      lines.append('')
  lines += ['## Cells', '',
            'Warm-up IoU: training IoU in the last warm-up epoch. Positive after: % of the '
            'training pixels predicted positive over the first epoch after warm-up.', '',
            '| configuration | seed | warm-up IoU % | positive after % | collapse epoch | '
            'recovered | val-best epoch | IoU last / best (basicirstd) | train h | CPU |',
            '|---|---|---|---|---|---|---|---|---|---|']
  for r in sorted(records, key=lambda r: (r['configuration'], r['seed'])):
    basic = r['test']['basicirstd']
    best = basic.get('best', {}).get('iou')
    best_epoch = r['best_step'] // r['steps_per_epoch'] if r['best_step'] else None
    hours = (r['cost']['train_s'] + r['cost']['eval_s']) / 3600
    switch = around_the_switch(r)
    lines.append(
        f"| {r['label']} | {r['seed']} | {_percent(switch['warmup_iou'], 1)} | "
        f"{_percent(switch['positive_after'], 2)} | {r['collapse']['epoch'] or '-'} | "
        f"{'-' if r['collapse']['recovered'] is None else r['collapse']['recovered']} | "
        f"{best_epoch or '-'} | {100 * basic['last']['iou']:.2f} / "
        f"{'-' if best is None else f'{100 * best:.2f}'} | {hours:.2f} | "
        f"{r['environment']['cpu']} |")
  lines.append('')
  return '\n'.join(lines)


def plot(study: ml_collections.ConfigDict, records: list[dict], path: str) -> None:
  """study.png: one column per configuration; validation IoU (top) and the fraction of
  pixels predicted positive (bottom, log scale) per epoch, one line per seed."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = [n for n in study.configurations if any(r['configuration'] == n for r in records)]
  if not names:  # no cell recorded: a figure left from earlier records would mislead
    if os.path.exists(path):
      os.remove(path)
    return
  fig, axes = plt.subplots(2, len(names), figsize=(1.2 + 3.4 * len(names), 6.0), squeeze=False,
                           sharex=True, sharey='row')
  colours = plt.get_cmap('tab10')
  for col, name in enumerate(names):
    top, bottom = axes[0, col], axes[1, col]
    mine = sorted((r for r in records if r['configuration'] == name), key=lambda r: r['seed'])
    warm = mine[0]['warm_epochs']
    for ax in (top, bottom):
      ax.axvspan(0.5, warm + 0.5, color='0.9', lw=0)
      ax.grid(alpha=0.3)
    for r in mine:
      c = colours(r['seed'] % 10)
      val = [e for e in r['epochs'] if e['validation'] is not None]
      top.plot([e['epoch'] for e in val], [100 * e['validation']['iou'] for e in val], 'o-',
               color=c, ms=3, lw=1.2, label=f"seed {r['seed']}")
      bottom.plot([e['epoch'] for e in val],
                  [max(e['validation']['positive_fraction'], 1e-5) for e in val], 'o-',
                  color=c, ms=3, lw=1.2)
      bottom.plot([e['epoch'] for e in r['epochs']],
                  [max(e['train']['positive_fraction'], 1e-5) for e in r['epochs']], ':',
                  color=c, lw=1)
      if r['collapse']['collapsed']:
        top.plot([r['collapse']['epoch']], [0], 'x', color=c, ms=9, mew=2)
    bottom.axhline(study.collapse.min_positive_fraction, color='k', ls='--', lw=0.8)
    # Wrapped: the labels are sentences, and unwrapped they run into the next panel's.
    top.set_title(textwrap.fill(study.configurations[name].get('label', name), 34), fontsize=9)
    bottom.set_yscale('log')
    bottom.set_xlabel('epoch')
    top.legend(fontsize=7, loc='upper left')
  axes[0, 0].set_ylabel('validation IoU %  (x: collapse)')
  axes[1, 0].set_ylabel('pixels predicted positive\n(solid: validation, dotted: train)')
  # One line of the legend per line of the title, so a one-column figure shows all of it.
  fig.suptitle(f'{study.dataset}\ngrey: warm-up epochs\ndashed: collapse threshold\n'
               'zero plotted at 1e-5', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def write_report(study: ml_collections.ConfigDict, results_dir: str) -> dict:
  """Reads every cell record in `results_dir` and rewrites study.json, study.md, study.png."""
  from irstd_jax import reporting  # pylint: disable=g-import-not-at-top
  records = []
  for name, seed in cells(study):
    path = record_path(results_dir, name, seed)
    if os.path.exists(path):
      with open(path) as f:
        records.append(json.load(f))
  summary = summarize(study, records)
  reporting.write_json(os.path.join(results_dir, 'study.json'),
                       {'dataset': study.dataset, 'budget': study.budget.to_dict(),
                        'collapse_rule': study.collapse.to_dict(), 'summary': summary,
                        'cells': records})
  reporting.write_text(os.path.join(results_dir, 'study.md'),
                       markdown(study, summary, records))
  plot(study, records, os.path.join(results_dir, 'study.png'))
  return summary


def run_study(study: ml_collections.ConfigDict, workdir: str, results_dir: str, *,
              only: tuple[str, ...] = (), max_cells: int | None = None, log=print) -> int:
  """Trains every cell without a record (in `cells` order), writing its record and the
  report after each. Returns the number of cells trained now."""
  from irstd_jax import reporting  # pylint: disable=g-import-not-at-top
  for name in only:
    if name not in study.configurations:
      raise StudyConfigError(f'no configuration {name!r}', '--only',
                             f'use one of {", ".join(study.configurations)}')
  for name, seed in cells(study):  # every cell's config, before anything is trained
    cell_config(study, name, seed)
  todo = [(n, s) for n, s in cells(study)
          if (not only or n in only) and not os.path.exists(record_path(results_dir, n, s))]
  log(f'study: {len(cells(study)) - len(todo)} of {len(cells(study))} cells done; '
      f'{len(todo)} to train')
  trained = 0
  for index, (name, seed) in enumerate(todo):
    if max_cells is not None and trained >= max_cells:
      break
    t0 = time.monotonic()
    log(f'study: cell {index + 1}/{len(todo)}: {name} seed {seed}')
    record = run_cell(study, name, seed, workdir=workdir, log=log)
    path = record_path(results_dir, name, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    reporting.write_json(path, record)
    write_report(study, results_dir)
    trained += 1
    log(f'study: {name} seed {seed} done in {(time.monotonic() - t0) / 60:.1f} min; '
        f"collapsed: {record['collapse']['collapsed']}; test IoU (last) "
        f"{100 * record['test']['basicirstd']['last']['iou']:.2f} %  -> {path}")
  if os.path.isdir(results_dir):
    write_report(study, results_dir)
  return trained


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  from irstd_jax import interrupts  # pylint: disable=g-import-not-at-top
  from irstd_jax import reporting  # pylint: disable=g-import-not-at-top
  reporting.hide_library_chatter()
  study = f.config
  results_dir = f.results_dir or os.path.join(f.workdir, 'results')
  if f.compilation_cache:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_compilation_cache_dir', f.compilation_cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  try:
    if f.report_only:
      write_report(study, results_dir)
      print(f'report rewritten in {results_dir}')
      return
    run_study(study, f.workdir, results_dir, only=tuple(f.only or ()), max_cells=f.max_cells,
              log=lambda line: print(line, flush=True))
  except errors.UserError as e:  # a bad study field, missing raw data, ...
    print(errors.format_error(e), file=sys.stderr)
    sys.exit(errors.EXIT_USER_ERROR)
  except interrupts.Interrupted as e:  # the cell's checkpoint is saved: rerun to resume
    print(f'{e}; the study resumes from there when rerun', file=sys.stderr)
    sys.exit(e.exit_code)


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Study config (configs/study/*.py).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Run directories of the cells and warm-ups.',
                      required=True)
  flags.DEFINE_string('results_dir', None,
                      'Cell records and the report (default WORKDIR/results); small enough '
                      'to commit.')
  flags.DEFINE_list('only', None, 'Train only these configurations.')
  flags.DEFINE_integer('max_cells', None, 'Stop after training this many cells.')
  flags.DEFINE_bool('report_only', False, 'Rewrite the report from the records; train nothing.')
  flags.DEFINE_string('compilation_cache', os.path.expanduser('~/.cache/irstd_jax/jax_cache'),
                      "JAX persistent compilation cache ('' disables).")
  flags.mark_flag_as_required('config')


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
