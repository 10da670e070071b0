"""Inference on your own images: any size, any number, with optional labels and TTA.

    python main.py --config=configs/synthetic.py --workdir=runs/synthetic --mode=predict \
        --input='my_frames/*.png' --output=runs/synthetic/predictions [--labels=my_masks] [--tta]

For each image it writes `masks/<name>.png` (0/255), `probabilities/<name>.png`
(round(255 p)) and `overlays/<name>.png`, and for the whole set `targets.csv` (one row per
detected target: centroid, area, peak and mean score) and `summary.json` (sizes, skipped
files with their reasons, whether the run was interrupted).

Outputs never mix runs: an output folder that holds files is refused unless `overwrite`,
which first removes what predict writes (OUTPUTS) and keeps anything else. Files that cannot
be read are skipped and listed; when no image could be predicted it is an error. Ctrl-C or
SIGTERM stops after the image in progress: the finished images' files, `targets.csv` and
`summary.json` (with `"interrupted"`) are written, then interrupts.Interrupted is raised.

How an image is run:
  * Images whose sides are at most `max_side` (1024) go through the network whole. Larger
    frames are cut into `tile_size` tiles overlapping by at least `overlap` pixels; the
    tiles' probabilities are blended with weights that ramp down linearly across the
    overlaps (and not at the frame's border), so there are no seams.
  * Each image or tile is zero-padded at the bottom/right to a bucket size per side
    (BUCKETS: multiples of 32, about 1.25x apart), and batched with other inputs of the
    same bucket shape, so a folder of many sizes compiles a handful of shapes, not one per
    size (a stream's sizes are not known in advance, so unlike `--mode=eval`'s per-split
    buckets, input_pipeline.size_buckets, the ladder is fixed).
  * `tta`: the 8 flips/transposes of each input, each undone on its output, averaged in
    probability space.
  * The output is a logit map: the network's own logits when one view covers a pixel,
    else the logit of the averaged probability (float64, capped at +-37 where that
    probability rounds to 0 or 1). Mask = logit > 0, i.e. p > 0.5; without TTA or tiling
    exactly eval's prediction. Detections are ranked by `peak_logit` in targets.csv, as
    confident detectors saturate the probability at 1.0 to four decimals.

Overlays, when a label exists (`--labels`: a folder of masks named like the images, also
`<name>_pixels0`, `_mask`, `_label`, `_gt`): predicted components matched to a target by
the Pd rule (centroid < 3 px, metrics.py) are green (TP), unmatched predicted components
red (FP), missed targets yellow (FN); each gets a box so tiny ones can be found. Without a
label every detection is magenta.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import json
import os
import pathlib
import shutil
import time
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from irstd_jax import input_pipeline
from irstd_jax import interrupts
from irstd_jax import metrics as metrics_lib
from irstd_jax import raw_data
from irstd_jax.errors import UserError

BUCKETS = (32, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024)
LABEL_SUFFIXES = ('', raw_data.MASK_SUFFIX, '_mask', '_label', '_gt')
COLOURS = {'TP': (0, 255, 0), 'FP': (255, 0, 0), 'FN': (255, 255, 0),
           'detection': (255, 0, 255)}
OUTPUTS = ('masks', 'probabilities', 'overlays', 'targets.csv', 'summary.json')
TARGET_FIELDS = ('image', 'target', 'status', 'centroid_row', 'centroid_col', 'area',
                 'peak_score', 'mean_score', 'peak_logit')
_LOGIT_CAP = 37.0  # |logit| beyond which a float64 probability is exactly 0 or 1


# ------------------------------------------------------------------------ geometry


def bucket(n: int, buckets: Sequence[int] = BUCKETS, multiple: int = 32) -> int:
  """The smallest bucket >= n (beyond the last one: n rounded up to `multiple`)."""
  for b in buckets:
    if b >= n:
      return b
  return input_pipeline.round_up(n, multiple)


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
  """Starts of tiles of length `tile` covering [0, n), neighbours overlapping >= overlap."""
  if n <= tile:
    return [0]
  if overlap >= tile:
    raise ValueError(f'overlap {overlap} must be smaller than the tile size {tile}')
  count = -(-(n - overlap) // (tile - overlap))
  return [round(i * (n - tile) / (count - 1)) for i in range(count)]


def _ramp(length: int, start: int, total: int, overlap: int) -> np.ndarray:
  """Blend weights along one axis: rising over `overlap` px unless at the frame border."""
  i = np.arange(length, dtype=np.float64)
  w = np.ones(length)
  ramp = max(overlap, 1)
  if start > 0:
    w = np.minimum(w, (i + 1) / (ramp + 1))
  if start + length < total:
    w = np.minimum(w, (length - i) / (ramp + 1))
  return w


def transform(x: np.ndarray, k: int) -> np.ndarray:
  """The k-th (0..7) element of the flips/transposes group on [H, W] arrays."""
  if k & 4:
    x = x.T
  if k & 1:
    x = x[::-1]
  if k & 2:
    x = x[:, ::-1]
  return x


def inverse_transform(x: np.ndarray, k: int) -> np.ndarray:
  if k & 2:
    x = x[:, ::-1]
  if k & 1:
    x = x[::-1]
  if k & 4:
    x = x.T
  return x


# ---------------------------------------------------------------------- the predictor


@dataclasses.dataclass
class _Pending:
  """One image being assembled from its tiles / TTA views."""
  key: object
  shape: tuple[int, int]
  prob_sum: np.ndarray
  weight_sum: np.ndarray
  logit: np.ndarray  # the one logit of each pixel, when a single view covers it
  views: int = 0
  remaining: int = 0


class Predictor:
  """Probability maps for images of any size (see the module docstring).

  Args:
    logits_fn: uint8 images [B, Hb, Wb, 1] -> logits [B, Hb, Wb, 1] (numpy); B is always
      `batch_size` (unused rows are zeros). Evaluator.logits bound to a state is one.
    batch_size: rows per call.
    tile_size, overlap, max_side: tiling of frames with a side above max_side.
    tta: average the 8 flips/transposes in probability space.
  """

  def __init__(self, logits_fn: Callable[[np.ndarray], np.ndarray], *, batch_size: int = 4,
               tile_size: int = 512, overlap: int = 64, max_side: int = 1024,
               tta: bool = False, buckets: Sequence[int] = BUCKETS):
    if tile_size % 32 or tile_size > max_side:
      raise ValueError(f'tile_size {tile_size} must be a multiple of 32 and <= max_side')
    self.logits_fn = logits_fn
    self.batch_size = batch_size
    self.tile_size, self.overlap, self.max_side = tile_size, overlap, max_side
    self.tta = tta
    self.buckets = tuple(buckets)
    self.shapes_run: collections.Counter = collections.Counter()  # bucket shape -> calls

  def _views(self, image: np.ndarray):
    """(y0, x0, tile [h, w], blend weight [h, w] or None, k) for every network input."""
    h, w = image.shape
    if max(h, w) <= self.max_side:
      boxes = [(0, 0, h, w)]
    else:
      boxes = [(y, x, min(self.tile_size, h), min(self.tile_size, w))
               for y in tile_starts(h, self.tile_size, self.overlap)
               for x in tile_starts(w, self.tile_size, self.overlap)]
    for y, x, th, tw in boxes:
      weight = None
      if len(boxes) > 1:
        weight = np.outer(_ramp(th, y, h, self.overlap), _ramp(tw, x, w, self.overlap))
      for k in (range(8) if self.tta else (0,)):
        yield y, x, transform(image[y:y + th, x:x + tw], k), weight, k

  def predict(self, images: Iterable[tuple[object, np.ndarray]]
              ) -> Iterator[tuple[object, np.ndarray]]:
    """Yields (key, logits [H, W] float32) for each (key, uint8 image [H, W]).

    Probability = sigmoid(logits), mask = logits > 0 (see the module docstring).

    Images are yielded as soon as all their views are done (not necessarily in input
    order): inputs of one bucket shape are batched across images.
    """
    queues: dict[tuple[int, int], list] = collections.defaultdict(list)
    open_images: dict[int, _Pending] = {}

    def run(shape):
      items = queues.pop(shape)
      batch = np.zeros((self.batch_size, *shape, 1), np.uint8)
      for row, (_, _, _, view, _, _) in enumerate(items):
        batch[row, :view.shape[0], :view.shape[1], 0] = view
      logits = np.asarray(self.logits_fn(batch))
      self.shapes_run[shape] += 1
      finished = []
      for row, (index, y, x, view, weight, k) in enumerate(items):
        logit = inverse_transform(logits[row, :view.shape[0], :view.shape[1], 0], k)
        p = open_images[index]
        th, tw = logit.shape
        region = (slice(y, y + th), slice(x, x + tw))
        wgt = 1.0 if weight is None else weight
        p.prob_sum[region] += wgt * metrics_lib.sigmoid(logit)
        p.weight_sum[region] += wgt
        p.logit[region] = logit
        p.remaining -= 1
        if p.remaining == 0:
          finished.append(index)
      for index in finished:
        p = open_images.pop(index)
        if p.views == 1:  # the network's own logits: the mask is exactly eval's
          yield p.key, p.logit
          continue
        prob = p.prob_sum / p.weight_sum
        with np.errstate(divide='ignore'):
          logit = np.log(prob) - np.log1p(-prob)
        yield p.key, np.clip(logit, -_LOGIT_CAP, _LOGIT_CAP).astype(np.float32)

    for index, (key, image) in enumerate(images):
      image = np.asarray(image)
      image = image[..., 0] if image.ndim == 3 else image
      views = list(self._views(image))
      open_images[index] = _Pending(
          key, image.shape, np.zeros(image.shape), np.zeros(image.shape),
          np.zeros(image.shape, np.float32), views=len(views), remaining=len(views))
      for y, x, view, weight, k in views:
        shape = (bucket(view.shape[0], self.buckets), bucket(view.shape[1], self.buckets))
        queues[shape].append((index, y, x, view, weight, k))
        if len(queues[shape]) == self.batch_size:
          yield from run(shape)
    for shape in sorted(queues):
      yield from run(shape)


# ------------------------------------------------------------------ targets, overlays


@dataclasses.dataclass(frozen=True)
class Target:
  status: str  # TP | FP | FN | detection
  centroid: tuple[float, float]  # (row, col)
  area: int
  peak_score: float  # highest probability in the component
  mean_score: float
  peak_logit: float
  bbox: tuple[int, int, int, int]  # y0, x0, y1, x1 (exclusive)
  pixels: tuple[np.ndarray, np.ndarray]


def _component_list(mask, logits, status):
  labels, count = ndimage.label(mask, structure=metrics_lib.EIGHT_CONNECTED)
  out = []
  for i, sl in enumerate(ndimage.find_objects(labels), start=1):
    local = labels[sl] == i
    ys, xs = np.nonzero(local)
    ys, xs = ys + sl[0].start, xs + sl[1].start
    scores = metrics_lib.sigmoid(logits[ys, xs])
    out.append(Target(status, (float(ys.mean()), float(xs.mean())), int(ys.size),
                      float(scores.max()), float(scores.mean()), float(logits[ys, xs].max()),
                      (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop), (ys, xs)))
  assert len(out) == count
  return out


def find_targets(mask: np.ndarray, logits: np.ndarray,
                 label: np.ndarray | None = None) -> list[Target]:
  """Predicted components (and missed label components) with their status.

  With a label, the matching is metrics.image_stats' (label components in raster order,
  each taking the first unused predicted component with centroid < 3 px), so the TP / FP
  / FN counts agree with Pd and Fa.
  """
  predicted = _component_list(mask, logits, 'detection' if label is None else 'FP')
  if label is None:
    return predicted
  targets = _component_list(label.astype(bool), logits, 'FN')
  matched = metrics_lib.match_targets([t.centroid for t in targets],
                                      [t.centroid for t in predicted])
  used = np.zeros(len(predicted), bool)
  used[matched[matched >= 0]] = True
  missed = [t for t, m in zip(targets, matched) if m < 0]
  return [dataclasses.replace(t, status='TP') if u else t
          for t, u in zip(predicted, used)] + missed


def overlay(image: np.ndarray, targets: Sequence[Target]) -> np.ndarray:
  """RGB uint8 [H, W, 3]: the grey image, target pixels tinted, a box around each."""
  grey = image.astype(np.float32)
  rgb = np.repeat(grey[..., None], 3, axis=2)
  h, w = image.shape
  thick = max(1, round(max(h, w) / 512))
  margin = 3 * thick
  for t in targets:
    colour = np.asarray(COLOURS[t.status], np.float32)
    ys, xs = t.pixels
    rgb[ys, xs] = 0.35 * rgb[ys, xs] + 0.65 * colour
    y0, x0 = max(t.bbox[0] - margin, 0), max(t.bbox[1] - margin, 0)
    y1, x1 = min(t.bbox[2] + margin, h), min(t.bbox[3] + margin, w)
    for sl in ((slice(y0, y0 + thick), slice(x0, x1)), (slice(y1 - thick, y1), slice(x0, x1)),
               (slice(y0, y1), slice(x0, x0 + thick)), (slice(y0, y1), slice(x1 - thick, x1))):
      rgb[sl] = colour
  return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


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


def predict_files(predictor: Predictor, images: Sequence[pathlib.Path], output: str, *,
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
      targets = find_targets(mask, logits, label)
      if label is not None:
        accumulator.update(mask, label)
      name = names[i]
      _save_png(out / 'masks' / f'{name}.png', mask.astype(np.uint8) * 255)
      _save_png(out / 'probabilities' / f'{name}.png',
                np.rint(255.0 * prob).astype(np.uint8))
      _save_png(out / 'overlays' / f'{name}.png', overlay(image, targets))
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
  from irstd_jax import config_validation  # pylint: disable=g-import-not-at-top
  from irstd_jax import evaluate  # pylint: disable=g-import-not-at-top
  config_validation.validate_config(config, mode='predict', workdir=workdir)
  images = find_images(input_spec)
  output = output or os.path.join(workdir, 'predictions')
  prepare_output(output, overwrite=overwrite)  # refuse before the model is built
  evaluator, state, step = evaluate.restore_state(config, workdir, checkpoint)
  predictor = Predictor(lambda batch: evaluator.logits(state, batch),
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
