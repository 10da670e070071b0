"""Inference on your own image files: any size, any number, with optional labels and TTA.

    python main.py --config=configs/synthetic.py --workdir=runs/synthetic --mode=predict \
        --input='my_frames/*.png' --output=runs/synthetic/predictions [--labels=my_masks] [--tta]

For each image it writes `masks/<name>.png` (0/255), `probabilities/<name>.png`
(round(255 p)) and `overlays/<name>.png` (targets.overlay), and for the whole set
`targets.csv` (one row per detected target: centroid, area, peak and mean score) and
`summary.json` (sizes, skipped files with their reasons, whether the run was interrupted).
Detections are ranked by `peak_logit` in targets.csv, as confident detectors saturate the
probability at 1.0 to four decimals.

How images are run (tiles, size buckets, TTA): predictor.py. Overlays, when a label exists
(`--labels`: a folder of masks named like the images, also `<name>_pixels0`, `_mask`,
`_label`, `_gt`): TP green, FP red, FN yellow by the Pd rule (targets.py); without a label
every detection is magenta.

Outputs never mix runs: an output folder that holds files is refused unless `overwrite`,
which first removes what predict writes (OUTPUTS) and keeps anything else. Files that cannot
be read are skipped and listed; when no image could be predicted it is an error. Ctrl-C or
SIGTERM stops after the image in progress: the finished images' files, `targets.csv` and
`summary.json` (with `"interrupted"`) are written, then interrupts.Interrupted is raised.
"""
from __future__ import annotations

import collections
import csv
import glob
import json
import os
import pathlib
import shutil
import time
from typing import Sequence

import numpy as np
from PIL import Image

from irstd_jax import interrupts
from irstd_jax import metrics as metrics_lib
from irstd_jax import predictor as predictor_lib
from irstd_jax import raw_data
from irstd_jax import targets as targets_lib
from irstd_jax.errors import UserError

LABEL_SUFFIXES = ('', raw_data.MASK_SUFFIX, '_mask', '_label', '_gt')
OUTPUTS = ('masks', 'probabilities', 'overlays', 'targets.csv', 'summary.json')
TARGET_FIELDS = ('image', 'target', 'status', 'centroid_row', 'centroid_col', 'area',
                 'peak_score', 'mean_score', 'peak_logit')


# ------------------------------------------------------------------------------ files


def find_images(spec: str) -> list[pathlib.Path]:
  """A file, a folder (its images, not recursive) or a glob pattern, sorted."""
  path = pathlib.Path(spec)
  if path.is_file():
    return [path]
  if path.is_dir():
    found = [p for p in path.iterdir() if p.suffix.lower() in raw_data.IMAGE_EXTENSIONS]
  else:
    found = [pathlib.Path(p) for p in glob.glob(spec, recursive=True)
             if pathlib.Path(p).suffix.lower() in raw_data.IMAGE_EXTENSIONS]
  if not found:
    raise UserError(f'no images ({", ".join(raw_data.IMAGE_EXTENSIONS)}) at {spec}',
                    '--input', 'pass an image file, a folder of images or a quoted glob')
  return sorted(found)


def find_label(image: pathlib.Path, labels_dir: str | None) -> pathlib.Path | None:
  if not labels_dir:
    return None
  folder = pathlib.Path(labels_dir)
  for suffix in LABEL_SUFFIXES:
    for ext in raw_data.IMAGE_EXTENSIONS:
      for candidate in (folder / f'{image.stem}{suffix}{ext}',
                        folder / f'{image.stem}{suffix}{ext.upper()}'):
        if candidate.is_file():
          return candidate
  return None


def _unique_names(paths: Sequence[pathlib.Path]) -> list[str]:
  seen: collections.Counter = collections.Counter()
  names = []
  for p in paths:
    seen[p.stem] += 1
    names.append(p.stem if seen[p.stem] == 1 else f'{p.stem}_{seen[p.stem] - 1}')
  return names


def _save_png(path: pathlib.Path, array: np.ndarray) -> None:
  Image.fromarray(array).save(path, compress_level=3)


def prepare_output(output: str, *, overwrite: bool = False) -> None:
  """Makes sure `output` holds no earlier run's outputs.

  Raises:
    errors.UserError: `output` is a file, or a folder holding files and not `overwrite`.
  """
  out = pathlib.Path(output)
  if out.exists() and not out.is_dir():
    raise UserError(f'the output {output} is a file', '--output', 'pass a folder')
  if not out.is_dir() or not any(out.iterdir()):
    return
  if not overwrite:
    raise UserError(f'the output folder {output} is not empty (an earlier run\'s masks would '
                    'mix with this one\'s)', '--output',
                    'pass another --output, or --overwrite to replace what predict wrote there')
  for name in OUTPUTS:  # only what predict owns; the user's own files stay
    path = out / name
    if path.is_dir():
      shutil.rmtree(path)
    elif path.exists():
      path.unlink()


def predict_files(predictor: predictor_lib.Predictor, images: Sequence[pathlib.Path],
                  output: str, *,
                  labels_dir: str | None = None, checkpoint_info: dict | None = None,
                  overwrite: bool = False) -> dict:
  """Runs `predictor` over image files and writes everything to `output`.

  Returns:
    The summary (also output/summary.json): 'num_images' predicted, 'skipped' (one
    {'file', 'reason'} per image that could not be read), 'problems' (labels ignored),
    'interrupted' (the signal's name, or None).

  Raises:
    errors.UserError: see prepare_output.
    interrupts.Interrupted: after writing what finished, when Ctrl-C / SIGTERM arrived.
  """
  prepare_output(output, overwrite=overwrite)
  out = pathlib.Path(output)
  for sub in ('masks', 'probabilities', 'overlays'):
    (out / sub).mkdir(parents=True, exist_ok=True)
  names = _unique_names(images)
  grey: dict[int, np.ndarray] = {}
  labels: dict[int, np.ndarray | None] = {}
  problems, skipped = [], []

  def load():
    for i, path in enumerate(images):
      try:
        grey[i] = raw_data.read_image(path)[..., 0]
        label_path = find_label(path, labels_dir)
        labels[i] = None
        if label_path is not None:
          label, _, _ = raw_data.binarise(raw_data.read_mask(label_path)[..., 0])
          if label.shape != grey[i].shape:
            problems.append(f'{label_path}: label size {label.shape} differs from the '
                            f'image {grey[i].shape}; ignored')
          else:
            labels[i] = label
      except ValueError as e:  # unreadable: say so, go on with the others
        skipped.append({'file': str(path), 'reason': str(e)})
        grey.pop(i, None)
        continue
      yield i, grey[i]

  accumulator = metrics_lib.MetricAccumulator()
  rows, sizes = [], {}
  num_targets = collections.Counter()
  t0 = time.monotonic()
  with interrupts.StopRequests() as stop:
    for i, logits in predictor.predict(load()):
      image, label = grey.pop(i), labels.pop(i)
      mask, prob = logits > 0, metrics_lib.sigmoid(logits)
      targets = targets_lib.find_targets(mask, logits, label)
      if label is not None:
        accumulator.update(mask, label)
      name = names[i]
      _save_png(out / 'masks' / f'{name}.png', mask.astype(np.uint8) * 255)
      _save_png(out / 'probabilities' / f'{name}.png',
                np.rint(255.0 * prob).astype(np.uint8))
      _save_png(out / 'overlays' / f'{name}.png', targets_lib.overlay(image, targets))
      sizes[name] = list(image.shape)  # only once all three files are written
      for n, t in enumerate(targets):
        num_targets[t.status] += 1
        rows.append({'image': name, 'target': n, 'status': t.status,
                     'centroid_row': f'{t.centroid[0]:.2f}',
                     'centroid_col': f'{t.centroid[1]:.2f}', 'area': t.area,
                     'peak_score': f'{t.peak_score:.4f}', 'mean_score': f'{t.mean_score:.4f}',
                     'peak_logit': f'{t.peak_logit:.2f}'})
      if stop.requested:
        break
  rows.sort(key=lambda r: (r['image'], r['target']))
  with open(out / 'targets.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=TARGET_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  interrupted = interrupts.signal_name(stop.signum) if stop.requested else None
  summary = {
      'num_images': len(sizes), 'sizes': sizes,
      'targets': dict(num_targets),
      'tta': predictor.tta, 'tile_size': predictor.tile_size, 'overlap': predictor.overlap,
      'max_side': predictor.max_side,
      'compiled_shapes': sorted(f'{h}x{w}' for h, w in predictor.shapes_run),
      'seconds': round(time.monotonic() - t0, 2),
      'skipped': skipped,
      'problems': problems,
      'interrupted': interrupted,
      **(checkpoint_info or {}),
  }
  if interrupted:
    summary['not_predicted'] = len(images) - len(sizes) - len(skipped)
  if accumulator.num_images:
    summary['metrics'] = {
        'protocol': 'predict (whole image up to max_side, else tiles; '
                    + ('8-fold TTA' if predictor.tta else 'no TTA') + ')',
        **accumulator.result()}
  tmp = out / 'summary.json.tmp'
  tmp.write_text(json.dumps(summary, indent=2))
  os.replace(tmp, out / 'summary.json')
  if interrupted:
    raise interrupts.Interrupted(
        f'{interrupted}: predict stopped after {len(sizes)} of {len(images)} images; their '
        f'files, targets.csv and summary.json (marked interrupted) are in {output}',
        signum=stop.signum)
  return summary


def run_predict(config, workdir: str, *, input_spec: str, output: str | None = None,
                labels_dir: str | None = None, checkpoint: str = 'last',
                tta: bool = False, tile_size: int = 512, overlap: int = 64,
                max_side: int = 1024, overwrite: bool = False) -> dict:
  """`main.py --mode=predict`: restores a run's checkpoint and predicts `input_spec`.

  Raises:
    errors.UserError: bad config, inputs, output folder or checkpoint (checked before the
      model is built), or no input image could be read (summary.json lists why).
    interrupts.Interrupted: see predict_files.
  """
  from irstd_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from irstd_jax import config_validation  # pylint: disable=g-import-not-at-top
  from irstd_jax import evaluate  # pylint: disable=g-import-not-at-top
  config_validation.validate_config(config, mode='predict', workdir=workdir)
  images = find_images(input_spec)
  output = output or os.path.join(workdir, 'predictions')
  prepare_output(output, overwrite=overwrite)  # refuse before the model is built
  run = checkpointing.restore_run(config, workdir, checkpoint)
  evaluator, state, step = evaluate.evaluator_for(config, run), run.state, run.step
  predictor = predictor_lib.Predictor(lambda batch: evaluator.logits(state, batch),
                                      batch_size=evaluator.batch_size, tile_size=tile_size,
                                      overlap=overlap, max_side=max_side, tta=tta)
  summary = predict_files(predictor, images, output, labels_dir=labels_dir,
                          overwrite=overwrite,
                          checkpoint_info={'checkpoint': checkpoint, 'step': step,
                                           'workdir': os.path.abspath(workdir)})
  line = (f"{summary['num_images']} images -> {output} (masks/, probabilities/, overlays/, "
          f"targets.csv, summary.json) | step {step} ({checkpoint}) | TTA {'on' if tta else 'off'}"
          f" | detections {dict(summary['targets'])} | compiled shapes "
          f"{summary['compiled_shapes']} | {summary['seconds']:.1f} s")
  if 'metrics' in summary:
    line += f"\n  labelled images: {metrics_lib.format_results(summary['metrics'])}"
  for skip in summary['skipped']:
    line += f"\n  skipped: {skip['file']}: {skip['reason']}"
  for problem in summary['problems']:
    line += f'\n  label ignored: {problem}'
  print(line, flush=True)
  if not summary['num_images']:
    raise UserError(f'no image predicted: all {len(images)} inputs were skipped',
                    input_spec, f'see the reasons above (also in {output}/summary.json)')
  return summary
