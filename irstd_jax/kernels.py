"""Pure kernel builders for the paper's spatial side (docs/method.md sections 2-3).

Every function here maps arrays to arrays and is differentiable where it should be; the
modules in `spatial_attention.py` and `convs.py` only call them, building their kernels
from the learnable parameters on every call.

Grid convention (shared by every function, so masks, rotations and `np.rot90` agree):
a `size x size` grid (size odd), centre c = size // 2, array row i, column j. The
geometric coordinates of cell (i, j) are x = j - c (rightwards) and y = c - i (upwards);
the paper's code writes the rotated pinwheel in u = i - c = -y, v = j - c = x. A positive
angle turns counter-clockwise as the array is displayed (row 0 on top), so rotating by
pi/2 equals `np.rot90(mask)`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

SIGMA_MIN, SIGMA_MAX = 0.01, 10.0
TAU_MIN, TAU_MAX = 1e-3, 1.0


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Geometric coordinates (x, y), each [size, size] float32, of the grid's cells."""
  if size < 1 or size % 2 == 0:
    raise ValueError(f'kernel size must be a positive odd integer, got {size}')
  c = size // 2
  i, j = np.meshgrid(np.arange(size), np.arange(size), indexing='ij')
  return (j - c).astype(np.float32), (c - i).astype(np.float32)


def sigma_from_log(log_sigma: jax.Array) -> jax.Array:
  """sigma = exp(log_sigma), clipped to [0.01, 10] (docs/method.md section 2)."""
  return jnp.clip(jnp.exp(log_sigma), SIGMA_MIN, SIGMA_MAX)


def tau_from_log(log_tau: jax.Array) -> jax.Array:
  """tau = exp(log_tau), clipped to [1e-3, 1] (docs/method.md section 3)."""
  return jnp.clip(jnp.exp(log_tau), TAU_MIN, TAU_MAX)


def pinwheel_mask(size: int = 7) -> np.ndarray:
  """The fixed pinwheel mask: the centre row, centre column and both diagonals.

  For size 7 this is exactly the table in docs/method.md section 2.

  Returns:
    [size, size] float32 numpy array of 0/1.
  """
  x, y = _grid(size)
  keep = (x == 0) | (y == 0) | (np.abs(x) == np.abs(y))
  return keep.astype(np.float32)


def gaussian_kernel(log_sigma: jax.Array, size: int = 7, mask=None) -> jax.Array:
  """K(sigma) = (G_sigma * mask) / sum(G_sigma * mask), built from log_sigma.

  Args:
    log_sigma: any shape S (a scalar for one attention block, [O] for GSConv's
      per-output-channel scales). sigma = exp(log_sigma) clipped to [0.01, 10].
    size: odd kernel size; offsets run over -size//2 .. size//2.
    mask: None (plain Gaussian) or an array broadcastable to S + [size, size]. Its
      centre must be non-zero, which every mask in this module guarantees, so the sum
      is at least exp(0) * mask[c, c] > 0.

  Returns:
    [*S, size, size] kernels, each summing to 1.
  """
  x, y = _grid(size)
  sigma = sigma_from_log(jnp.asarray(log_sigma, jnp.float32))[..., None, None]
  g = jnp.exp(-(x**2 + y**2) / (2.0 * sigma**2))
  if mask is not None:
    g = g * mask
  return g / jnp.sum(g, axis=(-2, -1), keepdims=True)


def disk_mask(log_tau: jax.Array, size: int = 7, radius: float | None = None) -> jax.Array:
  """Soft disk sigmoid((radius - sqrt(x^2 + y^2)) / tau), [size, size].

  radius defaults to size // 2 (3 for 7x7, the spec). Note that cells at exactly that
  radius get 0.5, so the hard (> 0.5) mask of a product with them drops them.
  """
  x, y = _grid(size)
  radius = float(size // 2) if radius is None else float(radius)
  return jax.nn.sigmoid((radius - np.sqrt(x**2 + y**2)) / tau_from_log(log_tau))


def soft_rotated_pinwheel(theta: jax.Array, log_tau: jax.Array, *, size: int = 7,
                          num_arms: int = 4, radius: float | None = None,
                          half_width: float = 0.5) -> jax.Array:
  """The differentiable rotated pinwheel of docs/method.md section 3.

  soft = disk * max_a sigmoid((half_width - |-sin(theta_a) u + cos(theta_a) v|) / tau),
  theta_a = theta + a * pi / num_arms, u = i - c, v = j - c (the paper's code), with the
  centre forced to 1. Each arm is a line band through the centre: theta_a = 0 is the
  vertical band (column c), growing theta_a turns it counter-clockwise. num_arms = 4 at
  theta = 0 gives the pinwheel's column, row and diagonals; num_arms = 1 is the paper's
  code's single band.

  Args:
    theta: scalar angle (radians).
    log_tau: scalar log temperature; tau clipped to [1e-3, 1].
    size: odd grid size.
    num_arms: number of line bands, evenly spaced over pi.
    radius: disk radius; None -> size // 2 (the spec). With radius >= the corner
      distance (e.g. `size`), num_arms = 4 and theta = 0 reproduce `pinwheel_mask`
      exactly; with the spec's radius the hard mask loses the cells at distance >= 3.
    half_width: half width of a line band, in cells.

  Returns:
    [size, size] float32 in [0, 1].
  """
  x, y = _grid(size)
  tau = tau_from_log(log_tau)
  angles = theta + jnp.arange(num_arms, dtype=jnp.float32) * (np.pi / num_arms)
  s = jnp.sin(angles)[:, None, None]
  co = jnp.cos(angles)[:, None, None]
  u, v = -y, x
  dist = jnp.abs(-s * u + co * v)  # [A, size, size]: distance to each arm's line
  arms = jnp.max(jax.nn.sigmoid((half_width - dist) / tau), axis=0)
  soft = disk_mask(log_tau, size, radius) * arms
  c = size // 2
  return soft.at[c, c].set(1.0)


# Straight-through rotated pinwheel.
#   forward:  hard = (soft_rotated_pinwheel(theta, log_tau) > 0.5) as float32, exactly 0/1.
#   backward: the cotangent of `hard` is pulled back through the VJP of the *soft* mask,
#             i.e. d hard / d(theta, log_tau) := d soft / d(theta, log_tau).
# Same values and gradients as `hard + soft - stop_gradient(soft)`, but the forward pass
# carries an exact 0/1 mask (no soft - soft rounding residue) and the rule is explicit.
# size / num_arms / radius / half_width are Python statics, hence nondiff_argnums.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def rotated_pinwheel_mask(theta: jax.Array, log_tau: jax.Array, size: int = 7,
                          num_arms: int = 4, radius: float | None = None,
                          half_width: float = 0.5) -> jax.Array:
  """Hard rotated pinwheel (soft > 0.5) with a straight-through gradient.

  Args: as `soft_rotated_pinwheel` (statics may be passed by keyword).

  Returns:
    [size, size] float32 of exact 0/1 values.
  """
  soft = soft_rotated_pinwheel(theta, log_tau, size=size, num_arms=num_arms,
                               radius=radius, half_width=half_width)
  return (soft > 0.5).astype(jnp.float32)


def _rotated_pinwheel_mask_fwd(theta, log_tau, size, num_arms, radius, half_width):
  hard = rotated_pinwheel_mask(theta, log_tau, size, num_arms, radius, half_width)
  return hard, (theta, log_tau)


def _rotated_pinwheel_mask_bwd(size, num_arms, radius, half_width, residuals, g):
  theta, log_tau = residuals
  soft_fn = functools.partial(soft_rotated_pinwheel, size=size, num_arms=num_arms,
                              radius=radius, half_width=half_width)
  _, soft_vjp = jax.vjp(soft_fn, theta, log_tau)
  return soft_vjp(g)


rotated_pinwheel_mask.defvjp(_rotated_pinwheel_mask_fwd, _rotated_pinwheel_mask_bwd)


def rotate_mask(mask, theta: float) -> jax.Array:
  """Rotates a square mask about its centre by theta, sampling bilinearly.

  Output cell p takes the input at R(-theta) p (zeros outside), the pixel-centre
  sampling of the paper's code (grid_sample, align_corners=False). theta = pi/2 gives
  `np.rot90(mask)` up to float rounding of cos(pi/2).

  Args:
    mask: [size, size] array.
    theta: angle in radians (counter-clockwise as displayed).

  Returns:
    [size, size] float32.
  """
  mask = jnp.asarray(mask, jnp.float32)
  size = mask.shape[0]
  x, y = _grid(size)
  c = size // 2
  co, s = jnp.cos(theta), jnp.sin(theta)
  xs, ys = co * x + s * y, -s * x + co * y  # R(-theta) (x, y)
  rows, cols = c - ys, xs + c
  r0, c0 = jnp.floor(rows), jnp.floor(cols)
  out = jnp.zeros_like(mask)
  for dr in (0, 1):
    for dc in (0, 1):
      rr, cc = r0 + dr, c0 + dc
      w = (1.0 - jnp.abs(rows - rr)) * (1.0 - jnp.abs(cols - cc))
      inside = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
      ri = jnp.clip(rr, 0, size - 1).astype(jnp.int32)
      ci = jnp.clip(cc, 0, size - 1).astype(jnp.int32)
      out = out + jnp.where(inside, w * mask[ri, ci], 0.0)
  return out
