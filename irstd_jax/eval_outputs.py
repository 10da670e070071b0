"""Where an evaluation's results live on disk: one folder per (split, protocol, checkpoint).

Training's final evaluation and `main.py --mode=eval` write the same layout:

    WORKDIR/eval_<split>_<protocol>_<checkpoint>/    e.g. eval_test_basicirstd_last/
      eval_results.json  iou, niou, pd, fa (plain fractions), num_images, num_targets,
                         split, step, protocol, resolution, checkpoint, dataset, the Pd-Fa
                         summary (auc, auc_fa_max, pd_at_fa); training's record of its last
                         checkpoint adds num_parameters and val_best (the validation-best
                         checkpoint's test results and its validation IoU)
      per_image.csv      id, iou, targets, detected, false_alarm_pixels, height, width
      pdfa.json, pdfa.png  the threshold sweep (pdfa.py, pdfa_plots.py); absent when the
                         evaluation ran with eval.pdfa_sweep=False

eval_results.json is written last (and a rewrite removes the old one first), so a folder
without it is an unfinished evaluation and every reader ignores it. Rewriting a folder
(e.g. `--mode=eval` after training) keeps the keys of the record it replaces that it does
not compute itself (val_best, num_parameters), when both are of the same checkpoint step.

The earlier layout (run directories written before this module existed, e.g. a study
that is resumed) had training's record at the workdir's root: WORKDIR/eval_results.json
(test split, basicirstd, last checkpoint, with val_best) and WORKDIR/eval_per_image.json
(a JSON list of the per-image rows); `--mode=eval` already wrote the folders above. Every
reader here (`read_results`, `stored`) still reads that root record.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os

from irstd_jax import reporting

RESULTS = 'eval_results.json'
PER_IMAGE = 'per_image.csv'
CURVE = 'pdfa.json'
CURVE_FIGURE = 'pdfa.png'
PER_IMAGE_FIELDS = ('id', 'iou', 'targets', 'detected', 'false_alarm_pixels', 'height',
                    'width')
# The earlier layout: training's last-checkpoint record at the workdir's root.
LEGACY_RESULTS = 'eval_results.json'
LEGACY_PER_IMAGE = 'eval_per_image.json'
LEGACY_PROTOCOL, LEGACY_CHECKPOINT = 'basicirstd', 'last'
# Keys only training computes; a re-evaluation of the same step keeps them.
_TRAINING_KEYS = ('val_best', 'num_parameters')


def folder_name(split: str, protocol: str, checkpoint: str) -> str:
  return f'eval_{split}_{protocol}_{checkpoint}'


def folder(workdir: str, split: str, protocol: str, checkpoint: str) -> str:
  """The evaluation folder of (split, protocol, checkpoint) in `workdir`."""
  return os.path.join(workdir, folder_name(split, protocol, checkpoint))


def _write_per_image_csv(path: str, rows: list[dict]) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=PER_IMAGE_FIELDS, extrasaction='ignore')
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r['id']):
      writer.writerow({**row, 'iou': f"{row['iou']:.6f}"})
  os.replace(tmp, path)


def write(output: str, results: dict, per_image: list[dict], curve: dict | None) -> dict:
  """Writes one evaluation folder (see the module docstring); call on process 0 only.

  Args:
    output: the folder (usually `folder(...)`); created if needed.
    results: the eval_results.json record (metrics plus what was evaluated).
    per_image: rows with PER_IMAGE_FIELDS (evaluate.Evaluator.evaluate's).
    curve: pdfa.SweepAccumulator.result() with the same description keys as `results`, or
      None (not swept): an earlier evaluation's curve in `output` is then removed, since it
      would describe another model.

  Returns:
    The record as written (with the kept training keys, if any).
  """
  from irstd_jax import pdfa_plots  # pylint: disable=g-import-not-at-top
  os.makedirs(output, exist_ok=True)
  results_path = os.path.join(output, RESULTS)
  previous = _load_json(results_path)
  if previous is not None:
    if previous.get('step') == results.get('step'):
      results = {**{k: previous[k] for k in _TRAINING_KEYS if k in previous}, **results}
    # Unfinished until the new record is written: a rewrite stopped half-way must not leave
    # the old record describing the new per-image rows (or a removed curve).
    os.remove(results_path)
  _write_per_image_csv(os.path.join(output, PER_IMAGE), per_image)
  if curve is None:
    for name in (CURVE, CURVE_FIGURE):
      if os.path.exists(os.path.join(output, name)):
        os.remove(os.path.join(output, name))
  else:
    reporting.write_json(os.path.join(output, CURVE), curve)
    pdfa_plots.plot_curve(curve, os.path.join(output, CURVE_FIGURE),
                          title=pdfa_plots.describe(curve))
  reporting.write_json(results_path, results)  # last: it marks the folder finished
  return results


def _load_json(path: str):
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


@dataclasses.dataclass(frozen=True)
class StoredEvaluation:
  """One stored record of an evaluation and where its per-image rows are."""
  results: dict
  per_image_path: str | None  # per_image.csv, or the earlier layout's eval_per_image.json

  def per_image(self) -> list[dict]:
    """The per-image rows (values as stored: strings from the CSV, numbers from JSON)."""
    if self.per_image_path is None:
      raise FileNotFoundError(f'no per-image file next to {self.results.get("split")} '
                              'results')
    with open(self.per_image_path, newline='') as f:
      if self.per_image_path.endswith('.csv'):
        return list(csv.DictReader(f))
      return json.load(f)


def stored(workdir: str, split: str, protocol: str, checkpoint: str, *,
           test_split: str = 'test') -> list[StoredEvaluation]:
  """Every stored record of (split, protocol, checkpoint), current layout first.

  Args:
    test_split: the split the earlier layout's root record is of when it does not say
      (it always did; kept for records written by hand).
  """
  found = []
  directory = folder(workdir, split, protocol, checkpoint)
  results = _load_json(os.path.join(directory, RESULTS))
  if results is not None:
    per_image = os.path.join(directory, PER_IMAGE)
    found.append(StoredEvaluation(results, per_image if os.path.isfile(per_image) else None))
  if (protocol, checkpoint) == (LEGACY_PROTOCOL, LEGACY_CHECKPOINT):
    legacy = _load_json(os.path.join(workdir, LEGACY_RESULTS))
    if legacy is not None and legacy.get('split', test_split) == split:
      per_image = os.path.join(workdir, LEGACY_PER_IMAGE)
      found.append(StoredEvaluation(legacy, per_image if os.path.isfile(per_image) else None))
  return found


def read_results(workdir: str, split: str, protocol: str, checkpoint: str) -> dict | None:
  """The eval_results.json record of (split, protocol, checkpoint), or None if none exists.

  Reads the current layout and the earlier one. Of several records the one of the latest
  step wins (the folder's on a tie), completed with the training keys (val_best,
  num_parameters) of another record of the same step, as `write` keeps them.
  """
  records = [s.results for s in stored(workdir, split, protocol, checkpoint)]
  if not records:
    return None
  latest = max(r.get('step', -1) for r in records)
  same_step = [r for r in records if r.get('step', -1) == latest]
  results = same_step[0]
  for other in same_step[1:]:
    results = {**{k: other[k] for k in _TRAINING_KEYS if k in other}, **results}
  return results
