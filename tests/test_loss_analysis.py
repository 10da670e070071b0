"""The monotonicity analysis: its geometry, its verdict logic and a small real run."""
import json
import math

import jax
import numpy as np
import pytest

from irstd_jax.tools import loss_analysis as la


@pytest.mark.parametrize('area', [1, 4, 9, 25, 81, 400])
def test_target_disk_has_exact_area_and_is_symmetric(area):
  mask, (cy, cx) = la.target_disk(area, la.grid_size(area, 8.0))
  assert mask.sum() == area
  assert cy == pytest.approx(cx)
  rows, cols = np.nonzero(mask)
  pixels = set(zip(rows.tolist(), cols.tolist()))
  mirrored = set(zip((2 * cy - rows).round().astype(int).tolist(),
                     (2 * cx - cols).round().astype(int).tolist()))
  assert pixels == mirrored  # point-symmetric about its centroid
  np.testing.assert_array_equal(mask, mask.T)


def test_alpha_verdict_on_hand_made_curves():
  P = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
  good = la.alpha_verdict(P, np.array([0.2, 0.5, 1.0, 0.6, 0.3]), T=4.0)
  assert good['alpha_monotone'] and good['alpha_argmin_P'] == 1.0
  assert good['alpha_failures']['count'] == 0
  # Dips after T and climbs back (the L2 shape): the step 8 -> 16 fails.
  bad = la.alpha_verdict(P, np.array([0.2, 0.5, 1.0, 0.6, 0.9]), T=4.0)
  assert not bad['alpha_monotone']
  assert bad['alpha_failures']['P'] == [8.0] and bad['alpha_local_minima_P'] == [8.0]
  flat = la.alpha_verdict(P, np.ones(5), T=4.0)  # alpha = 1 is not strictly monotone
  assert not flat['alpha_monotone'] and flat['alpha_failures']['count'] == 4


def test_loss_verdict_counts_sign_changes_and_skips_flat_points():
  P = np.arange(1.0, 9.0)
  loss = np.array([1.0, 0.8, 0.5, 0.4, 0.6, 0.5, 0.45, 0.7])
  grad = np.array([-1.0, -1.0, -1.0, 0.0, 1.0, -1.0, -1.0, 1.0])
  v = la.loss_verdict(P, loss, grad, T=4.0)
  assert not v['loss_unimodal'] and v['loss_sign_changes'] == 3
  assert v['loss_argmin_P'] == 4.0 and len(v['loss_local_minima_P']) == 2
  assert v['loss_flat']['P'] == [4.0]
  assert not v['loss_sign_matches_P_minus_T'] and v['loss_sign_failures']['P'] == [6.0, 7.0]
  grad_ok = np.array([-1.0, -1.0, -1.0, 1e-12, 1.0, 1.0, 1.0, 1.0])
  ok = la.loss_verdict(P, loss, grad_ok, T=4.0)
  assert ok['loss_unimodal'] and ok['loss_sign_matches_P_minus_T']


def test_l2_stationary_points():
  assert la.l2_alpha_stationary_points(81) == [63.0, 99.0]
  assert la.l2_alpha_stationary_points(4) == [8.0]  # no left dip for T <= 4


@pytest.fixture(scope='module')
def small_run():
  return la.run_analysis(areas=(9, 25), families=('concentric', 'offset_1.0'),
                         variants=('diff', 'variance', 'moebius'), num_points=61)


def test_small_run_l1_l3_monotone_l2_not(small_run):
  report, curves = small_run
  checks = report['checks']
  for name in ('diff', 'moebius'):
    assert checks[name]['alpha_monotone_at_every_T']
    for fam in ('concentric', 'offset_1.0'):
      assert all(checks[name][f'{fam}_loss_unimodal_min_near_T'].values()), (name, fam)
      for T in ('9', '25'):
        assert report['results'][name][fam][T]['loss_unimodal']
  l2 = report['results']['variance']
  assert not checks['variance']['alpha_monotone_at_some_T']
  for T in (9, 25):
    assert checks['variance'][str(T)]['argmin_matches']
    assert checks['variance'][str(T)]['local_minima_match']
    assert l2['concentric'][str(T)]['alpha_failures']['count'] > 0
  # The mislocated prediction gives L2 a second, lower minimum far above T (T = 25).
  offset = l2['offset_1.0']['25']
  assert not offset['loss_unimodal'] and len(offset['loss_local_minima_P']) == 2
  assert offset['loss_argmin_P'] > 2 * 25
  # The sweep is what it says: log-spaced P over [0.05 T, 8 T], increasing.
  P = curves['concentric'][25]['P']
  assert P[0] == pytest.approx(0.05 * 25, rel=0.02) and P[-1] == pytest.approx(200, rel=0.02)
  assert np.all(np.diff(P) > 0)


def test_run_leaves_float32_default(small_run):
  assert not jax.config.jax_enable_x64


def test_main_writes_json_and_figures(tmp_path):
  report = la.main(['--workdir', str(tmp_path), '--areas', '4', '--families',
                    'concentric,logit_shift', '--variants', 'diff,variance', '--num_points',
                    '21'])
  data = json.loads((tmp_path / 'monotonicity.json').read_text())
  assert data['results']['diff']['logit_shift']['4']['alpha_monotone']
  assert set(data['tolerances']) >= {'alpha_step', 'dL_dP_flat_rtol'}
  for key in ('alpha_monotone', 'alpha_argmin_P', 'loss_unimodal', 'loss_argmin_P',
              'alpha_failures', 'loss_sign_failures'):
    assert key in data['results']['variance']['concentric']['4']
  for name in ('alpha.png', 'loss.png', 'dloss_dP.png'):
    assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert math.isfinite(report['runtime_s'])
