"""IoU / nIoU / Pd / Fa on hand-made masks with hand-computed answers."""
import numpy as np
import pytest

from irstd_jax import metrics


def _blank(h=32, w=32):
  return np.zeros((h, w), bool)


def _square(mask, top, left, size):
  mask[top:top + size, left:left + size] = True
  return mask


def test_perfect_prediction():
  label = _square(_square(_blank(), 2, 2, 3), 20, 20, 2)
  acc = metrics.MetricAccumulator()
  acc.update(label.copy(), label)
  r = acc.result()
  assert r['iou'] == 1.0 and r['pd'] == 1.0 and r['fa'] == 0.0
  assert r['num_targets'] == 2 and r['num_images'] == 1
  assert r['niou'] == pytest.approx(1.0)


def test_two_same_sized_false_alarms_are_counted():
  # One 2x2 hit and two 2x2 false alarms: every component has the same AREA (4 px).
  # Peers that decide "matched" by comparing area values drop both false alarms.
  label = _square(_blank(), 5, 5, 2)
  pred = _square(_square(_square(_blank(), 5, 5, 2), 20, 3, 2), 12, 25, 2)
  stats = metrics.image_stats(pred, label)
  assert stats.num_targets == 1 and stats.num_detected == 1
  assert stats.false_alarm_pixels == 8
  acc = metrics.MetricAccumulator()
  acc.add(stats)
  assert acc.result()['fa'] == pytest.approx(8 / (32 * 32))
  assert acc.result()['iou'] == pytest.approx(4 / 12)


def test_target_touching_the_border():
  label = _square(_blank(), 0, 0, 3)  # centroid (1, 1)
  pred = _square(_blank(), 0, 0, 2)  # centroid (0.5, 0.5), distance 0.707 < 3
  stats = metrics.image_stats(pred, label)
  assert stats.num_detected == 1 and stats.false_alarm_pixels == 0
  assert stats.intersection == 4 and stats.union == 9


def test_empty_prediction():
  label = _square(_blank(), 10, 10, 3)
  acc = metrics.MetricAccumulator()
  acc.update(_blank(), label)
  r = acc.result()
  assert r['iou'] == 0.0 and r['pd'] == 0.0 and r['fa'] == 0.0 and r['num_targets'] == 1


def test_empty_label():
  pred = _square(_blank(), 10, 10, 2)
  pred[30, 30] = True
  acc = metrics.MetricAccumulator()
  stats = acc.update(pred, _blank())
  assert stats.num_targets == 0 and stats.false_alarm_pixels == 5
  r = acc.result()
  assert r['fa'] == pytest.approx(5 / 1024) and r['iou'] == 0.0 and r['niou'] == 0.0


def test_centroid_distance_is_strictly_below_three():
  label = _blank()
  label[10, 10] = True
  far = _blank()
  far[10, 13] = True  # exactly 3 px away: not a detection, a false alarm
  near = _blank()
  near[12, 12] = True  # 2.83 px away: a detection
  assert metrics.image_stats(far, label).num_detected == 0
  assert metrics.image_stats(far, label).false_alarm_pixels == 1
  assert metrics.image_stats(near, label).num_detected == 1


def test_one_predicted_component_matches_one_target_only():
  label = _blank()
  label[10, 10] = label[10, 12] = True  # two 1-px targets (not 8-connected)
  pred = _blank()
  pred[10, 11] = True  # within 3 px of both
  stats = metrics.image_stats(pred, label)
  assert stats.num_targets == 2 and stats.num_detected == 1
  assert stats.false_alarm_pixels == 0


def test_diagonal_pixels_form_one_component():
  label = _blank()
  label[5, 5] = label[6, 6] = True  # 8-connected: a single target
  assert metrics.image_stats(label, label).num_targets == 1


def test_dataset_aggregates_over_images():
  # Image 1: IoU 4/9 (prediction 2x2 inside a 3x3 target). Image 2: IoU 1 (exact).
  l1 = _square(_blank(), 4, 4, 3)
  p1 = _square(_blank(), 4, 4, 2)
  l2 = _square(_blank(), 20, 20, 2)
  acc = metrics.MetricAccumulator()
  acc.update(p1, l1)
  acc.update(l2.copy(), l2)
  r = acc.result()
  assert r['iou'] == pytest.approx((4 + 4) / (9 + 4))
  assert r['niou'] == pytest.approx((4 / 9 + 1) / 2)
  assert r['pd'] == 1.0 and r['num_targets'] == 2 and r['num_pixels'] == 2 * 1024
  # 4 + 4 predicted pixels of 2048, matched or not.
  assert r['positive_fraction'] == 8 / 2048


def test_positive_fraction_counts_false_alarms_too():
  label = _square(_blank(), 4, 4, 1)
  pred = _square(_square(_blank(), 4, 4, 1), 20, 20, 3)  # the target and a 3x3 false alarm
  acc = metrics.MetricAccumulator()
  stats = acc.update(pred, label)
  assert stats.predicted_pixels == 1 + 9 and stats.false_alarm_pixels == 9
  assert acc.result()['positive_fraction'] == 10 / 1024


def test_order_of_images_does_not_matter():
  rng = np.random.default_rng(0)
  pairs = [(rng.random((16, 16)) > 0.9, rng.random((16, 16)) > 0.93) for _ in range(6)]
  a, b = metrics.MetricAccumulator(), metrics.MetricAccumulator()
  for p, l in pairs:
    a.update(p, l)
  for p, l in reversed(pairs):
    b.update(p, l)
  ra, rb = a.result(), b.result()
  for key in ('iou', 'pd', 'fa', 'num_targets'):
    assert ra[key] == rb[key]
  assert ra['niou'] == pytest.approx(rb['niou'])


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match='differ in shape'):
    metrics.image_stats(_blank(8, 8), _blank(8, 9))


def test_sigmoid_is_float64_overflow_free_and_exact_at_zero():
  from scipy import special  # pylint: disable=g-import-not-at-top
  logits = np.concatenate([np.linspace(-50, 50, 1001), [-800.0, -37.0, 0.0, 37.0, 800.0]])
  logits = logits.astype(np.float32)  # network outputs are float32
  with np.errstate(over='raise', divide='raise', invalid='raise'):  # (underflow to 0 is fine)
    p = metrics.sigmoid(logits)
  assert p.dtype == np.float64
  np.testing.assert_allclose(p, special.expit(logits.astype(np.float64)), rtol=1e-14, atol=0)
  assert metrics.sigmoid(0.0) == 0.5 and metrics.sigmoid(-800.0) == 0.0
  assert metrics.sigmoid(800.0) == 1.0 and metrics.sigmoid(36.0) < 1.0


def test_match_targets_greedy_first_unused_in_order():
  # Target 0 could take either component; it takes the first (index 0), so target 1,
  # near only component 0, is missed; target 2 takes component 1.
  targets = np.array([[10.0, 10.0], [10.0, 8.0], [10.0, 12.5]])
  predicted = np.array([[10.0, 10.5], [10.0, 12.0], [30.0, 30.0]])
  np.testing.assert_array_equal(metrics.match_targets(targets, predicted), [0, -1, 1])
  np.testing.assert_array_equal(metrics.match_targets(targets, np.zeros((0, 2))),
                                [-1, -1, -1])
  assert metrics.match_targets(np.zeros((0, 2)), predicted).shape == (0,)


@pytest.mark.parametrize('seed', range(4))
def test_grouped_matching_equals_match_targets_group_by_group(seed):
  """The vectorised rule (pdfa's) against the one definition, on crowded random cases."""
  rng = np.random.default_rng(seed)
  for _ in range(50):
    num_targets, num_groups = rng.integers(0, 12), rng.integers(1, 6)
    targets = rng.uniform(0, 12, (num_targets, 2))
    # Some centroids exactly 3 px or on the same spot: the strict and tie cases.
    sizes = rng.integers(0, 15, num_groups)
    group = np.repeat(np.arange(num_groups), sizes)
    predicted = np.round(rng.uniform(0, 12, (group.size, 2)) * 2) / 2
    if num_targets and group.size:
      predicted[0] = targets[0] + [3.0, 0.0]
    # Interleave the groups, keeping each group's own order (its raster order).
    interleaved = rng.permutation(group)
    order = np.empty(group.size, np.int64)
    for g in range(num_groups):
      order[interleaved == g] = np.flatnonzero(group == g)
    predicted, group = predicted[order], group[order]
    used = metrics.match_targets_grouped(targets, predicted, group)
    expected = np.zeros(group.size, bool)
    for g in range(num_groups):
      members = np.flatnonzero(group == g)
      matched = metrics.match_targets(targets, predicted[members])
      expected[members[matched[matched >= 0]]] = True
    np.testing.assert_array_equal(used, expected)
