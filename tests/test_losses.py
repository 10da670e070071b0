"""The scale-loss family against docs/method.md section 1's closed forms and a numpy reference."""
import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irstd_jax import losses

ALPHA_FNS = {
    'diff': losses.alpha_diff,
    'variance': losses.alpha_variance,
    'moebius': losses.alpha_moebius,
    'manfung': losses.alpha_manfung,
}


def _random_areas(seed=0, n=200):
  rng = np.random.default_rng(seed)
  P = rng.uniform(0.0, 500.0, n)
  T = rng.uniform(0.0, 500.0, n)
  P[:10] *= 1e-3  # near-empty predictions
  return P, T


# -- numpy reference -------------------------------------------------------------------


def np_alpha(P, T, kind, k_over=1.0, k_under=1.0):
  m, M, D, S = np.minimum(P, T), np.maximum(P, T), P - T, P + T
  with np.errstate(invalid='ignore', divide='ignore'):
    if kind == 'diff':
      a = (m + abs(D) / 2) / (M + abs(D) / 2)
    elif kind == 'variance':
      a = (m + (D / 2)**2) / (M + (D / 2)**2)
    elif kind == 'moebius':
      a = np.clip((3 * m + M) / (3 * M + m), 1 / 3, 1)
    elif kind == 'manfung':
      a = m / (M + D**2 / 2)
    elif kind == 'signed':
      a = S / (S + 2 * (k_over * np.maximum(D, 0) + k_under * np.maximum(-D, 0)))
    elif kind == 'none':
      a = np.ones_like(P)
  return np.where(S > 0, a, 1.0)


def np_location(p, y, form, skip_empty=True):
  _, H, W, _ = p.shape
  x = (np.arange(W) / W)[None, None, :, None]
  yy = (np.arange(H) / H)[None, :, None, None]
  out = []
  for pb, tb in zip(p, y):
    cs = []
    for m in (pb, tb):
      norm = m.sum() + 1e-8 if form == 'mass' else H * W
      cs.append(((m * x[0]).sum() / norm, (m * yy[0]).sum() / norm))
    (cxp, cyp), (cxt, cyt) = cs
    angle = 4 / np.pi**2 * (np.arctan(cyp / (cxp + 1e-8)) - np.arctan(cyt / (cxt + 1e-8)))**2
    lp, lt = np.sqrt(cxp**2 + cyp**2 + 1e-8), np.sqrt(cxt**2 + cyt**2 + 1e-8)
    term = 1 - min(lp, lt) / (max(lp, lt) + 1e-8) + angle
    out.append(0.0 if skip_empty and tb.sum() == 0 else term)
  return np.mean(out)


def np_scale_loss(z, y, scale_weight='diff', location='mass', lambda_loc=1.0, k_over=1.0,
                  k_under=1.0, dynamic='none', sd_delta=0.5, location_skip_empty=True, **_):
  z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
  p = 1 / (1 + np.exp(-z))
  P, T, I = p.sum((1, 2, 3)), y.sum((1, 2, 3)), (p * y).sum((1, 2, 3))
  union = P + T - I
  iou = np.where(union > 0, I / np.where(union > 0, union, 1), 0.0)
  kind = 'variance' if dynamic == 'sd' else scale_weight
  scale = 1 - np.mean(np_alpha(P, T, kind, k_over, k_under) * iou)
  loc = 0.0 if location == 'none' else np_location(p, y, location, location_skip_empty)
  if dynamic == 'sd':
    R = 512 * 512 / (z.shape[1] * z.shape[2])
    beta = np.mean(np.minimum(sd_delta, T * sd_delta * R / 81))
    return (1 + beta) * scale + (1 - beta) * loc
  return scale + lambda_loc * loc


def np_pool(y):
  B, H, W, C = y.shape
  return y.reshape(B, H // 2, 2, W // 2, 2, C).max((2, 4))


def _batch(seed=0, B=3, H=16, W=16):
  rng = np.random.default_rng(seed)
  labels = np.zeros((B, H, W, 1), np.float32)
  labels[0, 3:6, 4:7] = 1.0
  labels[1, 10, 12] = 1.0
  labels[1, 1:3, 1:3] = 1.0  # two targets pool into one area
  # image 2: no target at all
  fused = rng.normal(-1.0, 2.0, (B, H, W, 1)).astype(np.float32)
  sides = [rng.normal(-1.0, 2.0, (B, H >> k, W >> k, 1)).astype(np.float32) for k in range(4)]
  return fused, sides, labels


# -- alpha closed forms ----------------------------------------------------------------


@pytest.mark.parametrize('kind', list(ALPHA_FNS))
def test_alpha_matches_closed_form(kind):
  P, T = _random_areas()
  got = np.asarray(ALPHA_FNS[kind](jnp.asarray(P, jnp.float32), jnp.asarray(T, jnp.float32)))
  np.testing.assert_allclose(got, np_alpha(P, T, kind), rtol=2e-5, atol=1e-6)


def test_l1_and_l3_identities_in_r():
  P, T = _random_areas(1)
  r = np.abs(P - T) / (P + T)
  np.testing.assert_allclose(losses.alpha_diff(P, T), 1 / (1 + 2 * r), rtol=1e-5)
  np.testing.assert_allclose(losses.alpha_moebius(P, T), (2 - r) / (2 + r), rtol=1e-5)
  a1 = np.asarray(losses.alpha_diff(P, T))
  assert a1.min() >= 1 / 3 - 1e-6 and a1.max() <= 1 + 1e-6


def test_scale_free_variants_depend_only_on_ratio():
  P, T = _random_areas(2)
  for fn in (losses.alpha_diff, losses.alpha_moebius):
    np.testing.assert_allclose(fn(P, T), fn(7.0 * P, 7.0 * T), rtol=1e-5)


def test_signed_extension_is_l1_at_unit_weights_and_matches_formula():
  P, T = _random_areas(3)
  np.testing.assert_allclose(losses.alpha_signed(P, T, k_over=1.0, k_under=1.0),
                             losses.alpha_diff(P, T), rtol=1e-5, atol=1e-7)
  got = losses.alpha_signed(P, T, k_over=2.5, k_under=0.4)
  np.testing.assert_allclose(got, np_alpha(P, T, 'signed', 2.5, 0.4), rtol=2e-5)
  # k_over only acts above T, k_under only below.
  over, under = P > T, P < T
  np.testing.assert_allclose(np.asarray(got)[under],
                             np.asarray(losses.alpha_signed(P, T, k_under=0.4))[under], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(got)[over],
                             np.asarray(losses.alpha_signed(P, T, k_over=2.5))[over], rtol=1e-6)


def test_l1_l3_strictly_decrease_in_gap_and_l2_does_not():
  T = 100.0
  P = np.linspace(101.0, 2000.0, 500)
  assert np.all(np.diff(np.asarray(losses.alpha_diff(P, T))) < 0)
  assert np.all(np.diff(np.asarray(losses.alpha_moebius(P, T))) < 0)
  assert np.any(np.diff(np.asarray(losses.alpha_variance(P, T))) > 0)


def test_l2_example_from_method_md():
  T = 100.0
  assert float(losses.alpha_variance(0.0, T)) == pytest.approx(0.962, abs=5e-4)
  P = np.linspace(0.0, 100.0, 100001)
  a = np.asarray(losses.alpha_variance(P, T))
  assert a.min() == pytest.approx(0.900, abs=5e-4)
  assert P[np.argmin(a)] == pytest.approx(80.0, abs=0.05)
  assert float(losses.alpha_variance(1e6, T)) > 0.999  # a wildly over-grown prediction


@pytest.mark.parametrize('T', [6.0, 9.0, 25.0, 81.0, 137.0, 400.0])
def test_l2_dip_positions(T):
  """The L2 alpha has its minima where d alpha / dP = 0: |P - T| = 2 sqrt(T).

  Above T this is docs/method.md's |P - T| = 2 sqrt(min(P, T)) (min = T there). Below T the exact
  stationary point is also 2 sqrt(T) = 2 sqrt(max(P, T)); 2 sqrt(min) = 2 sqrt(P) is only
  close to it (T = 100: P = 80 exactly, not 81.9).
  """
  grad = jax.grad(lambda p: losses.alpha_variance(p, T))
  right = T + 2 * math.sqrt(T)
  assert abs(right - T) == pytest.approx(2 * math.sqrt(min(right, T)))
  for p_star in (T - 2 * math.sqrt(T), right):
    assert abs(float(grad(jnp.float32(p_star)))) < 1e-5
    a = float(losses.alpha_variance(p_star, T))
    for eps in (-0.05 * math.sqrt(T), 0.05 * math.sqrt(T)):
      assert float(losses.alpha_variance(p_star + eps, T)) > a  # a minimum, not a maximum
  assert float(losses.alpha_variance(T - 2 * math.sqrt(T), T)) == pytest.approx(
      1 - 1 / math.sqrt(T), rel=1e-5)
  assert float(losses.alpha_variance(right, T)) == pytest.approx(T / (T + math.sqrt(T)),
                                                                 rel=1e-5)


def test_l4_vanishes_for_empty_prediction_and_none_is_one():
  assert float(losses.alpha_manfung(0.0, 10.0)) == 0.0
  np.testing.assert_array_equal(losses.alpha_none(jnp.ones(3), 2.0), np.ones(3))


def test_scale_alpha_dispatch_and_unknown_name():
  P, T = _random_areas(4)
  for name, fn in ALPHA_FNS.items():
    np.testing.assert_array_equal(losses.scale_alpha(P, T, name), fn(P, T))
  np.testing.assert_array_equal(losses.loss_alpha(P, T, scale_weight='diff', dynamic='sd'),
                                losses.alpha_variance(P, T))
  with pytest.raises(ValueError, match='scale_weight'):
    losses.scale_alpha(P, T, 'L5')


# -- SD beta ---------------------------------------------------------------------------


@pytest.mark.parametrize('areas,size,expected', [
    ((5.0, 100.0), 256, (5 * 0.5 * 4 / 81 + 0.5) / 2),  # R = 4
    ((5.0, 100.0), 512, (5 * 0.5 / 81 + 0.5) / 2),  # R = 1: 100 px is past the cap
    ((0.0, 1.0), 32, (0.0 + 0.5) / 2),  # R = 256: one pixel at 32^2 is already "large"
    ((40.0,), 512, 40 * 0.5 / 81),
])
def test_sd_beta_hand_computed(areas, size, expected):
  got = losses.sd_beta(jnp.asarray(areas), size, size, delta=0.5)
  assert float(got) == pytest.approx(expected, rel=1e-6)


def test_sd_beta_non_square_and_delta():
  # R = 512*512 / (128*64) = 32; 10 px -> 10 * 0.3 * 32 / 81 = 1.185 -> capped at 0.3.
  assert float(losses.sd_beta(jnp.asarray([10.0]), 128, 64, delta=0.3)) == pytest.approx(0.3)
  assert float(losses.sd_beta(jnp.asarray([1.0]), 128, 64, delta=0.3)) == pytest.approx(
      0.3 * 32 / 81)


# -- full losses against the numpy reference -------------------------------------------

CONFIGS = [
    dict(scale_weight='diff', location='mass'),
    dict(scale_weight='variance', location='mean'),
    dict(scale_weight='moebius', location='none'),
    dict(scale_weight='manfung', location='mass', lambda_loc=0.3),
    dict(scale_weight='signed', location='mass', k_over=2.0, k_under=0.5),
    dict(scale_weight='none', location='none'),
    dict(scale_weight='diff', location='mean', dynamic='sd', sd_delta=0.5),
]


@pytest.mark.parametrize('cfg', CONFIGS, ids=lambda c: '-'.join(map(str, c.values())))
def test_scale_loss_matches_numpy(cfg):
  fused, _, labels = _batch()
  got = losses.scale_loss(jnp.asarray(fused), jnp.asarray(labels), **cfg)
  np.testing.assert_allclose(float(got), np_scale_loss(fused, labels, **cfg), rtol=1e-5,
                             atol=1e-6)


def test_soft_iou_and_bce_match_numpy():
  fused, _, labels = _batch(1)
  np.testing.assert_allclose(
      float(losses.soft_iou_loss(fused, labels)),
      np_scale_loss(fused, labels, scale_weight='none', location='none'), rtol=1e-6)
  p = 1 / (1 + np.exp(-fused.astype(np.float64)))
  bce = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
  np.testing.assert_allclose(float(losses.bce_loss(fused, labels)), bce, rtol=1e-5)


def test_location_forms_match_numpy_and_mass_is_zero_when_centred():
  fused, _, labels = _batch(2)
  p = jax.nn.sigmoid(fused)
  for form in ('mass', 'mean'):
    np.testing.assert_allclose(float(losses.location_loss(p, labels, form=form)),
                               np_location(np.asarray(p, np.float64), labels, form), rtol=1e-5)
  # A prediction with the label's centroid but twice its mass: mass form ~0, mean form not.
  y = labels[:1]
  assert float(losses.location_loss(jnp.asarray(y) * 0.5, y, form='mass')) < 1e-3
  assert float(losses.location_loss(jnp.asarray(y) * 0.5, y, form='mean')) > 0.4


def test_location_term_of_an_image_without_targets():
  fused, _, labels = _batch(2)
  labels = np.array(labels)
  labels[0] = 0  # the first image has no target
  p = jax.nn.sigmoid(fused)
  for form in ('mass', 'mean'):
    skipped = float(losses.location_loss(p, labels, form=form))
    reference = float(losses.location_loss(p, labels, form=form, skip_empty=False))
    np.testing.assert_allclose(skipped, np_location(np.asarray(p, np.float64), labels, form),
                               rtol=1e-5)
    np.testing.assert_allclose(
        reference, np_location(np.asarray(p, np.float64), labels, form, skip_empty=False),
        rtol=1e-5)
    # The reference's origin centroid makes the empty image cost something.
    assert reference > skipped
  # Skipping makes the empty image's prediction irrelevant to the location term.
  g = jax.grad(lambda q: losses.location_loss(q, labels, form='mass'))(p)
  assert float(jnp.abs(g[0]).max()) == 0.0 and float(jnp.abs(g[1:]).max()) > 0.0


def test_detach_alpha_keeps_value_changes_gradient():
  fused, _, labels = _batch(3)
  f = lambda z, d: losses.scale_loss(z, labels, scale_weight='diff', location='none',
                                     detach_alpha=d)
  assert float(f(fused, True)) == pytest.approx(float(f(fused, False)), rel=1e-7)
  g_live, g_det = jax.grad(f)(fused, False), jax.grad(f)(fused, True)
  assert float(jnp.max(jnp.abs(g_live - g_det))) > 1e-6


# -- degenerate areas: T = 0 and P = 0 ------------------------------------------------


@pytest.mark.parametrize('scale_weight', losses.SCALE_WEIGHTS)
def test_finite_value_and_gradient_at_zero_areas(scale_weight):
  labels = np.zeros((4, 8, 8, 1), np.float32)
  labels[1, 2, 3] = labels[3, 2, 3] = 1.0
  # Images 0 and 1 predict exactly nothing (sigmoid(-200) == 0 in float32): P = 0.
  logits = np.full((4, 8, 8, 1), 0.5, np.float32)
  logits[:2] = -200.0
  for location in losses.LOCATIONS:
    for dynamic in losses.DYNAMICS:
      f = functools.partial(losses.scale_loss, labels=jnp.asarray(labels),
                            scale_weight=scale_weight, location=location, dynamic=dynamic)
      value, grad = jax.value_and_grad(f)(jnp.asarray(logits))
      assert np.isfinite(float(value)), (location, dynamic)
      assert np.all(np.isfinite(np.asarray(grad))), (location, dynamic)
  for fn in list(ALPHA_FNS.values()) + [losses.alpha_signed]:
    for P, T in ((0.0, 0.0), (0.0, 3.0), (3.0, 0.0)):
      gp, gt = jax.grad(fn, argnums=(0, 1))(jnp.float32(P), jnp.float32(T))
      assert np.isfinite(float(gp)) and np.isfinite(float(gt)), (fn.__name__, P, T)
  assert float(losses.soft_iou(0.0, 0.0, 0.0)) == 0.0
  assert float(losses.alpha_diff(0.0, 0.0)) == 1.0


# -- the MSHNet schedule --------------------------------------------------------------


def np_mshnet_loss(fused, sides, labels, warmup, **cfg):
  if warmup:
    return np_scale_loss(sides[0], labels, scale_weight='none', location='none')
  total, y = np_scale_loss(fused, labels, **cfg), labels
  for k, side in enumerate(sides):
    if k:
      y = np_pool(y)
    total += np_scale_loss(side, y, **cfg)
  return total / 5


@pytest.mark.parametrize('cfg', [CONFIGS[0], CONFIGS[1], CONFIGS[6]],
                         ids=['diff-mass', 'variance-mean', 'sd'])
def test_mshnet_loss_branches_match_numpy(cfg):
  fused, sides, labels = _batch(5)
  loss = jax.jit(functools.partial(losses.mshnet_loss, **cfg))
  for warmup in (True, False):
    got = loss(fused, sides, labels, warmup=jnp.asarray(warmup))
    np.testing.assert_allclose(float(got), np_mshnet_loss(fused, sides, labels, warmup, **cfg),
                               rtol=1e-5, atol=1e-6)


def test_mshnet_loss_warmup_trains_only_the_d0_head():
  fused, sides, labels = _batch(6)

  def f(fused, sides, warmup):
    return losses.mshnet_loss(fused, sides, labels, warmup=warmup)

  g_fused, g_sides = jax.grad(f, argnums=(0, 1))(fused, sides, jnp.bool_(True))
  assert float(jnp.abs(g_fused).max()) == 0.0
  assert float(jnp.abs(g_sides[0]).max()) > 0.0
  assert all(float(jnp.abs(g).max()) == 0.0 for g in g_sides[1:])
  g_fused, g_sides = jax.grad(f, argnums=(0, 1))(fused, sides, jnp.bool_(False))
  assert all(float(jnp.abs(g).max()) > 0.0 for g in [g_fused] + list(g_sides))


def test_bfloat16_logits_are_reduced_in_float32():
  fused, sides, labels = _batch(7)
  ref = losses.mshnet_loss(fused, sides, labels, warmup=False)
  low = losses.mshnet_loss(jnp.asarray(fused, jnp.bfloat16),
                           [jnp.asarray(s, jnp.bfloat16) for s in sides],
                           jnp.asarray(labels, jnp.uint8), warmup=False)
  assert low.dtype == jnp.float32
  assert float(low) == pytest.approx(float(ref), abs=2e-2)  # only the inputs were rounded


def test_max_pool_labels_keeps_single_pixel_targets():
  labels = np.zeros((1, 16, 16, 1), np.float32)
  labels[0, 5, 9] = 1.0
  for k in range(4):
    pooled = np.asarray(losses.max_pool_labels(jnp.asarray(labels), k))
    assert pooled.shape == (1, 16 >> k, 16 >> k, 1) and pooled.sum() == 1.0
    assert pooled[0, 5 >> k, 9 >> k, 0] == 1.0


def test_keywords_are_the_config_loss_fields():
  from configs import base
  fields = set(base.get_config().loss.to_dict())
  params = inspect.signature(losses.mshnet_loss).parameters
  kw = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} - {'warmup'}
  assert fields == kw
  for name in fields:  # defaults in base.py are the function's defaults
    assert base.get_config().loss[name] == params[name].default, name


# For every config.loss field: a non-default value, and the other fields it needs to matter.
_FIELD_CHANGES = {
    'scale_weight': ({}, 'variance'),
    'location': ({}, 'mean'),
    'lambda_loc': ({}, 2.0),
    'k_over': ({'scale_weight': 'signed'}, 3.0),
    'k_under': ({'scale_weight': 'signed'}, 3.0),
    'detach_alpha': ({}, True),  # changes the gradient only
    'dynamic': ({}, 'sd'),
    'sd_delta': ({'dynamic': 'sd'}, 0.25),
    'location_skip_empty': ({}, False),
}


def test_every_config_loss_field_reaches_the_loss():
  # train.py binds config.loss with functools.partial, which accepts any keyword and would
  # not notice an option that is dropped on the way: each field must change the loss (or,
  # for detach_alpha, its gradient) on a batch where it matters.
  from configs import base
  config_loss = base.get_config().loss.to_dict()
  assert set(_FIELD_CHANGES) == set(config_loss)
  rng = np.random.default_rng(0)
  labels = np.zeros((3, 16, 16, 1), np.float32)
  labels[0, 3:6, 4:7] = 1.0  # image 0: over-predicted (P > T)
  labels[1, 8:14, 2:9] = 1.0  # image 1: under-predicted (P < T); image 2: empty label
  fused = rng.normal(-2.0, 1.0, (3, 16, 16, 1)).astype(np.float32)
  fused[0, 2:9, 3:10] += 6.0
  fused[1, 9:12, 3:6] += 6.0
  fused[2, 10:13, 10:13] += 6.0
  sides = [rng.normal(0.0, 1.0, (3, 16 >> k, 16 >> k, 1)).astype(np.float32) for k in range(4)]
  args = (jnp.asarray(fused), [jnp.asarray(s) for s in sides], jnp.asarray(labels))

  def value_and_grad(options):
    bound = functools.partial(losses.mshnet_loss, **options)
    return jax.value_and_grad(lambda f: bound(f, *args[1:], warmup=jnp.asarray(False)))(args[0])

  for field, (context, value) in _FIELD_CHANGES.items():
    before = value_and_grad({**config_loss, **context})
    after = value_and_grad({**config_loss, **context, field: value})
    if field == 'detach_alpha':
      assert float(before[0]) == float(after[0])
      assert np.abs(np.asarray(before[1]) - np.asarray(after[1])).max() > 1e-6, field
    else:
      assert abs(float(before[0]) - float(after[0])) > 1e-6, field
