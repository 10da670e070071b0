"""The scale-loss family (docs/method.md section 1): soft IoU, BCE, scale weights L1-L4,
location, SD.

Notation, per image b of a batch (logits z, binary label y):
p = sigmoid(z); P = sum(p); T = sum(y); I = sum(p * y); IoU = I / (P + T - I);
m = min(P, T); M = max(P, T); D = P - T; S = P + T; r = |D| / S.

A scale loss is `1 - mean_b(alpha_b * IoU_b) + lambda_loc * LocationLoss`. The weight alpha is
a function of the two areas only; it is differentiated through (gradients flow into P) unless
`detach_alpha` is set. Everything here is a pure function of arrays: the caller binds options
with `functools.partial(mshnet_loss, **config.loss)`.

Degenerate areas. No smoothing constant is added (as in MSHNet), so the only undefined case is
0/0: P = T = 0 for alpha and IoU. There every alpha is 1 (no area mismatch) and IoU is 0, the
limit of I / P = 0 / P as P -> 0 on an empty label, so the product is 0 either way. Divisions use
the double-where trick so that the gradient of the unselected branch is never inf * 0 = NaN.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

SCALE_WEIGHTS = ('diff', 'variance', 'moebius', 'manfung', 'signed', 'none')
LOCATIONS = ('mass', 'mean', 'none')
DYNAMICS = ('none', 'sd')
# Guards the centroid maths exactly where MSHNet's LLoss does (its `smooth`).
_LOC_EPS = 1e-8


def _at_least_f32(x: jax.Array) -> jax.Array:
  # Areas are sums over up to 512^2 pixels: bfloat16 logits would lose the small differences
  # alpha depends on, so the loss is always computed in float32 or wider.
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _safe_div(num: jax.Array, den: jax.Array, default: float) -> jax.Array:
  """num / den where den > 0, else `default`, with a finite gradient in both cases.

  The inner `where` keeps the division itself finite at den = 0, so its (unused) gradient is
  finite and the outer `where` can zero it without producing NaN.
  """
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), default)


# -- scale weights alpha(P, T): per image, any broadcastable shapes ------------------------


def alpha_diff(P: jax.Array, T: jax.Array) -> jax.Array:
  """L1, diff-based (the paper's): (m + |D|/2) / (M + |D|/2) = 1 / (1 + 2r).

  Scale-free and strictly decreasing in |D|; range [1/3, 1].

  Args:
    P: predicted areas, any shape.
    T: target areas, same (or broadcastable) shape.

  Returns:
    alpha, the broadcast shape of P and T.
  """
  half_gap = jnp.abs(P - T) / 2
  return _safe_div(jnp.minimum(P, T) + half_gap, jnp.maximum(P, T) + half_gap, 1.0)


def alpha_variance(P: jax.Array, T: jax.Array) -> jax.Array:
  """L2, variance-based = MSHNet SLS: (m + (D/2)^2) / (M + (D/2)^2).

  Not monotone in P: stationary points at |P - T| = 2 sqrt(T) on both sides of T (the left one
  exists for T > 4), and alpha -> 1 again as P -> infinity. Shapes as `alpha_diff`.
  """
  sq = jnp.square((P - T) / 2)
  return _safe_div(jnp.minimum(P, T) + sq, jnp.maximum(P, T) + sq, 1.0)


def alpha_moebius(P: jax.Array, T: jax.Array) -> jax.Array:
  """L3, Moebius: clip((3m + M) / (3M + m), 1/3, 1) = (2 - r) / (2 + r). Shapes as `alpha_diff`.

  The clip is a no-op in exact arithmetic; it is kept because the paper's code has it.
  """
  m, M = jnp.minimum(P, T), jnp.maximum(P, T)
  return jnp.clip(_safe_div(3 * m + M, 3 * M + m, 1.0), 1.0 / 3.0, 1.0)


def alpha_manfung(P: jax.Array, T: jax.Array) -> jax.Array:
  """L4, Man Fung: m / (M + D^2 / 2); 0 for an empty prediction. Shapes as `alpha_diff`."""
  return _safe_div(jnp.minimum(P, T), jnp.maximum(P, T) + jnp.square(P - T) / 2, 1.0)


def alpha_signed(P: jax.Array, T: jax.Array, *, k_over: float = 1.0,
                 k_under: float = 1.0) -> jax.Array:
  """Signed extension of L1: S / (S + 2 (k_over relu(D) + k_under relu(-D))).

  k_over weighs over-prediction (P > T), k_under under-prediction; k_over = k_under = 1 is
  exactly L1 (S / (S + 2|D|) = 1 / (1 + 2r)). Shapes as `alpha_diff`.
  """
  D = P - T
  S = P + T
  gap = k_over * jax.nn.relu(D) + k_under * jax.nn.relu(-D)
  return _safe_div(S, S + 2 * gap, 1.0)


def alpha_none(P: jax.Array, T: jax.Array) -> jax.Array:
  """No scale weight (alpha = 1): the loss reduces to soft IoU (+ location)."""
  return jnp.ones(jnp.broadcast_shapes(jnp.shape(P), jnp.shape(T)), jnp.result_type(P, T))


_ALPHAS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    'diff': alpha_diff,
    'variance': alpha_variance,
    'moebius': alpha_moebius,
    'manfung': alpha_manfung,
    'none': alpha_none,
}


def scale_alpha(P: jax.Array, T: jax.Array, scale_weight: str, *, k_over: float = 1.0,
                k_under: float = 1.0) -> jax.Array:
  """alpha(P, T) of the named variant (one of `SCALE_WEIGHTS`). Shapes as `alpha_diff`."""
  if scale_weight == 'signed':
    return alpha_signed(P, T, k_over=k_over, k_under=k_under)
  if scale_weight not in _ALPHAS:
    raise ValueError(f'scale_weight must be one of {SCALE_WEIGHTS}, got {scale_weight!r}')
  return _ALPHAS[scale_weight](P, T)


def loss_alpha(P: jax.Array, T: jax.Array, *, scale_weight: str = 'diff', k_over: float = 1.0,
               k_under: float = 1.0, dynamic: str = 'none') -> jax.Array:
  """The alpha `scale_loss` uses for these options: the L2 one under dynamic='sd', else
  `scale_alpha`. Shapes as `alpha_diff`."""
  if dynamic == 'sd':
    return alpha_variance(P, T)
  return scale_alpha(P, T, scale_weight, k_over=k_over, k_under=k_under)


# -- per-image areas and the plain losses ------------------------------------------------


def areas(probs: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-image predicted area P, target area T and soft intersection I.

  Args:
    probs: [B, H, W, 1] probabilities in [0, 1].
    labels: [B, H, W, 1] binary labels.

  Returns:
    (P, T, I), each [B]. Several targets in one image pool into one area.
  """
  axes = tuple(range(1, probs.ndim))
  return (jnp.sum(probs, axes), jnp.sum(labels, axes), jnp.sum(probs * labels, axes))


def soft_iou(P: jax.Array, T: jax.Array, I: jax.Array) -> jax.Array:
  """Per-image soft IoU I / (P + T - I); 0 at P = T = 0 (see the module docstring)."""
  return _safe_div(I, P + T - I, 0.0)


def soft_iou_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """1 - mean_b IoU_b, no smoothing constant.

  Args:
    logits: [B, H, W, 1].
    labels: [B, H, W, 1] in {0, 1}.

  Returns:
    Scalar loss.
  """
  probs = jax.nn.sigmoid(_at_least_f32(logits))
  P, T, I = areas(probs, labels.astype(probs.dtype))
  return 1.0 - jnp.mean(soft_iou(P, T, I))


def bce_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean binary cross-entropy over all pixels, from logits (numerically stable).

  Args:
    logits: [B, H, W, 1].
    labels: [B, H, W, 1] in {0, 1}.

  Returns:
    Scalar loss.
  """
  logits = _at_least_f32(logits)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)))


def location_loss(probs: jax.Array, labels: jax.Array, *, form: str = 'mass',
                  skip_empty: bool = True) -> jax.Array:
  """MSHNet's LLoss: centroid length ratio + squared centroid-angle error, batch mean.

  Coordinates are x = j / W, y = i / H, measured from the top-left corner (as MSHNet does, so
  the loss depends on where the target sits in the frame, not only on the centroid error).

  Args:
    probs: [B, H, W, 1] probabilities.
    labels: [B, H, W, 1] binary labels.
    form: 'mass' divides the weighted coordinate sums by the mass (P or T) + 1e-8, giving true
      centroids (the paper's code); 'mean' takes the plain mean over pixels (MSHNet's original),
      which scales with the area and so also acts as a crude area term.
    skip_empty: give images without any target a location term of 0. An empty label has no
      centroid; the reference computes one at the origin (atan(0 / eps) = 0), which on such
      images pulls the predicted mass towards the top edge and breeds false alarms there.
      False reproduces the reference (the data the reference trains on has a target in
      nearly every image, so it rarely meets the case).

  Returns:
    Scalar: mean_b(1 - min(len_p, len_t) / max(len_p, len_t) + 4/pi^2 (atan_p - atan_t)^2),
    the mean over all B images (skipped ones count as 0).
  """
  if form not in ('mass', 'mean'):
    raise ValueError(f"location form must be 'mass' or 'mean', got {form!r}")
  _, H, W, _ = probs.shape
  x = (jnp.arange(W, dtype=probs.dtype) / W)[None, None, :, None]
  y = (jnp.arange(H, dtype=probs.dtype) / H)[None, :, None, None]

  def centroid(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    sx, sy = jnp.sum(m * x, axis=(1, 2, 3)), jnp.sum(m * y, axis=(1, 2, 3))
    norm = jnp.sum(m, axis=(1, 2, 3)) + _LOC_EPS if form == 'mass' else H * W
    return sx / norm, sy / norm

  cx_p, cy_p = centroid(probs)
  cx_t, cy_t = centroid(labels.astype(probs.dtype))
  angle = (4.0 / math.pi**2) * jnp.square(
      jnp.arctan(cy_p / (cx_p + _LOC_EPS)) - jnp.arctan(cy_t / (cx_t + _LOC_EPS)))
  # eps inside the sqrt (as MSHNet) keeps d sqrt / d x finite at a zero centroid.
  len_p = jnp.sqrt(cx_p**2 + cy_p**2 + _LOC_EPS)
  len_t = jnp.sqrt(cx_t**2 + cy_t**2 + _LOC_EPS)
  ratio = jnp.minimum(len_p, len_t) / (jnp.maximum(len_p, len_t) + _LOC_EPS)
  per_image = 1.0 - ratio + angle
  if skip_empty:
    has_target = jnp.sum(labels, axis=(1, 2, 3)) > 0
    per_image = jnp.where(has_target, per_image, 0.0)
  return jnp.mean(per_image)


def sd_beta(target_areas: jax.Array, height: int, width: int, *, delta: float = 0.5) -> jax.Array:
  """SD loss (AAAI 2025) batch weight beta = mean_b min(delta, T_b * delta * R / 81).

  R = 512 * 512 / (height * width) rescales areas to a 512 x 512 frame, so a target of 81 px at
  512^2 (or 20.25 px at 256^2) already gets the full delta.

  Args:
    target_areas: [B] label areas T_b at this output's resolution.
    height, width: this output's spatial size.
    delta: the cap (0.5 in the SD paper).

  Returns:
    Scalar beta in [0, delta].
  """
  R = 512.0 * 512.0 / (height * width)
  return jnp.mean(jnp.minimum(delta, target_areas * delta * R / 81.0))


def scale_loss(logits: jax.Array, labels: jax.Array, *, scale_weight: str = 'diff',
               location: str = 'mass', lambda_loc: float = 1.0, k_over: float = 1.0,
               k_under: float = 1.0, detach_alpha: bool = False, dynamic: str = 'none',
               sd_delta: float = 0.5, location_skip_empty: bool = True) -> jax.Array:
  """The configured scale loss of one output.

  dynamic='none': 1 - mean_b(alpha_b IoU_b) + lambda_loc * LLoss.
  dynamic='sd':   (1 + beta)(1 - mean_b(alpha_b IoU_b)) + (1 - beta) * LLoss with the L2
  (variance) alpha as the SD paper has it; `scale_weight` and `lambda_loc` are then unused.
  location='none' drops LLoss in both.

  Args:
    logits: [B, h, w, 1] raw scores of this output.
    labels: [B, h, w, 1] binary labels at this output's resolution.
    scale_weight: one of `SCALE_WEIGHTS` (diff = L1, variance = L2, moebius = L3,
      manfung = L4, signed, none).
    location: 'mass' | 'mean' | 'none' (see `location_loss`).
    lambda_loc: weight of the location term (dynamic='none' only).
    k_over, k_under: weights of the signed extension (scale_weight='signed' only).
    detach_alpha: stop the gradient through alpha (an ablation; the paper differentiates it).
    dynamic: 'none' | 'sd'.
    sd_delta: the SD cap delta.
    location_skip_empty: no location term for images without a target (see
      `location_loss`'s skip_empty).

  Returns:
    Scalar loss.
  """
  if location not in LOCATIONS:
    raise ValueError(f'location must be one of {LOCATIONS}, got {location!r}')
  if dynamic not in DYNAMICS:
    raise ValueError(f'dynamic must be one of {DYNAMICS}, got {dynamic!r}')
  probs = jax.nn.sigmoid(_at_least_f32(logits))
  labels = labels.astype(probs.dtype)
  P, T, I = areas(probs, labels)
  alpha = loss_alpha(P, T, scale_weight=scale_weight, k_over=k_over, k_under=k_under,
                     dynamic=dynamic)
  if detach_alpha:
    alpha = jax.lax.stop_gradient(alpha)
  scale_term = 1.0 - jnp.mean(alpha * soft_iou(P, T, I))
  loc = (0.0 if location == 'none' else
         location_loss(probs, labels, form=location, skip_empty=location_skip_empty))
  if dynamic == 'sd':
    beta = sd_beta(T, logits.shape[1], logits.shape[2], delta=sd_delta)
    return (1.0 + beta) * scale_term + (1.0 - beta) * loc
  return scale_term + lambda_loc * loc


def max_pool_labels(labels: jax.Array, times: int) -> jax.Array:
  """2x2 / stride-2 max pooling applied `times` times (a pixel is target if any child is).

  Args:
    labels: [B, H, W, 1].
    times: number of halvings.

  Returns:
    [B, H // 2**times, W // 2**times, 1] (floor, as PyTorch's MaxPool2d(2, 2)).
  """
  for _ in range(times):
    # Labels are >= 0, so 0 is a valid identity for max in any dtype.
    labels = jax.lax.reduce_window(labels, jnp.zeros((), labels.dtype), jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                                   'VALID')
  return labels


def halvings(full: int, small: int) -> int:
  """How many 2x2 halvings take a side `full` pixels long to `small` (MSHNet's side heads)."""
  times = 0
  while full > small:
    full //= 2
    times += 1
  if full != small:
    raise ValueError(f'side output size {small} is not the label size halved a whole number '
                     'of times')
  return times


def mshnet_loss(fused_logits: jax.Array, side_logits: Sequence[jax.Array], labels: jax.Array, *,
                warmup: jax.Array, scale_weight: str = 'diff', location: str = 'mass',
                lambda_loc: float = 1.0, k_over: float = 1.0, k_under: float = 1.0,
                detach_alpha: bool = False, dynamic: str = 'none',
                sd_delta: float = 0.5, location_skip_empty: bool = True) -> jax.Array:
  """MSHNet's training objective with the configured scale loss (docs/method.md section 1).

  Warm-up: plain soft IoU of the d0 head (side_logits[0]) only. After it: the mean over the
  fused map and every side head of `scale_loss`, each against the label max-pooled 2x2 down to
  that head's resolution.

  Args:
    fused_logits: [B, H, W, 1] the final fused map.
    side_logits: the side heads [h0 at H, h1 at H/2, h2 at H/4, h3 at H/8], each [B, h, w, 1].
    labels: [B, H, W, 1] float in {0, 1}.
    warmup: boolean scalar (may be traced).
    scale_weight, location, lambda_loc, k_over, k_under, detach_alpha, dynamic, sd_delta,
      location_skip_empty: as `scale_loss`; the names are the fields of `config.loss`.

  Returns:
    Scalar loss.
  """
  options = dict(scale_weight=scale_weight, location=location, lambda_loc=lambda_loc,
                 k_over=k_over, k_under=k_under, detach_alpha=detach_alpha, dynamic=dynamic,
                 sd_delta=sd_delta, location_skip_empty=location_skip_empty)
  side_logits = tuple(side_logits)
  out_dtype = jnp.promote_types(fused_logits.dtype, jnp.float32)
  labels = labels.astype(out_dtype)

  def warm(_):
    return soft_iou_loss(side_logits[0], labels).astype(out_dtype)

  def deep(_):
    total = scale_loss(fused_logits, labels, **options)
    for side in side_logits:
      pooled = max_pool_labels(labels, halvings(labels.shape[1], side.shape[1]))
      total = total + scale_loss(side, pooled, **options)
    return (total / (1 + len(side_logits))).astype(out_dtype)

  # lax.cond, not jnp.where: only the taken branch is differentiated, so a NaN in the other
  # branch's gradient cannot leak into the update.
  return jax.lax.cond(jnp.asarray(warmup, jnp.bool_), warm, deep, None)
