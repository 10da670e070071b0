"""Paper-style result panels: rows of images; image, ground truth, each run's prediction.

    python -m irstd_jax.tools.panels --config=configs/synthetic.py \
        --run=L1=runs/l1 --run=SLS=runs/sls [--run=A3=runs/a3=configs/ablation/a3.py] \
        [--split=test] [--checkpoint=last|best] [--images=id1,id2 | --images=@ids.txt] \
        [--count=4] --out=docs/images/panels

Writes OUT.png and OUT.pdf (publication resolution: --dpi, --width_in) and OUT.json (the
images, why they were chosen, each run's per-image numbers). Nothing is written when an
argument is wrong, and the three files appear together (written aside, then renamed).

Cells. Prediction cells are the binary prediction (logit > 0, the eval threshold) on
black: predicted components matched to a target green (TP), unmatched ones red (FP), the
pixels of missed targets yellow (FN). The matching is targets.find_targets, i.e. the Pd
rule of metrics.py, so the colours agree with the runs' Pd and Fa. Each target gets a
coloured box and a magnified inset of the same region in every cell of its row (the
targets are 1-81 px in frames of 256 px and more: without insets they are invisible in
print). Images without a target zoom on the largest false alarms instead.

Which images. `--images` lists them by id. Without it, the `--count` images where the runs
disagree most are chosen (`disagreement`): the spread over runs of the detected targets,
plus the spread of the per-image IoU, plus 1 when some runs have false alarms on the
image and others none. The per-image numbers come from each run's stored evaluation of
the split when there is one for its current checkpoint (eval_outputs.py: the
eval_<split>_<protocol>_<checkpoint>/per_image.csv that training and --mode=eval write, or
a run directory of the earlier layout's eval_per_image.json); otherwise the run's
checkpoint is evaluated on the split here (the same Evaluator, so the same numbers).

Every run is restored with `--config` unless its `--run` names its own config
(NAME=WORKDIR=CONFIG[:ARG]); the images always come from `--config`'s dataset and split.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from irstd_jax import dataset_registry
from irstd_jax import eval_batching
from irstd_jax import metrics
from irstd_jax import targets as targets_lib

# Region boxes / inset borders: none of them is a TP/FP/FN colour.
INSET_COLOURS = ((0, 200, 255), (255, 255, 255), (150, 110, 255))
GT_COLOUR = (255, 255, 255)
STATS_FIELDS = ('iou', 'targets', 'detected', 'false_alarm_pixels')


# --------------------------------------------------------------------------- selection


def disagreement(stats: Sequence[Mapping]) -> float:
  """How much runs disagree on one image (0: all alike).

  Args:
    stats: one mapping per run with 'iou', 'detected' and 'false_alarm_pixels'.

  Returns:
    spread(detected targets) + spread(IoU) + spread(has a false alarm), spread = max - min.
  """
  detected = [int(s['detected']) for s in stats]
  iou = [float(s['iou']) for s in stats]
  has_false_alarm = [int(s['false_alarm_pixels']) > 0 for s in stats]
  return float((max(detected) - min(detected)) + (max(iou) - min(iou))
               + (max(has_false_alarm) - min(has_false_alarm)))


def select_images(per_run: Mapping[str, Mapping[str, Mapping]], count: int
                  ) -> list[tuple[str, float]]:
  """The `count` images the runs disagree on most, as (id, score), best first.

  Args:
    per_run: run name -> image id -> per-image stats (see `disagreement`).
    count: how many.

  Ties go to the smaller id, so the choice is deterministic.
  """
  ids = set.intersection(*(set(stats) for stats in per_run.values()))
  scored = [(image_id, disagreement([stats[image_id] for stats in per_run.values()]))
            for image_id in ids]
  scored.sort(key=lambda item: (-item[1], item[0]))
  return scored[:count]


def _latest_step(directory: str) -> int | None:
  steps = [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(
      directory) else []
  return max(steps) if steps else None


def stored_per_image(workdir: str, *, split: str, protocol: str, checkpoint: str,
                     test_split: str = 'test') -> dict[str, dict] | None:
  """A run's stored per-image numbers on `split`, or None when it has none that is current.

  Current means: written for the step of the run's latest `checkpoint`. Looks at the
  evaluation folder first (eval_outputs.py: training's or --mode=eval's), then at a run
  directory of the earlier layout's root eval_per_image.json (test split, last
  checkpoint, basicirstd only).
  """
  from irstd_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from irstd_jax import eval_outputs  # pylint: disable=g-import-not-at-top
  step = _latest_step(os.path.join(workdir, checkpointing.CHECKPOINTS[checkpoint]))
  for record in eval_outputs.stored(workdir, split, protocol, checkpoint,
                                    test_split=test_split):
    if record.per_image_path is None or record.results.get('step') != step:
      continue  # no rows, or written for another checkpoint: stale
    return {str(r['id']): {k: float(r[k]) for k in STATS_FIELDS} for r in record.per_image()}
  return None


# ------------------------------------------------------------------------------- cells


def prediction_cell(shape: tuple[int, int], targets: Sequence[targets_lib.Target]) -> np.ndarray:
  """RGB uint8 [H, W, 3]: black, TP/FP/FN pixels in targets_lib.COLOURS."""
  rgb = np.zeros((*shape, 3), np.uint8)
  for target in targets:
    ys, xs = target.pixels
    rgb[ys, xs] = targets_lib.COLOURS[target.status]
  return rgb


def truth_cell(label: np.ndarray) -> np.ndarray:
  """RGB uint8 [H, W, 3]: the label's target pixels white on black."""
  rgb = np.zeros((*label.shape, 3), np.uint8)
  rgb[label.astype(bool)] = GT_COLOUR
  return rgb


def image_cell(image: np.ndarray) -> np.ndarray:
  return np.repeat(image.astype(np.uint8)[..., None], 3, axis=2)


def inset_regions(label: np.ndarray, predictions: Sequence[Sequence[targets_lib.Target]], *,
                  max_regions: int = 2, min_side: int = 16
                  ) -> list[tuple[int, int, int, int]]:
  """Square regions (y0, x0, y1, x1) to magnify: one per target, in raster order.

  Without a target, the largest false alarms of any run. Each square is at least
  `min_side` and twice the component's extent, centred on it, inside the image.
  """
  h, w = label.shape
  components, _ = ndimage.label(label.astype(bool), structure=metrics.EIGHT_CONNECTED)
  boxes = [(s[0].start, s[1].start, s[0].stop, s[1].stop)
           for s in ndimage.find_objects(components)]
  if not boxes:
    false_alarms = [t for run in predictions for t in run if t.status == 'FP']
    boxes = [t.bbox for t in sorted(false_alarms, key=lambda t: (-t.area, t.centroid))]
  regions = []
  for y0, x0, y1, x1 in boxes:
    side = min(max(min_side, 2 * max(y1 - y0, x1 - x0)), h, w)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    top = int(np.clip(cy - side // 2, 0, h - side))
    left = int(np.clip(cx - side // 2, 0, w - side))
    region = (top, left, top + side, left + side)
    if region not in regions:
      regions.append(region)
    if len(regions) == max_regions:
      break
  return regions


def _box(rgb: np.ndarray, y0: int, x0: int, y1: int, x1: int, colour, thick: int) -> None:
  rgb[y0:y0 + thick, x0:x1] = colour
  rgb[y1 - thick:y1, x0:x1] = colour
  rgb[y0:y1, x0:x0 + thick] = colour
  rgb[y0:y1, x1 - thick:x1] = colour


def _overlap(a, b) -> int:
  return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def compose_cell(cell: np.ndarray, regions: Sequence[tuple[int, int, int, int]], *,
                 scale: int, inset_fraction: float = 0.42,
                 avoid: np.ndarray | None = None) -> np.ndarray:
  """The cell magnified `scale` times (nearest), region boxes and insets drawn on it.

  Each region's inset (nearest-neighbour magnification, bordered in the region's colour)
  goes to the free corner that covers the least of the region boxes, then the fewest
  `avoid` pixels (bool [H, W]: pass every cell of a row the same one, the union of the
  label and all predictions, so that insets sit in the same corners across the row and
  hide no detection or false alarm where they can help it).

  Returns:
    RGB uint8 [H * scale, W * scale, 3].
  """
  big = np.repeat(np.repeat(cell, scale, axis=0), scale, axis=1)
  h, w = big.shape[:2]
  thick = max(1, round(min(h, w) / 200))
  boxes = [tuple(v * scale for v in r) for r in regions]
  for i, (y0, x0, y1, x1) in enumerate(boxes):
    _box(big, y0, x0, y1, x1, INSET_COLOURS[i % len(INSET_COLOURS)], thick)
  free = ['bottom-left', 'bottom-right', 'top-right', 'top-left']
  for i, (y0, x0, y1, x1) in enumerate(regions):
    crop = cell[y0:y1, x0:x1]
    factor = max(1, int(inset_fraction * min(h, w)) // max(crop.shape[:2]))
    inset = np.repeat(np.repeat(crop, factor, axis=0), factor, axis=1)
    ih, iw = inset.shape[:2]
    ih, iw = min(ih, h), min(iw, w)
    inset = inset[:ih, :iw].copy()
    _box(inset, 0, 0, ih, iw, INSET_COLOURS[i % len(INSET_COLOURS)], thick)
    places = {'bottom-left': (h - ih, 0), 'bottom-right': (h - ih, w - iw),
              'top-right': (0, w - iw), 'top-left': (0, 0)}
    def cost(c):
      top, left = places[c]
      rect = (top, left, top + ih, left + iw)
      covered = 0
      if avoid is not None:
        covered = int(avoid[top // scale:-(-(top + ih) // scale),
                            left // scale:-(-(left + iw) // scale)].sum())
      return (sum(_overlap(rect, b) for b in boxes), covered)

    corner = min(free, key=cost)
    free.remove(corner)
    top, left = places[corner]
    big[top:top + ih, left:left + iw] = inset
    if not free:
      break
  return big


# ------------------------------------------------------------------------------ figure


@dataclasses.dataclass
class Row:
  """One image of the panel with every run's prediction."""
  image_id: str
  image: np.ndarray  # uint8 [H, W]
  label: np.ndarray  # {0, 1} [H, W]
  logits: list[np.ndarray]  # per run, float32 [H, W]


def row_cells(row: Row, *, max_regions: int, cell_px: int) -> list[np.ndarray]:
  """The composed RGB cells of one row: image, ground truth, then one per run."""
  label = row.label.astype(bool)
  predictions = [targets_lib.find_targets(logits > 0, logits, label) for logits in row.logits]
  regions = inset_regions(label, predictions, max_regions=max_regions)
  scale = max(1, math.ceil(cell_px / max(label.shape)))
  cells = [image_cell(row.image), truth_cell(label)]
  cells += [prediction_cell(label.shape, targets) for targets in predictions]
  busy = label | np.any([logits > 0 for logits in row.logits], axis=0)
  return [compose_cell(cell, regions, scale=scale, avoid=busy) for cell in cells]


def _atomic_savefig(fig, path: str, **kwargs) -> str:
  tmp = f'{path}.tmp'
  fig.savefig(tmp, format=os.path.splitext(path)[1][1:], **kwargs)
  return tmp


def draw(rows: Sequence[Row], run_names: Sequence[str], out: str, *, dpi: int = 300,
         width_in: float = 7.0, max_regions: int = 2, metadata: Mapping | None = None
         ) -> list[str]:
  """Draws the panel; writes out.png, out.pdf and out.json together. Returns the paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top

  columns = ['Image', 'Ground truth', *run_names]
  cell_in = width_in / len(columns)
  label_in, title_in, legend_in = 0.18, 0.22, 0.25
  fig = plt.figure(figsize=(width_in + label_in,
                            title_in + legend_in + cell_in * len(rows)))
  fig_w, fig_h = fig.get_size_inches()
  grid = fig.add_gridspec(len(rows), len(columns), left=label_in / fig_w, right=1.0,
                          top=1 - title_in / fig_h, bottom=legend_in / fig_h,
                          wspace=0.03, hspace=0.03)
  cell_px = int(cell_in * dpi)
  for r, row in enumerate(rows):
    for c, cell in enumerate(row_cells(row, max_regions=max_regions, cell_px=cell_px)):
      ax = fig.add_subplot(grid[r, c])
      ax.imshow(cell, interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_visible(False)
      if r == 0:
        ax.set_title(columns[c], fontsize=8, pad=3)
      if c == 0:
        ax.set_ylabel(row.image_id, fontsize=6)
  fig.legend(handles=[Patch(color=np.asarray(targets_lib.COLOURS[s]) / 255, label=text)
                      for s, text in (('TP', 'TP (detected target)'),
                                      ('FP', 'FP (false alarm)'),
                                      ('FN', 'FN (missed target)'))],
             loc='lower center', ncol=3, fontsize=7, frameon=False,
             bbox_to_anchor=(0.5, 0.0))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  written = {}
  try:
    for ext in ('.png', '.pdf'):
      written[out + ext] = _atomic_savefig(fig, out + ext, dpi=dpi)
    tmp = out + '.json.tmp'
    with open(tmp, 'w') as f:
      json.dump({**(metadata or {}), 'columns': columns, 'dpi': dpi,
                 'width_in': width_in}, f, indent=2)
    written[out + '.json'] = tmp
  except BaseException:
    for tmp in written.values():
      if os.path.exists(tmp):
        os.remove(tmp)
    raise
  finally:
    plt.close(fig)
  for final, tmp in written.items():
    os.replace(tmp, final)
  return list(written)


# ------------------------------------------------------------------------- runs, main


@dataclasses.dataclass
class Run:
  name: str
  workdir: str
  config: object  # ml_collections.ConfigDict


def parse_run(spec: str, default_config) -> Run:
  """NAME=WORKDIR or NAME=WORKDIR=CONFIG[:ARG] -> Run."""
  # The parser behind --config: the same 'path.py[:arg]' syntax as main.py.
  from ml_collections.config_flags import config_flags as config_file_parser  # pylint: disable=g-import-not-at-top
  parts = spec.split('=', 2)
  if len(parts) < 2 or not parts[0] or not parts[1]:
    raise ValueError(f'--run={spec!r}: expected NAME=WORKDIR or NAME=WORKDIR=CONFIG[:ARG]')
  name, workdir = parts[0], parts[1]
  if not os.path.isdir(workdir):
    raise ValueError(f'--run={spec!r}: {workdir} is not a directory')
  config = default_config
  if len(parts) == 3:
    config = config_file_parser.ConfigFileFlagParser(name='run').parse(parts[2])
  return Run(name, workdir, config)


def parse_image_ids(spec: str) -> list[str]:
  """'a,b,c' or '@file' (one id per line, blank lines and #-comments ignored)."""
  if spec.startswith('@'):
    with open(spec[1:]) as f:
      lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line]
  return [s.strip() for s in spec.split(',') if s.strip()]


def make_panels(runs: Sequence[Run], source, out: str, *, split: str,
                protocol: str = 'basicirstd', checkpoint: str = 'last',
                image_ids: Sequence[str] | None = None, count: int = 4, dpi: int = 300,
                width_in: float = 7.0, max_regions: int = 2, log=print) -> dict:
  """Restores every run, chooses the images (given or automatic), draws and writes.

  Args:
    runs: the methods, one column each, in order.
    source: the split's records ({'image', 'mask', 'id'}), as `protocol` evaluates them.

  Returns:
    The metadata written to out.json.

  Raises:
    ValueError: an image id is not in the split (nothing is written).
  """
  from irstd_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from irstd_jax import evaluate  # pylint: disable=g-import-not-at-top
  index_of = {eval_batching.record_id(source[i], i): i for i in range(len(source))}
  if image_ids is not None:
    missing = [i for i in image_ids if i not in index_of]
    if missing:
      raise ValueError(f'--images: {missing} not in the {split} split ({len(index_of)} '
                       f'images, e.g. {sorted(index_of)[:3]})')
  restored = {}
  for run in runs:
    restored_run = checkpointing.restore_run(run.config, run.workdir, checkpoint)
    evaluator, state, step = (evaluate.evaluator_for(run.config, restored_run),
                              restored_run.state, restored_run.step)
    restored[run.name] = (evaluator, state, step)
    log(f'{run.name}: {run.workdir}, {checkpoint} checkpoint at step {step}')
  per_run = {}
  if image_ids is None:
    for run in runs:
      stats = stored_per_image(run.workdir, split=split, protocol=protocol,
                               checkpoint=checkpoint, test_split=run.config.eval.split)
      if stats is None:
        log(f'{run.name}: no stored per-image evaluation of this checkpoint on {split}; '
            f'evaluating {len(source)} images')
        evaluator, state, _ = restored[run.name]
        _, rows = evaluator.evaluate(state, source)
        stats = {str(r['id']): {k: float(r[k]) for k in STATS_FIELDS} for r in rows}
      per_run[run.name] = stats
    chosen = select_images(per_run, count)
    image_ids = [image_id for image_id, _ in chosen]
    scores = dict(chosen)
    log('chosen (disagreement): ' + ', '.join(f'{i} ({s:.2f})' for i, s in chosen))
  else:
    scores = {}
  records = [source[index_of[i]] for i in image_ids]
  logits = {}
  for run in runs:
    evaluator, state, _ = restored[run.name]
    logits[run.name] = {str(i): l for i, l, _ in evaluator.predictions(state, records)}
  rows = []
  for image_id, record in zip(image_ids, records):
    image = np.asarray(record['image'])
    label = np.asarray(record['mask'])
    rows.append(Row(image_id, image.reshape(image.shape[:2]), label.reshape(label.shape[:2]),
                    [logits[run.name][image_id] for run in runs]))
  metadata = {
      'split': split, 'protocol': protocol, 'checkpoint': checkpoint,
      'runs': [{'name': r.name, 'workdir': os.path.abspath(r.workdir),
                'step': restored[r.name][2]} for r in runs],
      'selection': 'given' if not scores else
                   'automatic: spread of detected + spread of IoU + spread of has-false-alarm',
      'images': [{'id': row.image_id, 'disagreement': scores.get(row.image_id),
                  'per_run': {name: _row_stats(row.logits[k], row.label)
                              for k, name in enumerate(r.name for r in runs)}}
                 for row in rows],
  }
  paths = draw(rows, [r.name for r in runs], out, dpi=dpi, width_in=width_in,
               max_regions=max_regions, metadata=metadata)
  log('wrote ' + ', '.join(paths))
  return metadata


def _row_stats(logits: np.ndarray, label: np.ndarray) -> dict:
  s = metrics.image_stats(logits > 0, label)
  return {'iou': round(s.iou, 4), 'targets': s.num_targets, 'detected': s.num_detected,
          'false_alarm_pixels': s.false_alarm_pixels}


def main(argv: Sequence[str]) -> None:  # pragma: no cover - exercised via subprocess
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise SystemExit(f'error: unexpected arguments {argv[1:]}')
  f = flags.FLAGS
  from irstd_jax import datasets  # pylint: disable=g-import-not-at-top
  from irstd_jax import evaluate  # pylint: disable=g-import-not-at-top
  config = f.config
  try:
    if not f.run:
      raise ValueError('--run: give at least one NAME=WORKDIR')
    runs = [parse_run(spec, config) for spec in f.run]
    if len({r.name for r in runs}) != len(runs):
      raise ValueError(f'--run: names must differ, got {[r.name for r in runs]}')
    image_ids = parse_image_ids(f.images) if f.images else None
    if image_ids is not None and not image_ids:
      raise ValueError(f'--images={f.images!r} lists no image')
    split = f.split or config.eval.split
    source = evaluate.protocol_source(datasets.load_split(config.data, split,
                                                          seed=config.seed), f.protocol)
    make_panels(runs, source, f.out, split=split, protocol=f.protocol,
                checkpoint=f.checkpoint, image_ids=image_ids, count=f.count, dpi=f.dpi,
                width_in=f.width_in, max_regions=f.max_insets)
  except (ValueError, FileNotFoundError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def _define_flags() -> None:  # pragma: no cover
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py): the dataset '
                                  'and split, and the model of runs without their own.',
                                  lock_config=True)
  flags.DEFINE_multi_string('run', [], 'NAME=WORKDIR[=CONFIG[:ARG]], one column each.')
  flags.DEFINE_enum('split', None, list(dataset_registry.SPLITS),
                    'The split (default: config.eval.split).')
  flags.DEFINE_enum('protocol', 'basicirstd', ['basicirstd', 'mshnet'],
                    'Native resolution, or images resized to 256.')
  flags.DEFINE_enum('checkpoint', 'last', ['last', 'best'], 'Each run\'s checkpoint.')
  flags.DEFINE_string('images', None, "Image ids: 'a,b' or '@file'. Default: automatic.")
  flags.DEFINE_integer('count', 4, 'Rows chosen automatically (without --images).',
                       lower_bound=1)
  flags.DEFINE_string('out', None, 'Output prefix: OUT.png, OUT.pdf, OUT.json.',
                      required=True)
  flags.DEFINE_integer('dpi', 300, 'Resolution of the PNG (and of the rasters in the PDF).',
                       lower_bound=50)
  flags.DEFINE_float('width_in', 7.0, 'Figure width in inches (7: a two-column page).',
                     lower_bound=1.0)
  flags.DEFINE_integer('max_insets', 2, 'Magnified regions per image.', lower_bound=0,
                       upper_bound=3)


if __name__ == '__main__':  # pragma: no cover
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  from absl import flags as _flags  # pylint: disable=g-import-not-at-top
  _flags.mark_flag_as_required('config')
  app.run(main)
