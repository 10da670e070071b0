"""The Pd-Fa sweep against metrics.image_stats, threshold by threshold; curve summaries."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from irstd_jax import metrics
from irstd_jax import pdfa
from irstd_jax import pdfa_plots


def _random_case(rng, h, w):
  """Smooth logit maps (components that merge as the threshold falls) and labels."""
  logits = (8 * ndimage.gaussian_filter(rng.normal(size=(h, w)), rng.uniform(0.6, 2.0)))
  label = ndimage.gaussian_filter(rng.normal(size=(h, w)), 1.0) > rng.uniform(0.2, 0.6)
  return logits.astype(np.float32), label


@pytest.mark.parametrize('seed', range(6))
def test_every_threshold_equals_image_stats(seed):
  rng = np.random.default_rng(seed)
  h, w = rng.integers(12, 60, 2)
  logits, label = _random_case(rng, h, w)
  if seed % 2:
    label = rng.random((h, w)) > 0.92  # many 1-px targets: crowded matching
  thresholds = pdfa.logit_grid(61, 6.0)
  sweep = pdfa.sweep_image(logits, label, thresholds)
  for k, t in enumerate(thresholds):
    ref = metrics.image_stats(logits > t, label)
    assert (sweep.intersection[k], sweep.union[k], sweep.num_detected[k],
            sweep.false_alarm_pixels[k]) == (ref.intersection, ref.union,
                                             ref.num_detected, ref.false_alarm_pixels), k
    assert sweep.num_targets == ref.num_targets


def test_chunked_labelling_and_threshold_order_do_not_matter(monkeypatch):
  rng = np.random.default_rng(7)
  logits, label = _random_case(rng, 40, 50)
  thresholds = pdfa.logit_grid(31, 5.0)
  whole = pdfa.sweep_image(logits, label, thresholds)
  monkeypatch.setattr(pdfa, "_CHUNK", 3)  # chunks of 3 thresholds, each its own crop
  shuffled = rng.permutation(thresholds.size)
  chunked = pdfa.sweep_image(logits, label, thresholds[shuffled])
  for field in ('intersection', 'union', 'num_detected', 'false_alarm_pixels'):
    np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field)[shuffled])


def test_same_sized_false_alarms_are_counted_at_every_threshold():
  # One hit and two false alarms, all 2x2 (the area-matching bug drops both false alarms).
  label = np.zeros((32, 32), bool)
  label[5:7, 5:7] = True
  logits = np.full((32, 32), -10.0, np.float32)
  for y, x in ((5, 5), (20, 3), (12, 25)):
    logits[y:y + 2, x:x + 2] = 3.0
  sweep = pdfa.sweep_image(logits, label, np.array([-1.0, 0.0, 1.0, 4.0]))
  np.testing.assert_array_equal(sweep.num_detected, [1, 1, 1, 0])
  np.testing.assert_array_equal(sweep.false_alarm_pixels, [8, 8, 8, 0])


def test_empty_prediction_and_empty_label():
  label = np.zeros((16, 16), bool)
  label[3, 3] = True
  sweep = pdfa.sweep_image(np.full((16, 16), -50.0), label, np.array([-1.0, 0.0]))
  np.testing.assert_array_equal(sweep.union, [1, 1])
  np.testing.assert_array_equal(sweep.num_detected, [0, 0])
  logits = np.zeros((16, 16), np.float32)
  logits[8, 8] = 2.0
  sweep = pdfa.sweep_image(logits, np.zeros((16, 16), bool), np.array([-1.0, 0.0]))
  assert sweep.num_targets == 0
  np.testing.assert_array_equal(sweep.false_alarm_pixels, [256, 1])


def test_point_at_one_half_equals_the_metric_accumulator_exactly():
  rng = np.random.default_rng(3)
  sweep = pdfa.SweepAccumulator(pdfa.logit_grid(41, 8.0))
  plain = metrics.MetricAccumulator()
  for _ in range(7):
    logits, label = _random_case(rng, *rng.integers(16, 48, 2))
    sweep.update(logits, label)
    plain.update(logits > 0, label)
  curve, ref = sweep.result(), plain.result()
  mid = curve['thresholds'].index(0.5)
  assert curve['logit_thresholds'][mid] == 0.0
  for key in ('iou', 'niou', 'pd', 'fa'):
    assert curve[key][mid] == ref[key], key  # exactly, not approximately
  assert curve['num_detected'][mid] == ref['num_detected']
  assert curve['false_alarm_pixels'][mid] == ref['false_alarm_pixels']


def test_thresholds_contain_one_half_exactly():
  t = pdfa.default_logit_thresholds()
  assert t.size == 305 and np.all(np.diff(t) > 0) and t[0] == -36.0 and t[-1] == 36.0
  p = metrics.sigmoid(t)
  assert np.count_nonzero(t == 0.0) == 1 and p[t == 0.0] == 0.5
  assert np.all(np.diff(p) > 0) and p[-1] < 1.0  # every threshold a distinct probability
  assert np.max(np.diff(p)) < 0.025
  assert pdfa.probability_to_logit(0.5) == 0.0
  np.testing.assert_allclose(metrics.sigmoid(pdfa.probability_to_logit(
      [0.01, 0.3, 0.99])), [0.01, 0.3, 0.99])
  assert pdfa.logit_grid(41, 8.0)[20] == 0.0
  with pytest.raises(ValueError, match='odd'):
    pdfa.logit_grid(10, 1.0)


def test_pd_at_fa_and_auc_on_a_hand_made_curve():
  # Five operating points; Fa is not monotone (point 3 merged a false alarm into a hit).
  fa = [0.0, 0.5e-6, 2e-6, 1.5e-6, 3e-5]
  pd = [0.0, 0.4, 0.7, 0.8, 1.0]
  assert pdfa.pd_at_fa(fa, pd, 1e-6)['pd'] == 0.4
  assert pdfa.pd_at_fa(fa, pd, 1e-5)['pd'] == 0.8  # 0.8 at 1.5e-6, better than 0.7 at 2e-6
  assert pdfa.pd_at_fa(fa, pd, 1e-8)['pd'] == 0.0
  steps_fa, steps_pd = pdfa.envelope(fa, pd)
  np.testing.assert_array_equal(steps_fa, [0.0, 0.5e-6, 1.5e-6, 2e-6, 3e-5])
  np.testing.assert_array_equal(steps_pd, [0.0, 0.4, 0.8, 0.8, 1.0])
  # Envelope: 0 on [0, .5e-6), .4 on [.5e-6, 1.5e-6), .8 on [1.5e-6, 3e-5), 1 on [3e-5, 1e-4].
  expected = (0.4 * 1e-6 + 0.8 * 28.5e-6 + 1.0 * 70e-6) / 1e-4
  assert pdfa.envelope_auc(fa, pd, 1e-4) == pytest.approx(expected)


def _curve(seed):
  rng = np.random.default_rng(seed)
  acc = pdfa.SweepAccumulator(pdfa.logit_grid(31, 6.0))
  for _ in range(3):
    acc.update(*_random_case(rng, 32, 32))
  return {**acc.result(), 'protocol': 'basicirstd', 'split': 'test'}


def test_plot_and_compare_command_write_pngs(tmp_path):
  for name, seed in (('a', 0), ('b', 1)):
    d = tmp_path / name / 'eval_test_basicirstd_last'
    d.mkdir(parents=True)
    (d / 'pdfa.json').write_text(json.dumps(_curve(seed)))
  pdfa_plots.plot_curve(_curve(0), tmp_path / 'one.png', title='t')
  out = tmp_path / 'cmp.png'
  proc = subprocess.run([sys.executable, '-m', 'irstd_jax.tools.pdfa_curves', 'compare',
                         str(tmp_path / 'a'), str(tmp_path / 'b' / 'eval_test_basicirstd_last'),
                         '--out', str(out)], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert 'Pd@1e-6' in proc.stdout and 'a (basicirstd, test)' in proc.stdout
  for png in (out, tmp_path / 'one.png'):
    with Image.open(png) as im:
      assert im.size[0] > 300 and im.size[1] > 200
  missing = subprocess.run([sys.executable, '-m', 'irstd_jax.tools.pdfa_curves', 'compare',
                            str(tmp_path / 'nothing'), '--out', str(out)],
                           capture_output=True, text=True, timeout=120)
  assert missing.returncode == 2 and 'does not exist' in missing.stderr
  (tmp_path / 'empty').mkdir()
  empty = subprocess.run([sys.executable, '-m', 'irstd_jax.tools.pdfa_curves', 'plot', str(tmp_path / 'empty'),
                          '--out', str(out)], capture_output=True, text=True, timeout=120)
  assert empty.returncode == 2 and 'no pdfa.json' in empty.stderr
