"""Evaluation: batch size, image order and padding never change a prediction or a metric;
the eval mode's files; the sweep's p = 0.5 point equals the plain evaluation."""
import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import tiny_checkpoint
from irstd_jax import checkpointing
from irstd_jax import eval_outputs
from irstd_jax import evaluate
from irstd_jax import metrics
from irstd_jax import pdfa
from irstd_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Native sizes pad to two shapes only (32x32 and 64x64): few compiles.
SIZES = [(32, 32), (20, 30), (64, 50), (40, 40), (33, 64), (32, 17), (64, 64), (50, 33),
         (25, 25), (60, 40)]


def _source(order=None):
  rng = np.random.default_rng(0)
  records = []
  for i, (h, w) in enumerate(SIZES):
    image = rng.integers(0, 90, (h, w), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    y, x = rng.integers(2, min(h, w) - 4, 2)
    mask[y:y + 2, x:x + 3] = 1
    image[mask > 0] = 250
    records.append({'image': image[..., None], 'mask': mask[..., None], 'id': f'img{i:02d}'})
  return [records[i] for i in order] if order is not None else records


@pytest.fixture(scope='module')
def model():
  config = tiny_checkpoint.tiny_config()
  graphdef, state, shardings, mesh = tiny_checkpoint.build(config)
  return config, graphdef, state, shardings, mesh


def _evaluator(model, batch_size):
  config, graphdef, _, shardings, mesh = model
  config = config.copy_and_resolve_references()
  config.eval.batch_size = batch_size
  return evaluate.Evaluator(config, graphdef, mesh, shardings)


def _gap_thresholds(logits, quantiles):
  """Thresholds between two logit values at least 1e-5 apart, near the given quantiles.

  XLA may round a logit differently for another batch shape (GEMM blocking depends on the
  batch dimension; measured <= 3e-8 here), so a threshold never sits on a logit value.
  """
  values = np.unique(np.concatenate([l.ravel() for l in logits.values()]))
  out = []
  for q in quantiles:
    i = int(q * (values.size - 1))
    while values[i + 1] - values[i] < 1e-5:
      i += 1
    out.append(0.5 * (values[i] + values[i + 1]))
  return np.asarray(out)


def _run(evaluator, state, source, thresholds=None):
  logits = {i: l.copy() for i, l, _ in evaluator.predictions(state, source)}
  if thresholds is None:  # inside the random-init logits' range: non-trivial masks
    thresholds = _gap_thresholds(logits, np.linspace(0.3, 0.7, 9))
  sweep = pdfa.SweepAccumulator(thresholds)
  results, per_image = evaluator.evaluate(state, source, threshold=thresholds[4],
                                          sweep=sweep)
  return logits, results, sorted(per_image, key=lambda r: r['id']), sweep.result(), thresholds


def test_batch_size_and_image_order_change_nothing(model):
  """Batch 1 vs 8 and a shuffled split: identical masks and metrics.

  Logits agree to float rounding across batch sizes (XLA picks kernels per batch shape)
  and bit for bit within one batch size, whatever else shares the batch.
  """
  state = model[2]
  logits1, results1, rows1, curve1, thresholds = _run(_evaluator(model, 1), state, _source())
  evaluator8 = _evaluator(model, 8)
  logits8, results8, rows8, curve8, _ = _run(evaluator8, state, _source(), thresholds)
  shuffled = np.random.default_rng(1).permutation(len(SIZES))
  logits_s, results_s, rows_s, curve_s, _ = _run(evaluator8, state, _source(shuffled),
                                                 thresholds)
  assert sorted(logits1) == sorted(logits8) == [f'img{i:02d}' for i in range(len(SIZES))]
  for key, value in logits1.items():
    assert value.shape == SIZES[int(key[3:])]
    np.testing.assert_allclose(logits8[key], value, rtol=1e-5, atol=1e-6)
    for t in thresholds:
      np.testing.assert_array_equal(logits8[key] > t, value > t)
    np.testing.assert_array_equal(logits_s[key], logits8[key])  # bit for bit
  assert results1['num_targets'] == len(SIZES) and 0 < results1['iou'] < 1
  assert results8 == results1 and rows8 == rows1 and curve8 == curve1
  # Another order sums nIoU in another order: equal up to float addition's rounding.
  assert rows_s == rows1 and curve_s['pd'] == curve1['pd'] and curve_s['fa'] == curve1['fa']
  assert {k: v for k, v in results_s.items() if k != 'niou'} == {
      k: v for k, v in results1.items() if k != 'niou'}
  assert results_s['niou'] == pytest.approx(results1['niou'], rel=1e-12)


def test_padding_never_reaches_the_metrics(model, monkeypatch):
  """The network sees images padded to 32; only the native region is scored."""
  evaluator = _evaluator(model, 4)

  def fake_logits(state, batch):
    del state
    logits = np.where(batch.image > 128, 2.0, -2.0).astype(np.float32)
    for row in range(batch.image.shape[0]):  # everything in the padding "detects"
      logits[row, batch.heights[row]:] = 9.0
      logits[row, :, batch.widths[row]:] = 9.0
    return logits

  monkeypatch.setattr(evaluator, 'predict_logits', fake_logits)
  results, per_image = evaluator.evaluate(None, _source())
  reference = metrics.MetricAccumulator()
  for record in _source():
    reference.update(record['image'][..., 0] > 128, record['mask'][..., 0])
  assert results == reference.result()
  assert results['num_pixels'] == sum(h * w for h, w in SIZES)
  assert results['fa'] == 0.0 and results['pd'] == 1.0
  assert [(r['height'], r['width']) for r in sorted(per_image, key=lambda r: r['id'])] == SIZES


def test_mshnet_protocol_resizes_to_256():
  source = evaluate.protocol_source(_source(), 'mshnet')
  record = source[2]
  assert record['image'].shape == record['mask'].shape == (256, 256, 1)
  assert set(np.unique(record['mask'])) <= {0, 1} and record['mask'].sum() > 0
  assert evaluate.protocol_source(_source(), 'basicirstd')[2]['image'].shape == (64, 50, 1)
  with pytest.raises(ValueError, match='protocol'):
    evaluate.protocol_source(_source(), 'dnanet')


def test_eval_mode_writes_results_csv_and_a_sweep_that_matches_at_one_half(tmp_path):
  config = tiny_checkpoint.tiny_config()
  tiny_checkpoint.save_checkpoint(config, tmp_path, step=7)
  results = evaluate.run_eval(config, str(tmp_path), split='test', protocol='basicirstd')
  out = tmp_path / 'eval_test_basicirstd_last'
  saved = json.loads((out / 'eval_results.json').read_text())
  for key in ('iou', 'niou', 'pd', 'fa', 'num_images', 'num_targets', 'split', 'step',
              'protocol', 'checkpoint', 'auc', 'pd_at_fa'):
    assert key in saved, key
  assert saved == json.loads(json.dumps(results))
  assert (saved['split'], saved['step'], saved['protocol'], saved['num_images']) == (
      'test', 7, 'basicirstd', 6)
  assert saved['num_pixels'] == 6 * 32 * 32
  with open(out / 'per_image.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 6 and list(rows[0]) == list(eval_outputs.PER_IMAGE_FIELDS)
  assert sum(int(r['targets']) for r in rows) == saved['num_targets']
  assert sum(int(r['false_alarm_pixels']) for r in rows) == saved['false_alarm_pixels']
  curve = json.loads((out / 'pdfa.json').read_text())
  mid = curve['thresholds'].index(0.5)
  for key in ('iou', 'niou', 'pd', 'fa'):
    assert curve[key][mid] == saved[key], key  # the sweep at p = 0.5 IS the plain eval
  assert curve['false_alarm_pixels'][mid] == saved['false_alarm_pixels']
  assert (out / 'pdfa.png').stat().st_size > 10_000


def test_without_the_sweep_the_metrics_are_unchanged_and_no_stale_curve_remains(tmp_path):
  config = tiny_checkpoint.tiny_config()
  tiny_checkpoint.save_checkpoint(config, tmp_path, step=7)
  swept = evaluate.run_eval(config, str(tmp_path), split='test', protocol='basicirstd')
  out = tmp_path / 'eval_test_basicirstd_last'
  assert (out / 'pdfa.json').exists()
  config.eval.pdfa_sweep = False
  plain = evaluate.run_eval(config, str(tmp_path), split='test', protocol='basicirstd')
  assert {k: v for k, v in swept.items() if k not in ('auc', 'auc_fa_max', 'pd_at_fa')} == plain
  # The earlier evaluation's curve would describe the folder's record; it is gone.
  assert not (out / 'pdfa.json').exists() and not (out / 'pdfa.png').exists()
  assert json.loads((out / 'eval_results.json').read_text()) == json.loads(json.dumps(plain))



def test_mshnet_protocol_scores_256x256_images(model):
  source = _source()[:3]
  results, per_image, curve = evaluate.evaluate_source(
      _evaluator(model, 4), model[2], source, protocol='mshnet',
      logit_thresholds=np.array([-1.0, 0.0, 1.0]))
  assert results['num_pixels'] == 3 * 256 * 256
  assert {(r['height'], r['width']) for r in per_image} == {(256, 256)}
  assert curve['iou'][1] == results['iou'] and curve['fa'][1] == results['fa']


def test_missing_checkpoints_are_an_error_that_creates_nothing(tmp_path):
  config = tiny_checkpoint.tiny_config()
  with pytest.raises(UserError, match='checkpoints_best'):
    evaluate.run_eval(config, str(tmp_path), checkpoint='best')
  assert not os.listdir(tmp_path)


def test_main_predict_mode_needs_an_input(tmp_path):
  usage = subprocess.run([sys.executable, 'main.py', '--config=configs/synthetic.py',
                          f'--workdir={tmp_path}/run', '--mode=predict'],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
  assert usage.returncode != 0 and '--input' in usage.stderr
  assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_main_eval_mode(tmp_path):
  config = tiny_checkpoint.tiny_config()
  tiny_checkpoint.save_checkpoint(config, tmp_path / 'run', step=3)
  overrides = ['--config.model.widths=(4,8,8,16,16)', '--config.data.synthetic.image_size=32',
               '--config.data.synthetic.num_test=6', '--config.eval.batch_size=4']
  proc = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/synthetic.py', f'--workdir={tmp_path}/run',
       '--mode=eval', '--split=test', f'--output={tmp_path}/out',
       f'--compilation_cache={REPO}/.jax_cache', *overrides],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'basicirstd protocol (native)' in proc.stdout and 'Pd@Fa=1e-6' in proc.stdout
  assert json.loads((tmp_path / 'out' / 'eval_results.json').read_text())['step'] == 3


def test_checkpoint_of_another_config_is_a_named_error_that_moves_nothing(tmp_path):
  config = tiny_checkpoint.tiny_config()
  tiny_checkpoint.save_checkpoint(config, tmp_path / 'run', step=3)
  other = tiny_checkpoint.tiny_config()
  other.model.widths = (4, 8, 8, 16, 32)  # a wider middle stage: other kernel shapes
  with pytest.raises(checkpointing.CheckpointMismatchError,
                     match='could be restored onto the state this config describes'):
    evaluate.run_eval(other, str(tmp_path / 'run'), output=str(tmp_path / 'out'))
  assert sorted(os.listdir(tmp_path / 'run')) == ['checkpoints']  # nothing quarantined
  assert os.listdir(tmp_path / 'run' / 'checkpoints') == ['3']
  assert not (tmp_path / 'out').exists()


def test_checkpoint_restores_under_another_lr_schedule(tmp_path):
  # The optimizer state's tree does not depend on optim.schedule, and eval needs no
  # run length for a cosine config.
  config = tiny_checkpoint.tiny_config()
  saved = tiny_checkpoint.save_checkpoint(config, tmp_path / 'run', step=3)
  cosine = tiny_checkpoint.tiny_config()
  cosine.optim.schedule = 'cosine'
  run = checkpointing.restore_run(cosine, str(tmp_path / 'run'))
  restored, step = run.state, run.step
  assert step == 3
  for a, b in zip(jax.tree.leaves(saved.params), jax.tree.leaves(restored.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
