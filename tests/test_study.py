"""The study runner: its grid, collapse rule and report (fast), and its resume (slow-ish,
subprocesses): a study killed mid-cell and rerun ends with the records of an
uninterrupted one, and a forked cell equals the same cell trained straight through."""
import inspect
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from irstd_jax import study as study_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'tests/study_tiny.py'


def _tiny():
  sys.path.insert(0, ROOT)
  from tests import study_tiny  # pylint: disable=g-import-not-at-top
  return study_tiny.get_config()


# ----------------------------------------------------------------------------- the grid


def test_cell_config_layers_row_budget_overrides_and_seed():
  study = _tiny()
  study.configurations.l1.overrides = ml_collections.ConfigDict(
      {'loss': {'lambda_loc': 0.25}})
  config = study_lib.cell_config(study, 'l1', 7)
  assert config.seed == 7
  assert config.loss.scale_weight == 'diff' and config.loss.lambda_loc == 0.25  # row, override
  assert config.model.widths == (4, 8, 8, 16, 16) and config.train.num_epochs == 3  # budget
  sls = study_lib.cell_config(study, 'sls', 7)
  assert sls.loss.scale_weight == 'variance' and sls.loss.location == 'mean'


def test_unknown_fields_rows_and_cells_are_named():
  study = _tiny()
  study.configurations.l1.overrides = ml_collections.ConfigDict({'loss': {'lamda_loc': 0.}})
  with pytest.raises(study_lib.StudyConfigError, match=r'configurations\.l1\.overrides\.loss\.lamda_loc'):
    study_lib.cell_config(study, 'l1', 0)
  study = _tiny()
  study.configurations.l1.row = 'a1_diff_los'
  with pytest.raises(study_lib.StudyConfigError, match='a1_diff_los'):
    study_lib.cell_config(study, 'l1', 0)
  with pytest.raises(study_lib.StudyConfigError, match='no such configuration'):
    study_lib.cell_config(_tiny(), 'l2', 0)
  with pytest.raises(study_lib.StudyConfigError, match='<configuration>,<seed>'):
    study_lib.parse_cell('l1')
  assert study_lib.parse_cell('l1, 3') == ('l1', 3)


def test_cells_in_priority_then_seed_order_and_shared_warmups():
  study = _tiny()
  study.configurations.l1.seeds = 2
  study.configurations.sls.seeds = 2
  study.configurations.sls.priority = 1
  assert study_lib.cells(study) == [('l1', 0), ('l1', 1), ('sls', 0), ('sls', 1)]
  name = lambda cell, seed: study_lib.warmup_name(study, cell, seed)
  assert name('l1', 0) == name('sls', 0) == 'l1-seed0'  # differ in `loss` only: one warm-up
  assert name('l1', 1) == 'l1-seed1'  # another seed
  study.configurations.sls.overrides = ml_collections.ConfigDict(
      {'model': {'spatial_attention': 'gaussian_pinwheel'}})
  assert name('sls', 0) == 'sls-seed0'  # another model: its own warm-up
  assert name('l1', 0) == 'l1-seed0'


def test_a_warmup_is_reused_only_by_the_config_it_was_trained_with(tmp_path):
  study = _tiny()
  config = study_lib.cell_config(study, 'l1', 0)
  warm_dir = str(tmp_path / 'warmup' / 'l1-seed0')
  study_lib.check_warmup_config(config, warm_dir)  # first use: records the config
  stored = json.load(open(os.path.join(warm_dir, study_lib.WARMUP_CONFIG)))
  assert 'loss' not in stored and stored['seed'] == 0
  lines = []
  study_lib.check_warmup_config(study_lib.cell_config(study, 'sls', 0), warm_dir, lines.append)
  assert not lines  # another loss shares it silently
  # A field added by a code update (absent from the stored config) is named, not refused.
  del stored['train']['log_every_steps']
  json.dump(stored, open(os.path.join(warm_dir, study_lib.WARMUP_CONFIG), 'w'))
  study_lib.check_warmup_config(config, warm_dir, lines.append)
  assert len(lines) == 1 and 'train.log_every_steps' in lines[0]
  # A field with another value is refused with the field and the fix.
  other = study_lib.cell_config(study, 'l1', 0)
  other.optim.learning_rate = 0.5
  with pytest.raises(study_lib.StudyConfigError, match='optim.learning_rate') as error:
    study_lib.check_warmup_config(other, warm_dir, lines.append)
  assert 'delete' in str(error.value)


STUDY_CONFIGS = sorted(str(p.relative_to(ROOT)) for p in
                       pathlib.Path(ROOT, 'configs', 'study').glob('*.py')
                       if p.name != '__init__.py')


@pytest.mark.parametrize('path', STUDY_CONFIGS)
def test_every_cell_of_every_study_config_is_a_valid_run(path, load_config):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from irstd_jax import losses  # pylint: disable=g-import-not-at-top
  from irstd_jax import models  # pylint: disable=g-import-not-at-top
  study = load_config(path)
  loss_keywords = set(inspect.signature(losses.mshnet_loss).parameters)
  grid = study_lib.cells(study)
  assert grid
  models_built = set()
  for name, seed in grid:
    config = load_config(f'{path}:{name},{seed}')  # the form main.py --mode=eval takes
    assert config.seed == seed
    assert set(config.loss) <= loss_keywords, set(config.loss) - loss_keywords
    if config.model.to_json() not in models_built:  # each distinct model once
      models_built.add(config.model.to_json())
      nnx.eval_shape(lambda: models.build_model(config.model, rngs=nnx.Rngs(0)))


# ----------------------------------------------------------------------------- collapse


def _epoch(epoch, warmup, iou=None, positive=None):
  validation = None if iou is None else {'iou': iou, 'positive_fraction': positive}
  return {'epoch': epoch, 'warmup': warmup, 'validation': validation}


def test_collapse_is_low_iou_with_many_positive_pixels_after_warmup():
  rule = dict(max_iou=0.05, min_positive_fraction=0.10)
  healthy = [_epoch(1, True), _epoch(2, False, 0.40, 0.004), _epoch(3, False, 0.45, 0.004)]
  assert study_lib.collapse(healthy, **rule) == {
      'collapsed': False, 'epoch': None, 'collapsed_epochs': [], 'recovered': None}
  # Empty predictions (IoU 0, nothing positive) are a weak model, not a collapse.
  assert not study_lib.collapse([_epoch(2, False, 0.0, 0.0)], **rule)['collapsed']
  # Warm-up epochs never count, even if they would match.
  assert not study_lib.collapse([_epoch(1, True, 0.0, 0.9)], **rule)['collapsed']
  painted = [_epoch(1, True), _epoch(2, False, 0.30, 0.01), _epoch(3, False, 0.001, 0.97),
             _epoch(4, False, 0.002, 0.60)]
  assert study_lib.collapse(painted, **rule) == {
      'collapsed': True, 'epoch': 3, 'collapsed_epochs': [3, 4], 'recovered': False}
  recovered = painted[:3] + [_epoch(4, False, 0.35, 0.01)]
  assert study_lib.collapse(recovered, **rule)['recovered'] is True


# ----------------------------------------------------------------------------- the report


def _record(name, seed, iou, collapsed=False):
  last = {'iou': iou, 'niou': iou / 2, 'pd': 0.9, 'fa': 1e-5}
  return {'configuration': name, 'seed': seed, 'label': name, 'warm_epochs': 1,
          'steps_per_epoch': 3, 'num_steps': 9, 'best_step': 6,
          'epochs': [{**_epoch(1, True), 'train': {'positive_fraction': 0.02, 'iou': 0.25}},
                     {**_epoch(2, False, iou, 0.3 if collapsed else 0.01),
                      'train': {'positive_fraction': 0.6 if collapsed else 0.001}}],
          'collapse': {'collapsed': collapsed, 'epoch': 2 if collapsed else None,
                       'recovered': False if collapsed else None, 'collapsed_epochs': []},
          'test': {'basicirstd': {'last': last, 'best': last}, 'mshnet': {'last': last}},
          'cost': {'train_s': 3600, 'eval_s': 0}, 'environment': {'cpu': 'test cpu'}}


def test_summary_statistics_over_seeds_match_numpy(tmp_path):
  study = _tiny()
  study.configurations.l1.seeds = 3
  records = [_record('l1', 0, 0.40), _record('l1', 1, 0.50), _record('l1', 2, 0.03, True)]
  summary = study_lib.summarize(study, records)['l1']
  values = np.array([0.40, 0.50, 0.03])
  stats = summary['test']['basicirstd']['last']['iou']
  assert stats['mean'] == pytest.approx(values.mean())
  assert stats['std'] == pytest.approx(values.std(ddof=1))
  assert (stats['min'], stats['max'], stats['n']) == (0.03, 0.50, 3)
  assert summary['collapses'] == 1 and summary['seeds_done'] == [0, 1, 2]
  assert 'best' not in summary['test']['mshnet']  # no seed has it
  # The healthy statistics leave out the seed whose run ended collapsed.
  healthy = summary['test']['basicirstd']['last']['healthy']['iou']
  assert healthy['mean'] == pytest.approx(0.45)
  assert healthy['std'] == pytest.approx(np.std([0.40, 0.50], ddof=1))
  assert (healthy['min'], healthy['max'], healthy['n']) == (0.40, 0.50, 2)
  text = study_lib.markdown(study, study_lib.summarize(study, records), records)
  assert f'| l1 | 3/3 | 1 (0 recovered) | {100 * values.mean():.2f} ± ' in text
  assert '| 45.00 ± 7.07 (40.00–50.00) (2) |' in text
  assert text.count('| sls | 0/1 | 0 (0 recovered) | - | - | - | - | - |') == 4


def test_a_recovered_cell_counts_as_healthy_a_collapsed_one_does_not():
  record = _record('l1', 0, 0.2, collapsed=True)
  assert not study_lib.ended_healthy(record)
  record['collapse']['recovered'] = True
  assert study_lib.ended_healthy(record)
  assert study_lib.ended_healthy(_record('l1', 1, 0.4))


def test_cells_table_shows_the_warmup_outcome_and_the_switch():
  study = _tiny()
  records = [_record('l1', 0, 0.4), _record('sls', 0, 0.02, collapsed=True)]
  assert study_lib.around_the_switch(records[1]) == {'warmup_iou': 0.25,
                                                      'positive_after': 0.6}
  text = study_lib.markdown(study, study_lib.summarize(study, records), records)
  assert '| l1 | 0 | 25.0 | 0.10 | - | - | 2 | 40.00 / 40.00 |' in text
  assert '| sls | 0 | 25.0 | 60.00 | 2 | False | 2 | 2.00 / 2.00 |' in text
  # A run without warm-up epochs (warm_epochs = 0) has no warm-up figure.
  records[0]['epochs'] = [e for e in records[0]['epochs'] if not e['warmup']]
  assert study_lib.around_the_switch(records[0])['warmup_iou'] is None
  text = study_lib.markdown(study, study_lib.summarize(study, records), records)
  assert '| l1 | 0 | - | 0.10 | - |' in text


def test_report_is_written_from_the_records_alone(tmp_path):
  study = _tiny()
  for record in (_record('l1', 0, 0.4), _record('sls', 0, 0.02, True)):
    path = study_lib.record_path(str(tmp_path), record['configuration'], record['seed'])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      json.dump(record, f)
  study_lib.write_report(study, str(tmp_path))
  saved = json.load(open(tmp_path / 'study.json'))
  assert [c['configuration'] for c in saved['cells']] == ['l1', 'sls']
  assert saved['summary']['sls']['collapses'] == 1
  assert (tmp_path / 'study.md').read_text().startswith('# Study on synthetic')
  assert (tmp_path / 'study.png').stat().st_size > 10_000
  # Records withdrawn (e.g. moved aside when the study's kernels changed): no stale figure.
  shutil.rmtree(tmp_path / 'cells')
  study_lib.write_report(study, str(tmp_path))
  assert json.load(open(tmp_path / 'study.json'))['cells'] == []
  assert not (tmp_path / 'study.png').exists()


# ----------------------------------------------------------------------------- resume


def test_cost_is_flushed_while_running_and_accumulates_over_reruns(tmp_path):
  directory = str(tmp_path / 'cell')

  def on_disk():
    with open(os.path.join(directory, 'timing.json')) as f:
      return json.load(f)['train_s']

  with study_lib.timed(directory, 'train_s', flush_every_s=0.05) as total:
    time.sleep(0.3)
    # Already on disk before the block ends: a run killed here keeps it.
    assert 0 < on_disk() < 0.3 + 0.1
  first = on_disk()
  assert 0.3 <= first < 1.0 and total() == first
  with study_lib.timed(directory, 'train_s', flush_every_s=60) as total:
    time.sleep(0.1)
  assert first + 0.1 <= on_disk() < first + 1.0 and total() == on_disk()
  # Another key in the same file is kept apart.
  with study_lib.timed(directory, 'eval_s'):
    pass
  assert on_disk() == total()


def _study_command(workdir, results, cache):
  return [sys.executable, '-m', 'irstd_jax.study', f'--config={TINY}', f'--workdir={workdir}',
          f'--results_dir={results}', f'--compilation_cache={cache}']


def _comparable(record):
  """What must not depend on interruptions: everything but time, machine and paths."""
  return {k: v for k, v in record.items() if k not in ('cost', 'environment', 'eval_command')}


def _records(results):
  out = {}
  for name in ('l1', 'sls'):
    with open(study_lib.record_path(str(results), name, 0)) as f:
      out[name] = _comparable(json.load(f))
  return out


@pytest.mark.slow
def test_killed_study_resumes_to_the_uninterrupted_results(tmp_path):
  cache = str(tmp_path / 'cache')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  straight = subprocess.run(_study_command(tmp_path / 'a', tmp_path / 'a_results', cache),
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
  assert straight.returncode == 0, straight.stderr[-3000:]
  assert 'warm-up (1 epochs)' in straight.stdout and 'forks from the shared warm-up' in straight.stdout

  # Kill the second study twice: inside the shared warm-up (after its first checkpoint at
  # step 2, mid-epoch), then inside the second cell (after its first post-fork checkpoint).
  workdir, results = tmp_path / 'b', tmp_path / 'b_results'
  warm_root = workdir / 'warmup'
  kill_when = [
      lambda: warm_root.exists() and any(
          (d / 'checkpoints' / '2').exists() for d in warm_root.iterdir()),
      lambda: (workdir / 'cells' / 'sls' / 'seed0' / 'checkpoints' / '6').exists(),
  ]
  for condition in kill_when:
    process = subprocess.Popen(_study_command(workdir, results, cache), cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while not condition() and process.poll() is None and time.monotonic() < deadline:
      time.sleep(0.2)
    assert process.poll() is None, 'the study ended before the kill point'
    process.send_signal(signal.SIGKILL)
    process.wait()
  assert not (results / 'cells' / 'sls' / 'seed0.json').exists()
  resumed = subprocess.run(_study_command(workdir, results, cache), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=1200)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert _records(results) == _records(tmp_path / 'a_results')
  # A finished study trains nothing when rerun.
  again = subprocess.run(_study_command(workdir, results, cache), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
  assert '2 of 2 cells done; 0 to train' in again.stdout

  # The forked cell equals the same cell trained straight through, without any fork.
  straight_cell = tmp_path / 'straight_cell'
  run = subprocess.run(
      [sys.executable, 'main.py', f'--config={TINY}:sls,0', f'--workdir={straight_cell}',
       f'--compilation_cache={cache}'], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  last = pathlib.Path('eval_test_basicirstd_last') / 'eval_results.json'
  forked = json.load(open(tmp_path / 'a' / 'cells' / 'sls' / 'seed0' / last))
  direct = json.load(open(straight_cell / last))
  for key in ('iou', 'niou', 'pd', 'fa', 'step'):
    assert forked[key] == direct[key], key
  assert (json.load(open(tmp_path / 'a' / 'cells' / 'sls' / 'seed0' / 'history.json'))['epochs']
          == json.load(open(straight_cell / 'history.json'))['epochs'])


@pytest.mark.parametrize('best_step', [6, 12])
def test_a_best_checkpoint_at_the_last_step_is_not_evaluated_again(monkeypatch, best_step):
  """The mshnet protocol is evaluated for the last checkpoint, and for the validation-best
  one only when it is another step; at the last step the best's metrics are the last's."""
  from irstd_jax import evaluate, eval_outputs  # pylint: disable=g-import-not-at-top
  evaluated = []

  def fake_eval(config, run_dir, *, protocol, checkpoint):
    evaluated.append((protocol, checkpoint))
    step = 12 if checkpoint == 'last' else best_step
    return {'iou': 0.3 if checkpoint == 'last' else 0.2, 'niou': 0.4, 'pd': 0.9, 'fa': 1e-5,
            'step': step}

  monkeypatch.setattr(evaluate, 'run_eval', fake_eval)
  monkeypatch.setattr(eval_outputs, 'read_results', lambda *args: None)
  config = ml_collections.ConfigDict({'eval': {'split': 'test'}})
  final = {'iou': 0.31, 'niou': 0.41, 'pd': 0.91, 'fa': 2e-5, 'step': 12,
           'val_best': {'iou': 0.21, 'niou': 0.4, 'pd': 0.9, 'fa': 1e-5, 'step': best_step}}
  results = study_lib.cell_test_results(config, '/nowhere', final, ('basicirstd', 'mshnet'))
  assert results['basicirstd'] == {'last': {k: final[k] for k in ('iou', 'niou', 'pd', 'fa', 'step')},
                                   'best': final['val_best']}
  if best_step == 12:
    assert evaluated == [('mshnet', 'last')]
    assert results['mshnet']['best'] == results['mshnet']['last']
  else:
    assert evaluated == [('mshnet', 'last'), ('mshnet', 'best')]
    assert results['mshnet']['best']['iou'] == 0.2 and results['mshnet']['best']['step'] == 6


def test_records_name_the_commit_of_the_code_that_ran():
  commit = study_lib.source_commit()
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if head.returncode != 0:
    assert commit is None
  else:
    assert commit.split('+')[0] == head.stdout.strip()
  assert study_lib.environment()['commit'] == commit


def test_records_name_the_conv_kernels_and_a_pinned_backend_never_falls_back(monkeypatch):
  from irstd_jax import onednn_conv  # pylint: disable=g-import-not-at-top
  study = _tiny()
  config = study_lib.cell_config(study, 'l1', 0)
  assert study_lib.environment('xla')['conv_backend'] == 'xla'
  config.model.conv_backend = 'xla'
  study_lib.check_conv_backend(config)  # lax.conv runs everywhere
  # A machine where the oneDNN extension did not build: 'onednn' would run lax.conv.
  monkeypatch.setattr(onednn_conv, 'unavailable_here', lambda: 'libdnnl.so not found')
  monkeypatch.setattr(onednn_conv, 'resolved_backend', lambda backend: 'xla')
  config.model.conv_backend = 'onednn'
  with pytest.raises(study_lib.StudyConfigError, match='libdnnl.so not found'):
    study_lib.check_conv_backend(config)
  config.model.conv_backend = 'auto'  # 'auto' means whichever runs: never refused
  study_lib.check_conv_backend(config)
