"""Loss-monotonicity analysis of the scale-loss family, driven through the real loss code.

    python -m irstd_jax.tools.loss_analysis --workdir runs/loss_analysis

For each target area T (a digital disk of exactly T pixels) and each prediction family, the
predicted area P is swept densely (log-spaced) and, for every variant, `losses.scale_loss` is
evaluated on the soft prediction map with `jax.value_and_grad`; alpha comes from
`losses.loss_alpha` on the measured areas. Nothing is re-derived in closed form except the
reference positions of L2's stationary points that the report compares against.

Prediction families (logit maps, so sigmoid edges are soft and gradients exist):
  concentric   soft disk z = (rho - d) / edge, d = distance to the target's centroid;
  offset_<k>   the same disk with its centre moved by k target radii (k = 0.5, 1, 1.5) along x;
  logit_shift  a fixed map z0 = gamma (1 - d^2 / rho_T^2) (a smooth response centred on the
               target) plus a uniform shift c: the edge sharpness changes with P, and for
               c < -gamma every pixel is below 0.5 (a dim blob).
Each family has one scalar parameter theta (rho or c) and P(theta) is increasing, so
dL/dP = (dL/dtheta) / (dP/dtheta), both by `jax.grad`.

By default no location term is added (--location none), so L(P) is the scale term
1 - alpha * IoU that the variants differ in. With --location mass the mass-normalised centroid
of a pixelated, sub-pixel-offset disk drifts slightly with its radius, and that drift adds small
wiggles to dL/dP (they break unimodality in the 1.5-radius family at T >= 25).

Outputs in --workdir: monotonicity.json (verdicts, tolerances, settings) and alpha.png,
loss.png, dloss_dP.png (rows = family, columns = T, variants overlaid).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irstd_jax import losses

AREAS = (1, 4, 9, 25, 81, 400)
FAMILIES = ('concentric', 'offset_0.5', 'offset_1.0', 'offset_1.5', 'logit_shift')
# name -> (plot label, scale_loss options other than location / lambda_loc).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    'diff': ('L1 diff (paper)', dict(scale_weight='diff')),
    'variance': ('L2 variance (SLS)', dict(scale_weight='variance')),
    'moebius': ('L3 Moebius', dict(scale_weight='moebius')),
    'manfung': ('L4 Man Fung', dict(scale_weight='manfung')),
    'signed': ('signed', dict(scale_weight='signed')),  # k_over / k_under from the CLI
    'none': ('soft IoU (alpha = 1)', dict(scale_weight='none')),
    'sd': ('SD (L2, dynamic)', dict(dynamic='sd')),
}
# 'sd' is left out by default: without a location term it is (1 + beta) times L2, so it
# would only repeat L2's verdicts (add it with --variants ...,sd --location mass).
DEFAULT_VARIANTS = tuple(v for v in VARIANTS if v != 'sd')
# Verdict tolerances (the analysis runs in float64, so these are far above rounding noise).
ALPHA_TOL = 1e-9  # a step "strictly rises / falls" if alpha moves by more than this
# |dL/dP| below this fraction of the sweep's largest |dL/dP| counts as flat (no sign): the
# plateau where a mislocated prediction misses the target and L = 1 up to sigmoid tails.
GRAD_RTOL = 1e-6
PARABOLA_GAMMA = 4.0  # logit of the logit_shift map at the target centre, before the shift
NEAR_RTOL = 0.1  # "loss minimum near P = T" means |P_argmin / T - 1| <= this
_MAX_LISTED = 12  # failing sweep points listed per verdict (the count is always given)


# -- geometry -------------------------------------------------------------------------


def target_disk(area: int, size: int) -> tuple[np.ndarray, tuple[float, float]]:
  """A digital disk of exactly `area` pixels: the pixels nearest to a centre point.

  The centre is a pixel centre or a pixel corner, whichever leaves the larger distance gap
  between the area-th and the next pixel, so the disk is symmetric whenever one of them can be
  (true for 1, 4, 9, 25, 81, 400). Ties left at the boundary are broken in raster order.

  Args:
    area: number of target pixels.
    size: grid side.

  Returns:
    ([size, size] float mask, (row, col) centroid of the mask).
  """
  ii, jj = np.mgrid[:size, :size]
  best = None
  for centre in (size / 2, size / 2 - 0.5):
    dist = np.hypot(ii - centre, jj - centre).ravel()
    order = np.argsort(dist, kind='stable')
    gap = dist[order[area]] - dist[order[area - 1]]
    if best is None or gap > best[0] + 1e-12:
      best = (gap, order)
  mask = np.zeros(size * size)
  mask[best[1][:area]] = 1.0
  mask = mask.reshape(size, size)
  return mask, (float((ii * mask).sum() / area), float((jj * mask).sum() / area))


def grid_size(area: int, p_hi: float) -> int:
  """Smallest multiple of 16 (>= 32) holding the largest, most offset prediction with margin."""
  reach = math.sqrt(p_hi * area / math.pi) + 1.5 * math.sqrt(area / math.pi) + 4.0
  return max(32, 16 * math.ceil(2 * reach / 16))


def family_coefficients(family: str, area: int, edge: float) -> tuple[np.ndarray, float]:
  """Logits z = c0 + c1 theta + c2 d + c3 d^2, d measured from the family's centre.

  Returns:
    ([c0, c1, c2, c3], centre offset along x in pixels).
  """
  rho_t = math.sqrt(area / math.pi)
  if family == 'logit_shift':
    return np.array([PARABOLA_GAMMA, 1.0, 0.0, -PARABOLA_GAMMA / rho_t**2]), 0.0
  offset = 0.0 if family == 'concentric' else float(family.split('_')[1]) * rho_t
  return np.array([0.0, 1.0 / edge, -1.0 / edge, 0.0]), offset


def theta_range(family: str, area: int, p_hi: float) -> tuple[float, float]:
  """A theta interval whose areas bracket the sweep (checked after evaluation)."""
  if family == 'logit_shift':
    return -PARABOLA_GAMMA - 16.0, PARABOLA_GAMMA * (p_hi + 1.0) + 16.0
  return -4.0, math.sqrt(p_hi * area / math.pi) + 4.0


def _logits(theta, coeffs, dist):
  return coeffs[0] + coeffs[1] * theta + coeffs[2] * dist + coeffs[3] * dist**2


# -- the sweep through the real loss functions ----------------------------------------


def _make_sweep(variants: dict[str, dict[str, Any]], location: str, lambda_loc: float):
  """jit(thetas [K], coeffs [4], dist [N, N], label [N, N]) -> dict of [K] arrays."""

  def point(theta, coeffs, dist, label):
    labels = label[None, :, :, None]

    def image(th):
      return _logits(th, coeffs, dist)[None, :, :, None]

    area, darea = jax.value_and_grad(lambda th: jnp.sum(jax.nn.sigmoid(image(th))))(theta)
    out = {'P': area, 'dP_dtheta': darea}
    for name, opts in variants.items():
      loss_fn = lambda th, opts=opts: losses.scale_loss(
          image(th), labels, location=location, lambda_loc=lambda_loc, **opts)
      value, grad = jax.value_and_grad(loss_fn)(theta)
      alpha_opts = {k: v for k, v in opts.items()
                    if k in ('scale_weight', 'k_over', 'k_under', 'dynamic')}
      out[f'{name}/alpha'] = losses.loss_alpha(area, jnp.sum(label), **alpha_opts)
      out[f'{name}/loss'] = value
      out[f'{name}/dL_dP'] = grad / darea
    return out

  @jax.jit
  def sweep(thetas, coeffs, dist, label):
    return jax.lax.map(lambda th: point(th, coeffs, dist, label), thetas, batch_size=16)

  @jax.jit
  def area_curve(thetas, coeffs, dist):
    return jax.vmap(lambda th: jnp.sum(jax.nn.sigmoid(_logits(th, coeffs, dist))))(thetas)

  return sweep, area_curve


# -- verdicts -------------------------------------------------------------------------


def _listed(points: np.ndarray) -> dict[str, Any]:
  points = np.asarray(points, float)
  return {
      'count': int(points.size),
      'P': [float(f'{p:.5g}') for p in points[:_MAX_LISTED]],
      'P_range': [float(f'{points.min():.5g}'), float(f'{points.max():.5g}')] if points.size
                 else None,
  }


def alpha_verdict(P: np.ndarray, alpha: np.ndarray, T: float, tol: float = ALPHA_TOL):
  """Strict rise of alpha on every sweep step below T and strict fall on every step above.

  Args:
    P: [K] measured areas, increasing.
    alpha: [K].
    T: target area.
    tol: a step counts as strict when alpha moves by more than this.

  Returns:
    Dict with alpha_monotone, alpha_argmin_P, alpha_local_minima_P and the failing steps, each
    listed by its end nearer to T (the right end below T, the left end above it).
  """
  d_alpha = np.diff(alpha)
  below = P[1:] <= T
  above = P[:-1] >= T
  fail_below = below & ~(d_alpha > tol)
  fail_above = above & ~(d_alpha < -tol)
  failures = np.concatenate([P[1:][fail_below], P[:-1][fail_above]])
  interior = np.where((alpha[1:-1] < alpha[:-2] - tol) & (alpha[1:-1] < alpha[2:] - tol))[0] + 1
  return {
      'alpha_monotone': bool(failures.size == 0),
      'alpha_argmin_P': float(P[np.argmin(alpha)]),
      'alpha_min': float(alpha.min()),
      'alpha_local_minima_P': [float(P[k]) for k in interior],
      'alpha_failures': _listed(failures),
  }


def loss_verdict(P: np.ndarray, loss: np.ndarray, grad: np.ndarray, T: float,
                 rtol: float = GRAD_RTOL) -> dict[str, Any]:
  """Sign pattern of dL/dP along the sweep.

  Args:
    P: [K] measured areas, increasing.
    loss: [K] loss values.
    grad: [K] dL/dP.
    T: target area.
    rtol: |dL/dP| <= rtol * max|dL/dP| is flat (sign 0, skipped).

  Returns:
    Dict with loss_unimodal (dL/dP goes from negative to positive exactly once, flat points
    skipped), loss_argmin_P, loss_local_minima_P (where the sign turns - to +), the sign changes,
    loss_sign_matches_P_minus_T (sign(dL/dP) = sign(P - T) at every non-flat point) with its
    failing points, and the flat points.
  """
  scale = np.max(np.abs(grad))
  sign = np.where(np.abs(grad) <= rtol * scale, 0, np.sign(grad)).astype(int)
  nz = np.flatnonzero(sign)
  s = sign[nz]
  change = np.flatnonzero(s[1:] != s[:-1])
  # The crossing lies between the two non-flat neighbours; report their geometric mean.
  cross_p = np.sqrt(P[nz[change]] * P[nz[change + 1]])
  turns_up = s[change + 1] > 0
  unimodal = change.size == 1 and s[0] < 0 and s[-1] > 0
  mismatch = (sign != 0) & (sign != np.sign(P - T))
  return {
      'loss_unimodal': bool(unimodal),
      'loss_argmin_P': float(P[np.argmin(loss)]),
      'loss_min': float(loss.min()),
      'loss_local_minima_P': [float(f'{p:.5g}') for p in cross_p[turns_up]],
      'loss_local_maxima_P': [float(f'{p:.5g}') for p in cross_p[~turns_up]],
      'loss_sign_changes': int(change.size),
      'loss_sign_matches_P_minus_T': bool(not mismatch.any()),
      'loss_sign_failures': _listed(P[mismatch]),
      'loss_flat': _listed(P[sign == 0]),
  }


def l2_alpha_stationary_points(T: float) -> list[float]:
  """Closed-form stationary points of the L2 alpha in P: |P - T| = 2 sqrt(T) (left one: T > 4).

  d alpha / dP is proportional to T - (P - T)^2 / 4 below T and to (P - T)^2 / 4 - T above it;
  both are minima of alpha.
  """
  points = [T - 2 * math.sqrt(T)] if T > 4 else []
  return points + [T + 2 * math.sqrt(T)]


# -- driver ---------------------------------------------------------------------------


def run_analysis(areas: Sequence[int] = AREAS, families: Sequence[str] = FAMILIES,
                 variants: Sequence[str] = DEFAULT_VARIANTS, *, num_points: int = 241,
                 p_range: tuple[float, float] = (0.05, 8.0), edge: float = 0.3,
                 location: str = 'none', lambda_loc: float = 1.0, k_over: float = 2.0,
                 k_under: float = 1.0) -> tuple[dict[str, Any], dict[str, Any]]:
  """Sweeps every (variant, family, T) and returns (report, curves).

  Args:
    areas: target areas T in pixels.
    families: subset of `FAMILIES`.
    variants: subset of `VARIANTS`.
    num_points: sweep points per (family, T), log-spaced in P over p_range * T.
    p_range: (lowest, highest) P / T.
    edge: sigmoid edge width of the disk families, in pixels.
    location, lambda_loc: a location term added to every variant ('none': scale term only).
    k_over, k_under: weights of the 'signed' variant.

  Returns:
    report: JSON-ready verdicts and settings (the content of monotonicity.json).
    curves: curves[family][T] = dict of [num_points] arrays (P, and <variant>/alpha, /loss,
      /dL_dP) for plotting.
  """
  options = {}
  for name in variants:
    opts = dict(VARIANTS[name][1])
    if opts.get('scale_weight') == 'signed':
      opts.update(k_over=k_over, k_under=k_under)
    options[name] = opts
  report: dict[str, Any] = {
      'settings': {
          'areas': list(areas), 'families': list(families), 'num_points': num_points,
          'P_over_T_range': list(p_range), 'edge_px': edge, 'location': location,
          'lambda_loc': lambda_loc, 'variants': {k: v for k, v in options.items()},
          'logit_shift_gamma': PARABOLA_GAMMA, 'dtype': 'float64',
      },
      'tolerances': {
          'alpha_step': ALPHA_TOL,
          'alpha_step_note': 'a step below T must raise alpha by more than this, above T '
                             'lower it by more than this; the step that straddles T is skipped',
          'dL_dP_flat_rtol': GRAD_RTOL,
          'dL_dP_flat_note': '|dL/dP| <= rtol * max|dL/dP| of the sweep has no sign (skipped)',
      },
      'closed_form': {'L2_alpha_stationary_P': {str(T): l2_alpha_stationary_points(T)
                                                for T in areas}},
      'results': {name: {fam: {} for fam in families} for name in variants},
  }
  curves: dict[str, Any] = {fam: {} for fam in families}
  # float64 keeps every verdict about the functions, not about float32 rounding. The context
  # manager (not the global flag) leaves the caller's precision untouched.
  with jax.enable_x64(True):
    sweep, area_curve = _make_sweep(options, location, lambda_loc)
    for T in areas:
      size = grid_size(T, p_range[1])
      label, (cy, cx) = target_disk(T, size)
      ii, jj = np.mgrid[:size, :size]
      targets = T * np.geomspace(p_range[0], p_range[1], num_points)
      for fam in families:
        coeffs, offset = family_coefficients(fam, T, edge)
        dist = np.hypot(ii - cy, jj - (cx + offset))
        lo, hi = theta_range(fam, T, p_range[1])
        grid = np.linspace(lo, hi, 4096)
        grid_p = np.asarray(area_curve(jnp.asarray(grid), jnp.asarray(coeffs), jnp.asarray(dist)))
        if not (grid_p[0] < targets[0] and grid_p[-1] > targets[-1]
                and np.all(np.diff(grid_p) > 0)):
          raise RuntimeError(f'theta range of {fam} at T={T} does not cover the sweep')
        thetas = np.interp(targets, grid_p, grid)
        out = sweep(jnp.asarray(thetas), jnp.asarray(coeffs), jnp.asarray(dist),
                    jnp.asarray(label))
        out = {k: np.asarray(v, np.float64) for k, v in out.items()}
        order = np.argsort(out['P'])
        out = {k: v[order] for k, v in out.items()}
        curves[fam][T] = out
        for name in variants:
          verdict = alpha_verdict(out['P'], out[f'{name}/alpha'], T)
          verdict.update(loss_verdict(out['P'], out[f'{name}/loss'], out[f'{name}/dL_dP'], T))
          verdict['grid_size'] = size
          report['results'][name][fam][str(T)] = verdict
  report['summary'] = _summary(report, variants, families, areas)
  lowest = {T: float(curves[families[0]][T]['P'][0]) for T in areas}
  step = (p_range[1] / p_range[0]) ** (1.0 / (num_points - 1)) - 1.0
  report['checks'] = _checks(report, variants, families, areas, lowest, step)
  return report, curves


def _summary(report, variants, families, areas) -> dict[str, Any]:
  """Per variant: the T values where each verdict holds, family by family."""
  summary = {}
  for name in variants:
    res = report['results'][name]
    summary[name] = {
        'alpha_monotone_at_every_T': all(res[families[0]][str(T)]['alpha_monotone']
                                         for T in areas),
        'loss_unimodal_T': {f: [T for T in areas if res[f][str(T)]['loss_unimodal']]
                            for f in families},
        'loss_argmin_P_over_T': {f: {str(T): round(res[f][str(T)]['loss_argmin_P'] / T, 3)
                                     for T in areas} for f in families},
    }
  return summary


def _checks(report, variants, families, areas, lowest, step) -> dict[str, Any]:
  """The expectations of docs/method.md / the issue, each as a boolean next to what was measured.

  Monotone-alpha variants (L1, L3, signed): alpha monotone at every T; loss unimodal with its
  minimum within NEAR_RTOL of T in the concentric family and for offsets up to one radius.
  L2: alpha not monotone; its global minimum at P = T - 2 sqrt(T) for T > 4 (else at the lowest
  swept P) and every interior local minimum at T -/+ 2 sqrt(T), within one sweep step (the
  sweep's relative spacing `step`).
  """
  res = report['results']
  checks: dict[str, Any] = {'near_rtol': NEAR_RTOL, 'sweep_relative_step': step}
  for name in ('diff', 'moebius', 'signed'):
    if name not in variants:
      continue
    out = {'alpha_monotone_at_every_T': all(res[name][families[0]][str(T)]['alpha_monotone']
                                            for T in areas)}
    for fam in ('concentric', 'offset_0.5', 'offset_1.0'):
      if fam in families:
        out[f'{fam}_loss_unimodal_min_near_T'] = {
            str(T): bool(res[name][fam][str(T)]['loss_unimodal']
                         and abs(res[name][fam][str(T)]['loss_argmin_P'] / T - 1) <= NEAR_RTOL)
            for T in areas}
    checks[name] = out
  if 'variance' in variants:
    out = {'alpha_monotone_at_some_T': any(res['variance'][families[0]][str(T)]['alpha_monotone']
                                           for T in areas)}
    for T in areas:
      v = res['variance'][families[0]][str(T)]
      expected = T - 2 * math.sqrt(T) if T > 4 else lowest[T]
      stationary = l2_alpha_stationary_points(T)
      out[str(T)] = {
          'alpha_argmin_P': v['alpha_argmin_P'], 'closed_form_argmin_P': expected,
          'argmin_matches': bool(abs(v['alpha_argmin_P'] - expected) <= step * expected + 1e-9),
          'local_minima_match': bool(
              len(v['alpha_local_minima_P']) == len(stationary) and all(
                  abs(p - q) <= step * q for p, q in zip(v['alpha_local_minima_P'],
                                                          stationary))),
      }
    checks['variance'] = out
  return checks


# -- figures --------------------------------------------------------------------------


def plot(curves: dict[str, Any], report: dict[str, Any], workdir: pathlib.Path) -> list[str]:
  """alpha.png, loss.png, dloss_dP.png: rows = family, columns = T, x = P / T (log)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  families = list(curves)
  areas = list(curves[families[0]])
  variants = list(report['results'])
  colours = dict(zip(VARIANTS, plt.rcParams['axes.prop_cycle'].by_key()['color']))
  written = []
  for key, title, fname in (('alpha', 'alpha(P)', 'alpha.png'),
                            ('loss', 'loss L(P)', 'loss.png'),
                            ('dL_dP', 'T * dL/dP (symlog)', 'dloss_dP.png')):
    fig, axes = plt.subplots(len(families), len(areas), squeeze=False, sharex=True,
                             figsize=(2.9 * len(areas), 2.3 * len(families)))
    for r, fam in enumerate(families):
      for c, T in enumerate(areas):
        ax = axes[r, c]
        data = curves[fam][T]
        x = data['P'] / T
        for name in variants:
          y = data[f'{name}/{key}']
          if key == 'dL_dP':
            y = y * T
          style = '--' if name in ('sd', 'none', 'signed') else '-'
          ax.plot(x, y, style, color=colours[name], lw=1.2, label=VARIANTS[name][0])
          if key == 'loss':
            k = np.argmin(data[f'{name}/loss'])
            ax.plot(x[k], y[k], 'o', color=colours[name], ms=4)
        if key == 'alpha' and 'variance' in variants:
          for p in report['closed_form']['L2_alpha_stationary_P'][str(T)]:
            ax.axvline(p / T, color=colours['variance'], lw=0.6, ls=':')
        if key == 'dL_dP':
          ax.set_yscale('symlog', linthresh=1e-2)
          ax.axhline(0.0, color='k', lw=0.5)
        ax.axvline(1.0, color='k', lw=0.6, ls=':')
        ax.set_xscale('log')
        ax.grid(alpha=0.3, which='both', lw=0.3)
        if r == 0:
          ax.set_title(f'T = {T} px')
        if c == 0:
          ax.set_ylabel(fam)
        if r == len(families) - 1:
          ax.set_xlabel('P / T')
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(f'{title}; rows: prediction family, columns: target area; dotted: P = T'
                 + ('; orange dotted: L2 closed-form stationary points' if key == 'alpha'
                    else '; dots: loss minimum' if key == 'loss' else ''),
                 y=0.995, fontsize=11)
    fig.legend(handles, labels, loc='upper center', bbox_to_anchor=(0.5, 0.975),
               ncol=len(variants), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = workdir / fname
    fig.savefig(path, dpi=80)
    plt.close(fig)
    written.append(str(path))
  return written


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='where the JSON and figures go')
  parser.add_argument('--areas', default=','.join(map(str, AREAS)),
                      help='comma-separated target areas in pixels')
  parser.add_argument('--families', default=','.join(FAMILIES))
  parser.add_argument('--variants', default=','.join(DEFAULT_VARIANTS),
                      help=f'subset of {",".join(VARIANTS)}')
  parser.add_argument('--num_points', type=int, default=241)
  parser.add_argument('--p_min', type=float, default=0.05, help='lowest swept P / T')
  parser.add_argument('--p_max', type=float, default=8.0, help='highest swept P / T')
  parser.add_argument('--edge', type=float, default=0.3, help='disk edge width, pixels')
  parser.add_argument('--location', default='none', choices=losses.LOCATIONS,
                      help='location term added to every variant (none: the scale term only)')
  parser.add_argument('--lambda_loc', type=float, default=1.0)
  parser.add_argument('--k_over', type=float, default=2.0, help="'signed' variant")
  parser.add_argument('--k_under', type=float, default=1.0, help="'signed' variant")
  parser.add_argument('--no_plots', action='store_true')
  args = parser.parse_args(argv)

  workdir = pathlib.Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  report, curves = run_analysis(
      areas=[int(a) for a in args.areas.split(',')], families=args.families.split(','),
      variants=args.variants.split(','), num_points=args.num_points,
      p_range=(args.p_min, args.p_max), edge=args.edge, location=args.location,
      lambda_loc=args.lambda_loc, k_over=args.k_over, k_under=args.k_under)
  report['runtime_s'] = round(time.time() - start, 1)
  figures = [] if args.no_plots else plot(curves, report, workdir)
  (workdir / 'monotonicity.json').write_text(json.dumps(report, indent=1))
  print(f'swept in {report["runtime_s"]} s; wrote {workdir / "monotonicity.json"} '
        + ' '.join(figures))
  for name, s in report['summary'].items():
    print(f'{name:9s} alpha monotone at every T: {s["alpha_monotone_at_every_T"]}; '
          'loss unimodal at T = ' + '; '.join(f'{f}: {v}' for f, v in
                                             s['loss_unimodal_T'].items()))
  return report


if __name__ == '__main__':
  main()
