"""Figures of Pd-Fa curves (pdfa.SweepAccumulator.result dicts, as pdfa.json holds them).

`plot_curve`: one evaluation (the pdfa.png of every eval folder); `plot_comparison`: the
envelopes of several evaluations on one axis (the tools/pdfa_curves.py command).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from irstd_jax import metrics
from irstd_jax import pdfa


def _pdfa_axes(ax, fa_floor=1e-8):
  ax.set_xscale('log')
  ax.set_xlabel('Fa (false-alarm pixels / all pixels; 0 drawn at the left edge)')
  ax.set_ylabel('Pd')
  ax.set_ylim(-0.02, 1.02)
  ax.set_xlim(fa_floor, 1e-2)
  for f in pdfa.FA_TARGETS:
    ax.axvline(f, color='0.6', lw=0.8, ls='--')
  ax.grid(True, which='major', alpha=0.3)


def _draw_curve(ax, curve: dict, label: str, color=None, fa_floor=1e-8):
  fa = np.maximum(np.asarray(curve['fa']), fa_floor)
  steps_fa, steps_pd = pdfa.envelope(curve['fa'], curve['pd'])
  steps_fa = np.maximum(steps_fa, fa_floor)
  line, = ax.step(np.r_[steps_fa, 1e-2], np.r_[steps_pd, steps_pd[-1]], where='post',
                  color=color, lw=1.8, label=label)
  ax.plot(fa, curve['pd'], '.', ms=3, color=line.get_color(), alpha=0.5)
  t = np.asarray(curve['thresholds'])
  mid = int(np.argmin(np.abs(t - 0.5)))
  ax.plot(fa[mid], curve['pd'][mid], '*', ms=11, color=line.get_color(),
          markeredgecolor='k')
  return line


def describe(curve: dict) -> str:
  """'synthetic test, last checkpoint (step 1200), basicirstd protocol (native)'."""
  return (f"{curve.get('dataset', '?')} {curve.get('split', '?')}, "
          f"{curve.get('checkpoint', '?')} checkpoint (step {curve.get('step', '?')}), "
          f"{curve.get('protocol', '?')} protocol ({curve.get('resolution', '?')})")


def legend_text(curve: dict) -> str:
  p = curve['pd_at_fa']
  return (f"AUC {curve['auc']:.3f}, Pd@1e-6 {p['1e-06']['pd']:.3f}, "
          f"Pd@1e-5 {p['1e-05']['pd']:.3f}")


def _probability_label(logit: float) -> str:
  p = float(metrics.sigmoid(logit))
  if 0.01 <= p <= 0.99:
    return f'{p:.2g}'
  return f'{p:.0e}' if p < 0.5 else f'1-{1 - p:.0e}'


def plot_curve(curve: dict, out: str | os.PathLike, title: str = '') -> None:
  """Pd-Fa envelope (left) and IoU / nIoU / Pd / Fa against the threshold (right)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=90)
  _pdfa_axes(ax)
  _draw_curve(ax, curve, legend_text(curve), color='C0')
  ax.legend(loc='lower right', fontsize=8, title='star: p = 0.5', title_fontsize=8)
  ax.set_title('Pd-Fa (best Pd within each Fa budget)', fontsize=10)
  t = np.asarray(curve['logit_thresholds'])
  for key, color in (('iou', 'C1'), ('niou', 'C2'), ('pd', 'C0')):
    bx.plot(t, curve[key], color=color, label=key)
  bx.set_xlabel('threshold (logit; top: probability)')
  bx.set_ylim(-0.02, 1.02)
  bx.set_xlim(t.min(), t.max())
  bx.axvline(0.0, color='0.6', lw=0.8, ls='--')
  top = bx.twiny()
  top.set_xlim(bx.get_xlim())
  ticks = [v for v in (-20, -10, 0, 10, 20) if t.min() <= v <= t.max()]
  top.set_xticks(ticks)
  top.set_xticklabels([_probability_label(v) for v in ticks], fontsize=7)
  cx = bx.twinx()
  cx.semilogy(t, np.maximum(curve['fa'], 1e-8), color='C3', label='Fa')
  cx.set_ylabel('Fa (0 drawn at 1e-8)', color='C3')
  lines = bx.get_lines()[:3] + cx.get_lines()
  bx.legend(lines, [l.get_label() for l in lines], loc='lower left', fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(out)
  plt.close(fig)


def plot_comparison(named_curves: Sequence[tuple[str, dict]], out: str | os.PathLike) -> None:
  """Overlays the Pd-Fa envelopes of several evaluations ((legend name, curve) pairs)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.8), dpi=90)
  _pdfa_axes(ax)
  for i, (name, curve) in enumerate(named_curves):
    _draw_curve(ax, curve, f'{name}: {legend_text(curve)}', color=f'C{i}')
  title = 'Pd-Fa, star: p = 0.5'
  if len({curve.get('protocol') for _, curve in named_curves}) > 1:
    title += ' - WARNING: different protocols are not comparable'
  ax.set_title(title, fontsize=10)
  ax.legend(loc='lower right', fontsize=7)
  fig.tight_layout()
  fig.savefig(out)
  plt.close(fig)
