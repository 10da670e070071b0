"""Kernel builders against numpy references; the straight-through estimator."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irstd_jax import kernels

# docs/method.md section 2, verbatim.
PINWHEEL_7 = np.array([
    [1, 0, 0, 1, 0, 0, 1],
    [0, 1, 0, 1, 0, 1, 0],
    [0, 0, 1, 1, 1, 0, 0],
    [1, 1, 1, 1, 1, 1, 1],
    [0, 0, 1, 1, 1, 0, 0],
    [0, 1, 0, 1, 0, 1, 0],
    [1, 0, 0, 1, 0, 0, 1],
], np.float32)
LOG_TAU = math.log(0.1)


def _np_gaussian(sigma, size, mask=None):
  c = size // 2
  i, j = np.mgrid[-c:c + 1, -c:c + 1].astype(np.float64)
  g = np.exp(-(i**2 + j**2) / (2 * sigma**2))
  if mask is not None:
    g = g * mask
  return g / g.sum()


def _np_soft_pinwheel(theta, tau, size=7, num_arms=4, radius=None, half_width=0.5):
  """Straight from docs/method.md section 3 with the paper's code's u = row, v = column."""
  c = size // 2
  radius = c if radius is None else radius
  sig = lambda z: 1 / (1 + np.exp(-z))
  out = np.zeros((size, size))
  for i in range(size):
    for j in range(size):
      u, v = i - c, j - c
      arms = max(sig((half_width - abs(-np.sin(theta + a * np.pi / num_arms) * u
                                        + np.cos(theta + a * np.pi / num_arms) * v)) / tau)
                 for a in range(num_arms))
      out[i, j] = sig((radius - math.hypot(u, v)) / tau) * arms
  out[c, c] = 1.0
  return out


def test_pinwheel_mask_is_the_spec_table():
  np.testing.assert_array_equal(kernels.pinwheel_mask(7), PINWHEEL_7)
  # 3x3: row, column and both diagonals cover every cell.
  np.testing.assert_array_equal(kernels.pinwheel_mask(3), np.ones((3, 3)))


@pytest.mark.parametrize('sigma', [0.3, 1.5, 4.0])
@pytest.mark.parametrize('masked', [False, True])
def test_gaussian_kernel_matches_numpy(sigma, masked):
  mask = PINWHEEL_7 if masked else None
  got = kernels.gaussian_kernel(jnp.log(sigma), 7, mask)
  np.testing.assert_allclose(got, _np_gaussian(sigma, 7, mask), rtol=1e-5, atol=1e-7)
  assert abs(float(got.sum()) - 1) < 1e-6


def test_gaussian_kernel_clips_sigma_and_broadcasts():
  # sigma clipped to [0.01, 10]: a far too small sigma is a delta, a far too big one is
  # exactly the sigma = 10 kernel. A vector of log sigmas gives one kernel each.
  got = kernels.gaussian_kernel(jnp.array([-20.0, math.log(1.5), 20.0]), 7, PINWHEEL_7)
  assert got.shape == (3, 7, 7)
  delta = np.zeros((7, 7))
  delta[3, 3] = 1
  np.testing.assert_allclose(got[0], delta, atol=1e-12)
  np.testing.assert_allclose(got[1], _np_gaussian(1.5, 7, PINWHEEL_7), rtol=1e-5)
  np.testing.assert_allclose(got[2], _np_gaussian(10.0, 7, PINWHEEL_7), rtol=1e-5)
  # No gradient leaks through the clip; inside the range it matches finite differences.
  grad = jax.grad(lambda s: kernels.gaussian_kernel(s, 7)[3, 3])
  assert float(grad(20.0)) == 0.0
  h = 1e-3
  fd = (_np_gaussian(np.exp(0.4 + h), 7)[3, 3] - _np_gaussian(np.exp(0.4 - h), 7)[3, 3]) / (2 * h)
  np.testing.assert_allclose(float(grad(0.4)), fd, rtol=1e-3)


def test_disk_mask_matches_numpy():
  c = np.arange(7) - 3
  r = np.hypot(c[:, None], c[None, :])
  np.testing.assert_allclose(kernels.disk_mask(LOG_TAU, 7), 1 / (1 + np.exp(-(3 - r) / 0.1)),
                             rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('theta', [0.0, math.pi / 6, 1.0])
@pytest.mark.parametrize('num_arms', [1, 4])
def test_soft_rotated_pinwheel_matches_numpy(theta, num_arms):
  got = kernels.soft_rotated_pinwheel(theta, math.log(0.3), num_arms=num_arms)
  np.testing.assert_allclose(got, _np_soft_pinwheel(theta, 0.3, num_arms=num_arms),
                             rtol=1e-5, atol=1e-6)


def test_rotated_pinwheel_at_zero_is_the_fixed_pinwheel():
  # Without the disk's cut (radius past the corners) it is exactly the table; with the
  # spec's radius 3 the cells at distance >= 3 fall out (disk = 0.5 there).
  full = kernels.rotated_pinwheel_mask(0.0, LOG_TAU, 7, 4, 7.0)
  np.testing.assert_array_equal(full, PINWHEEL_7)
  c = np.arange(7) - 3
  inside = np.hypot(c[:, None], c[None, :]) < 3
  np.testing.assert_array_equal(kernels.rotated_pinwheel_mask(0.0, LOG_TAU), PINWHEEL_7 * inside)


def test_soft_rotated_pinwheel_quarter_turn_is_rot90():
  a = kernels.soft_rotated_pinwheel(0.3, LOG_TAU, num_arms=1)
  b = kernels.soft_rotated_pinwheel(0.3 + math.pi / 2, LOG_TAU, num_arms=1)
  np.testing.assert_allclose(b, np.rot90(np.asarray(a)), atol=1e-6)


def test_rotate_mask_against_rot90():
  m = np.random.default_rng(0).uniform(size=(7, 7)).astype(np.float32)
  np.testing.assert_allclose(kernels.rotate_mask(m, 0.0), m, atol=1e-6)
  np.testing.assert_allclose(kernels.rotate_mask(m, math.pi / 2), np.rot90(m), atol=1e-5)
  np.testing.assert_allclose(kernels.rotate_mask(m, math.pi), np.rot90(m, 2), atol=1e-5)
  np.testing.assert_allclose(kernels.rotate_mask(m, -math.pi / 2), np.rot90(m, -1), atol=1e-5)


# --- straight-through estimator ---------------------------------------------------------

_STE_POINTS = [(math.pi / 6, LOG_TAU), (0.2, math.log(0.5)), (1.3, math.log(0.05))]


@pytest.mark.parametrize('theta,log_tau', _STE_POINTS)
def test_ste_forward_is_the_hard_mask_exactly(theta, log_tau):
  hard = np.asarray(kernels.rotated_pinwheel_mask(theta, log_tau))
  soft = np.asarray(kernels.soft_rotated_pinwheel(theta, log_tau))
  np.testing.assert_array_equal(hard, (soft > 0.5).astype(np.float32))
  assert set(np.unique(hard)) <= {0.0, 1.0} and hard[3, 3] == 1.0


@pytest.mark.parametrize('theta,log_tau', _STE_POINTS)
def test_ste_gradient_is_the_soft_vjp(theta, log_tau):
  cot = jnp.asarray(np.random.default_rng(1).normal(size=(7, 7)), jnp.float32)
  _, ste_vjp = jax.vjp(kernels.rotated_pinwheel_mask, theta, log_tau)
  _, soft_vjp = jax.vjp(lambda t, l: kernels.soft_rotated_pinwheel(t, l), theta, log_tau)
  got, want = ste_vjp(cot), soft_vjp(cot)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert float(jnp.abs(got[0])) > 0  # the angle does get a gradient

  def identity(t, l):  # the textbook straight-through trick
    soft = kernels.soft_rotated_pinwheel(t, l)
    hard = (soft > 0.5).astype(jnp.float32)
    return hard + soft - jax.lax.stop_gradient(soft)

  value, id_vjp = jax.vjp(identity, theta, log_tau)
  np.testing.assert_allclose(id_vjp(cot), got, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(value, kernels.rotated_pinwheel_mask(theta, log_tau), atol=1e-6)


def test_ste_under_jit_and_with_keyword_statics():
  # Not a linear ramp: the kernel is point-symmetric, so a ramp's sum would be constant.
  w = jnp.asarray(np.random.default_rng(2).uniform(size=(7, 7)), jnp.float32)

  def loss(theta, log_tau):
    mask = kernels.rotated_pinwheel_mask(theta, log_tau, size=7, num_arms=1)
    return jnp.sum(kernels.gaussian_kernel(0.4, 7, mask) * w)

  eager = jax.grad(loss, argnums=(0, 1))(0.5, LOG_TAU)
  jitted = jax.jit(jax.grad(loss, argnums=(0, 1)))(0.5, LOG_TAU)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5)
  assert all(np.isfinite(g) and abs(g) > 1e-4 for g in map(float, eager))
