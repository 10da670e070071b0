"""Pd-Fa curves of evaluated runs: one figure, or several runs overlaid, with a table.

    python -m irstd_jax.tools.pdfa_curves compare runs/a runs/b [--names=a,b] --out cmp.png
    python -m irstd_jax.tools.pdfa_curves plot runs/a/eval_test_basicirstd_last --out a.png

A run is a pdfa.json, an eval folder (eval_outputs.py) or a workdir: a workdir's
eval_test_basicirstd_last/ is taken when it has several eval folders, otherwise its only
one. The table lists the AUC over Fa <= 1e-4, Pd at Fa = 1e-6 and 1e-5 and the p = 0.5
operating point of each run; curves of different protocols draw a warning.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Sequence

import numpy as np

from irstd_jax import eval_outputs
from irstd_jax import pdfa_plots


def _load_curve(path: str | os.PathLike) -> tuple[str, dict]:
  """A pdfa.json from a file, an eval folder, or a workdir holding eval folders."""
  p = pathlib.Path(path)
  if not p.exists():
    raise FileNotFoundError(f'{p} does not exist (expected a pdfa.json, an eval folder or a '
                            'workdir with eval_*/pdfa.json)')
  if p.is_dir():
    candidates = ([p / eval_outputs.CURVE] if (p / eval_outputs.CURVE).exists()
                  else sorted(p.glob(f'eval_*/{eval_outputs.CURVE}')))
    preferred = [c for c in candidates if c.parent.name == eval_outputs.folder_name(
        'test', 'basicirstd', 'last')]
    if len(candidates) > 1 and not preferred:
      raise ValueError(f'{p} holds several curves; name one of: '
                       + ', '.join(str(c) for c in candidates))
    if not candidates:
      raise FileNotFoundError(f'no pdfa.json in {p} or {p}/eval_*/ (train the run to its end, '
                              'or run main.py --mode=eval; with eval.pdfa_sweep=False no '
                              'curve is written)')
    p = (preferred or candidates)[0]
  with open(p) as f:
    return str(p), json.load(f)


def _run_name(path: str, curve: dict) -> str:
  p = pathlib.Path(path)
  run = p.parent.parent.name if p.parent.name.startswith('eval_') else p.parent.name
  return f"{run} ({curve.get('protocol', '?')}, {curve.get('split', '?')})"


def compare(paths: Sequence[str], out: str | os.PathLike,
            names: Sequence[str] | None = None) -> list[dict]:
  """Overlays the Pd-Fa envelopes of several evaluations; returns one summary per run."""
  loaded = [_load_curve(p) for p in paths]
  names = list(names) if names else [_run_name(p, c) for p, c in loaded]
  if len(names) != len(loaded):
    raise ValueError(f'{len(names)} names for {len(loaded)} runs')
  pdfa_plots.plot_comparison([(name, curve) for name, (_, curve) in zip(names, loaded)], out)
  rows = []
  for (path, curve), name in zip(loaded, names):
    mid = int(np.argmin(np.abs(np.asarray(curve['thresholds']) - 0.5)))
    rows.append({'name': name, 'path': path, 'protocol': curve.get('protocol'),
                 'auc': curve['auc'],
                 'pd_at_1e-6': curve['pd_at_fa']['1e-06']['pd'],
                 'pd_at_1e-5': curve['pd_at_fa']['1e-05']['pd'],
                 'pd_at_0.5': curve['pd'][mid], 'fa_at_0.5': curve['fa'][mid]})
  return rows


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m irstd_jax.tools.pdfa_curves', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)
  c = sub.add_parser('compare', help='overlay the curves of several runs')
  c.add_argument('runs', nargs='+', help='pdfa.json files, eval folders or workdirs')
  c.add_argument('--out', required=True, help='PNG to write')
  c.add_argument('--names', default='', help='comma-separated legend names')
  p = sub.add_parser('plot', help='plot one curve')
  p.add_argument('run', help='a pdfa.json, an eval folder or a workdir')
  p.add_argument('--out', required=True)
  args = parser.parse_args(argv)
  try:
    if args.command == 'plot':
      path, curve = _load_curve(args.run)
      pdfa_plots.plot_curve(curve, args.out, title=pdfa_plots.describe(curve))
      print(f'{path}: {pdfa_plots.legend_text(curve)} -> {args.out}')
      return 0
    rows = compare(args.runs, args.out, [n for n in args.names.split(',') if n] or None)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  width = max(len(r['name']) for r in rows)
  print(f"{'run':<{width}}  {'AUC':>6}  {'Pd@1e-6':>8}  {'Pd@1e-5':>8}  {'Pd@0.5':>7}"
        f"  {'Fa@0.5 1e-6':>11}")
  for r in rows:
    print(f"{r['name']:<{width}}  {r['auc']:>6.3f}  {r['pd_at_1e-6']:>8.3f}  "
          f"{r['pd_at_1e-5']:>8.3f}  {r['pd_at_0.5']:>7.3f}  {1e6 * r['fa_at_0.5']:>11.2f}")
  print(f'-> {args.out}', flush=True)
  if len({r['protocol'] for r in rows}) > 1:
    print('warning: the runs use different protocols; their numbers are not comparable',
          file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
