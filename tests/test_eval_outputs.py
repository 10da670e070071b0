"""The evaluation folders: one layout for training and --mode=eval; the earlier layout read."""
import json
import os
import sys

import numpy as np
import pytest

from irstd_jax import eval_outputs
from irstd_jax import pdfa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _metrics(iou, step, **extra):
  return {'iou': iou, 'niou': iou / 2, 'pd': 0.75, 'fa': 2e-5, 'positive_fraction': 0.01,
          'num_images': 4, 'num_targets': 4, 'step': step, **extra}


def _old_layout_run(run_dir, *, last_step=9, best_step=6):
  """A run directory as irstd_jax wrote it before eval_outputs.py: training's record of its
  last checkpoint at the root (with val_best), --mode=eval's folders beside it."""
  os.makedirs(os.path.join(run_dir, 'checkpoints', str(last_step)))
  os.makedirs(os.path.join(run_dir, 'checkpoints_best', str(best_step)))
  root = _metrics(0.40, last_step, split='test', checkpoint='last', protocol='basicirstd',
                  dataset='synthetic', num_parameters=1234,
                  val_best={**_metrics(0.45, best_step), 'checkpoint': 'val-best',
                            'validation_iou': 0.5})
  with open(os.path.join(run_dir, 'eval_results.json'), 'w') as f:
    json.dump(root, f)
  with open(os.path.join(run_dir, 'eval_per_image.json'), 'w') as f:
    json.dump([{'id': 'img1', 'iou': 0.25, 'targets': 1, 'detected': 0,
                'false_alarm_pixels': 3, 'height': 32, 'width': 32}], f)
  for checkpoint, step, iou in (('last', last_step, 0.30), ('best', best_step, 0.35)):
    folder = eval_outputs.folder(run_dir, 'test', 'mshnet', checkpoint)
    os.makedirs(folder)
    with open(os.path.join(folder, 'eval_results.json'), 'w') as f:
      json.dump(_metrics(iou, step, split='test', protocol='mshnet', checkpoint=checkpoint), f)
  return root


def _curve(meta):
  rng = np.random.default_rng(0)
  acc = pdfa.SweepAccumulator(pdfa.logit_grid(11, 4.0))
  acc.update(rng.normal(size=(16, 16)).astype(np.float32), rng.random((16, 16)) > 0.9)
  return {**meta, **acc.result()}


def test_an_old_layout_run_is_read(tmp_path):
  run = str(tmp_path / 'run')
  root = _old_layout_run(run)
  assert eval_outputs.read_results(run, 'test', 'basicirstd', 'last') == root
  assert eval_outputs.read_results(run, 'test', 'mshnet', 'best')['iou'] == 0.35
  # The root record is of the test split, basicirstd, last checkpoint only.
  assert eval_outputs.read_results(run, 'validation', 'basicirstd', 'last') is None
  assert eval_outputs.read_results(run, 'test', 'basicirstd', 'best') is None
  [stored] = eval_outputs.stored(run, 'test', 'basicirstd', 'last')
  assert stored.per_image()[0]['id'] == 'img1'


def test_a_newer_folder_wins_and_keeps_the_root_records_training_keys(tmp_path):
  run = str(tmp_path / 'run')
  root = _old_layout_run(run)
  folder = eval_outputs.folder(run, 'test', 'basicirstd', 'last')
  os.makedirs(folder)
  path = os.path.join(folder, 'eval_results.json')
  with open(path, 'w') as f:  # --mode=eval of the same step: no val_best of its own
    json.dump(_metrics(0.40, 9, auc=0.5), f)
  read = eval_outputs.read_results(run, 'test', 'basicirstd', 'last')
  assert read['auc'] == 0.5 and read['val_best'] == root['val_best']
  assert read['num_parameters'] == 1234
  with open(path, 'w') as f:  # an older step than the root's: the root record wins
    json.dump(_metrics(0.10, 3), f)
  assert eval_outputs.read_results(run, 'test', 'basicirstd', 'last') == root


def test_write_keeps_training_keys_only_for_the_same_step(tmp_path):
  out = str(tmp_path / 'eval_test_basicirstd_last')
  meta = {'split': 'test', 'protocol': 'basicirstd', 'checkpoint': 'last'}
  trained = _metrics(0.4, 9, **meta, num_parameters=7, val_best=_metrics(0.5, 6))
  eval_outputs.write(out, trained, [{'id': 'b', 'iou': 0.5, 'targets': 1, 'detected': 1,
                                     'false_alarm_pixels': 0, 'height': 8, 'width': 8}],
                     _curve({**meta, 'step': 9}))
  assert sorted(os.listdir(out)) == ['eval_results.json', 'pdfa.json', 'pdfa.png',
                                     'per_image.csv']
  again = eval_outputs.write(out, _metrics(0.4, 9, **meta), [], _curve({**meta, 'step': 9}))
  assert again['val_best'] == trained['val_best'] and again['num_parameters'] == 7
  with open(os.path.join(out, 'eval_results.json')) as f:
    assert json.load(f) == again
  later = eval_outputs.write(out, _metrics(0.3, 12, **meta), [], _curve({**meta, 'step': 12}))
  assert 'val_best' not in later and 'num_parameters' not in later


def test_a_rewrite_stopped_half_way_leaves_an_unfinished_folder(tmp_path, monkeypatch):
  from irstd_jax import pdfa_plots  # pylint: disable=g-import-not-at-top
  meta = {'split': 'test', 'protocol': 'basicirstd', 'checkpoint': 'last'}
  out = eval_outputs.folder(str(tmp_path), 'test', 'basicirstd', 'last')
  eval_outputs.write(out, _metrics(0.4, 9, **meta), [], _curve({**meta, 'step': 9}))
  assert eval_outputs.read_results(str(tmp_path), 'test', 'basicirstd', 'last')['iou'] == 0.4

  def stopped(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(pdfa_plots, 'plot_curve', stopped)
  with pytest.raises(KeyboardInterrupt):
    eval_outputs.write(out, _metrics(0.3, 12, **meta), [], _curve({**meta, 'step': 12}))
  # The old record would now describe the new per-image rows and curve: it is gone.
  assert eval_outputs.read_results(str(tmp_path), 'test', 'basicirstd', 'last') is None


def test_an_unfinished_folder_is_not_a_result(tmp_path):
  folder = eval_outputs.folder(str(tmp_path), 'test', 'mshnet', 'last')
  os.makedirs(folder)
  open(os.path.join(folder, 'per_image.csv'), 'w').close()  # stopped before its record
  assert eval_outputs.read_results(str(tmp_path), 'test', 'mshnet', 'last') is None
  assert eval_outputs.stored(str(tmp_path), 'test', 'mshnet', 'last') == []


def test_study_resumes_an_old_layout_cell_without_training_or_evaluating(tmp_path,
                                                                         monkeypatch):
  """A study cell finished by the earlier code (record at the root, mshnet folders) is
  recorded from what is on disk: nothing is trained or evaluated again."""
  sys.path.insert(0, ROOT)
  from irstd_jax import evaluate  # pylint: disable=g-import-not-at-top
  from irstd_jax import study as study_lib  # pylint: disable=g-import-not-at-top
  from irstd_jax import train  # pylint: disable=g-import-not-at-top
  from tests import study_tiny  # pylint: disable=g-import-not-at-top
  study = study_tiny.get_config()
  workdir = str(tmp_path / 'study')
  run_dir = study_lib.cell_dir(workdir, 'l1', 0)
  root = _old_layout_run(run_dir, last_step=9, best_step=6)  # 12 images / 4 x 3 epochs
  with open(os.path.join(run_dir, 'history.json'), 'w') as f:
    json.dump({'epochs': [{'epoch': e, 'step': 3 * e, 'warmup': e == 1,
                           'validation': {'iou': 0.3, 'positive_fraction': 0.01}}
                          for e in (1, 2, 3)]}, f)

  def must_not_run(*args, **kwargs):
    raise AssertionError('the cell was finished: nothing may be trained or evaluated')

  monkeypatch.setattr(train, 'train_and_evaluate', must_not_run)
  monkeypatch.setattr(evaluate, 'run_eval', must_not_run)
  record = study_lib.run_cell(study, 'l1', 0, workdir=workdir, log=lambda _: None)
  assert record['test']['basicirstd']['last']['iou'] == root['iou']
  assert record['test']['basicirstd']['best']['iou'] == root['val_best']['iou']
  assert record['test']['mshnet'] == {'last': pytest.approx(_metrics(0.30, 9)),
                                      'best': pytest.approx(_metrics(0.35, 6))}
  assert record['best_step'] == 6 and record['num_steps'] == 9
