"""Evaluation at native resolution: a few compiled shapes per split, metrics on host.

Images are padded for the network into at most `eval.max_shapes` size buckets per split
(eval_batching.size_buckets: multiples of 32, chosen to add the fewest padded pixels) and
cropped back, batched only with images of the same padded shape, so predictions do not
depend on the eval batch size, and a split of many sizes compiles a few programs.
Metrics (metrics.py) and the Pd-Fa sweep (pdfa.py) only ever see the cropped native region.
Where the results are written: eval_outputs.py (one layout for training and --mode=eval).

Two protocols, named in every output (docs/metrics.md):
  * basicirstd: each image at its native resolution (BasicIRSTD; the default).
  * mshnet: images resized to 256 x 256 (bilinear; masks nearest), as MSHNet's test loader
    does; Fa is then normalised by 256 x 256 pixels per image.

Evaluating a trained run (`main.py --mode=eval`, see `run_eval`):

    python main.py --config=configs/synthetic.py --workdir=runs/synthetic --mode=eval \
        --split=test --protocol=basicirstd --checkpoint=last
"""
from __future__ import annotations

import functools
import os
import time
from typing import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from PIL import Image

from irstd_jax import checkpointing
from irstd_jax import config_validation
from irstd_jax import eval_outputs
from irstd_jax import eval_batching
from irstd_jax import input_pipeline
from irstd_jax import interrupts
from irstd_jax import metrics as metrics_lib
from irstd_jax import pdfa
from irstd_jax import train_state as train_state_lib

PROTOCOLS = ('basicirstd', 'mshnet')
MSHNET_SIZE = 256
DEFAULT_MAX_SHAPES = 4  # compiled eval shapes per split (benchmarks/README.md)


def eval_step(params, model_state, images, *, graphdef, mean: float, std: float):
  """Logits of the fused output for uint8 images [B, H, W, 1] (BN in inference mode)."""
  fused, _, _ = train_state_lib.apply_model(graphdef, params, model_state,
                         input_pipeline.normalize(images, mean, std), train=False)
  return fused


class ResizedSource:
  """A source whose images are resized to size x size (the mshnet protocol).

  Image: PIL bilinear; mask: PIL nearest (stays binary), as MSHNet's test loader.
  """

  def __init__(self, source, size: int = MSHNET_SIZE):
    self.source = source
    self.size = size

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    record = dict(self.source[index])
    for key, resample in (('image', Image.Resampling.BILINEAR),
                          ('mask', Image.Resampling.NEAREST)):
      array = np.asarray(record[key])
      array = array[..., 0] if array.ndim == 3 else array
      resized = Image.fromarray(array.astype(np.uint8)).resize((self.size, self.size),
                                                               resample)
      record[key] = np.asarray(resized)[..., None]
    return record


def protocol_source(source, protocol: str):
  """The source as `protocol` evaluates it."""
  if protocol == 'basicirstd':
    return source
  if protocol == 'mshnet':
    return ResizedSource(source, MSHNET_SIZE)
  raise ValueError(f'unknown protocol {protocol!r}; expected one of {PROTOCOLS}')


class Evaluator:
  """Evaluates a state on a split at native resolution, one compiled step per shape."""

  def __init__(self, config, graphdef, mesh, shardings):
    self.mesh = mesh
    devices = mesh.devices.size
    # Round the eval batch up so it splits over devices; filler rows are invalid.
    self.batch_size = eval_batching.round_up(config.eval.batch_size, devices)
    self.pad_multiple = config.eval.pad_multiple
    # A bound on compiled shapes per split (eval_batching.size_buckets); older configs
    # without the field get the default.
    self.max_shapes = config.eval.get('max_shapes', DEFAULT_MAX_SHAPES)
    self.batch_sharding = NamedSharding(mesh, P('data'))
    self._step = jax.jit(
        functools.partial(eval_step, graphdef=graphdef, mean=config.data.mean,
                          std=config.data.std),
        in_shardings=(shardings.params, shardings.model_state, self.batch_sharding),
        out_shardings=NamedSharding(mesh, P()))
    self._batches: dict[int, list] = {}

  def logits(self, state: train_state_lib.TrainState, images: np.ndarray) -> np.ndarray:
    """Logits [B, H, W, 1] (host numpy) of uint8 images [B, H, W, 1], B = batch_size.

    Every process passes the whole global batch and gets the whole result back.
    """
    if images.shape[0] != self.batch_size:
      raise ValueError(f'expected a batch of {self.batch_size}, got {images.shape[0]}')
    rows = self.batch_size // jax.process_count()
    lo = jax.process_index() * rows
    images = jax.make_array_from_process_local_data(
        self.batch_sharding, np.asarray(images)[lo:lo + rows])
    logits = self._step(state.params, state.model_state, images)
    # Replicated output: every process holds the whole batch in its local shard (np.asarray
    # on the global array would refuse, as it spans other processes' devices).
    return np.asarray(logits.addressable_data(0))

  def predict_logits(self, state: train_state_lib.TrainState,
                     batch: eval_batching.EvalBatch) -> np.ndarray:
    return self.logits(state, batch.image)

  def predictions(self, state: train_state_lib.TrainState, source, *,
                  stop: interrupts.StopRequests | None = None
                  ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yields (id, logits [h, w] float32, mask [h, w] uint8), cropped to native size.

    Order: grouped by padded shape (eval_batching.eval_batches), deterministic.

    Raises:
      interrupts.Interrupted: `stop` was requested (checked between batches).
    """
    key = id(source)
    if key not in self._batches:  # eval splits are small: decode them once per run
      self._batches[key] = eval_batching.eval_batches(
          source, batch_size=self.batch_size, pad_multiple=self.pad_multiple,
          max_shapes=self.max_shapes)
    for batch in self._batches[key]:
      if stop is not None and stop.requested:
        raise interrupts.Interrupted('evaluation interrupted', signum=stop.signum)
      logits = self.predict_logits(state, batch)
      for row in np.flatnonzero(batch.valid):
        h, w = batch.heights[row], batch.widths[row]
        yield batch.ids[row], logits[row, :h, :w, 0], batch.mask[row, :h, :w, 0]

  def evaluate(self, state: train_state_lib.TrainState, source, *, threshold: float = 0.0,
               sweep: pdfa.SweepAccumulator | None = None,
               stop: interrupts.StopRequests | None = None):
    """Returns (results dict, per-image rows); also feeds `sweep` when given.

    Raises:
      interrupts.Interrupted: `stop` was requested before the split was done.
    """
    accumulator = metrics_lib.MetricAccumulator()
    per_image = []
    for image_id, logits, mask in self.predictions(state, source, stop=stop):
      stats = accumulator.update(logits > threshold, mask)
      if sweep is not None:
        sweep.update(logits, mask)
      per_image.append({'id': image_id, 'iou': stats.iou, 'targets': stats.num_targets,
                        'detected': stats.num_detected,
                        'false_alarm_pixels': stats.false_alarm_pixels,
                        'height': int(logits.shape[0]), 'width': int(logits.shape[1])})
    return accumulator.result(), per_image


# ------------------------------------------------------------------- evaluating a run


def evaluator_for(config, run: checkpointing.RestoredRun) -> Evaluator:
  """The Evaluator of a restored run (its graph, mesh and shardings)."""
  return Evaluator(config, run.graphdef, run.mesh, run.shardings)


def evaluate_source(evaluator: Evaluator, state, source, *, protocol: str = 'basicirstd',
                    sweep: bool = True, logit_thresholds: np.ndarray | None = None,
                    stop: interrupts.StopRequests | None = None):
  """Plain metrics (logit > 0) and, if `sweep`, the Pd-Fa sweep of `state` on `source` in
  one pass.

  Returns:
    (results, per-image rows, sweep result or None): see metrics.MetricAccumulator.result
    and pdfa.SweepAccumulator.result.
  """
  accumulator = pdfa.SweepAccumulator(logit_thresholds) if sweep else None
  results, per_image = evaluator.evaluate(state, protocol_source(source, protocol),
                                          sweep=accumulator, stop=stop)
  return results, per_image, None if accumulator is None else accumulator.result()


def describe(config, *, split: str, step: int, protocol: str, checkpoint: str) -> dict:
  """What an evaluation record is of: split, step, protocol, resolution, checkpoint, dataset."""
  resolution = 'native' if protocol == 'basicirstd' else f'{MSHNET_SIZE}x{MSHNET_SIZE}'
  return {'split': split, 'step': step, 'protocol': protocol, 'resolution': resolution,
          'checkpoint': checkpoint, 'dataset': config.data.name}


def evaluate_checkpoint(config, evaluator: Evaluator, state, source, *, split: str,
                        checkpoint: str, protocol: str = 'basicirstd',
                        stop: interrupts.StopRequests | None = None):
  """One checkpoint on one split, as training's final evaluation and --mode=eval record it.

  Returns:
    (results, per-image rows, curve): `results` is eval_results.json's record (metrics,
    `describe`'s keys and the Pd-Fa summary auc / auc_fa_max / pd_at_fa), `curve` is
    pdfa.json's (the sweep and `describe`'s keys); eval_outputs.write writes all three.
    With `config.eval.pdfa_sweep` False, `curve` is None and `results` has no Pd-Fa keys.

  Raises:
    interrupts.Interrupted: `stop` was requested before the split was done.
  """
  results, per_image, curve = evaluate_source(evaluator, state, source, protocol=protocol,
                                              sweep=config.eval.pdfa_sweep, stop=stop)
  meta = describe(config, split=split, step=int(state.step), protocol=protocol,
                  checkpoint=checkpoint)
  results.update(meta)
  if curve is None:
    return results, per_image, None
  results.update(auc=curve['auc'], auc_fa_max=curve['auc_fa_max'], pd_at_fa=curve['pd_at_fa'])
  return results, per_image, {**meta, **curve}


def relabel(outputs, checkpoint: str):
  """`evaluate_checkpoint`'s (results, per-image rows, curve) recorded under another
  checkpoint name: for a validation-best checkpoint that IS the last one (same step, same
  weights), whose evaluation would repeat the last's exactly."""
  results, per_image, curve = outputs
  return ({**results, 'checkpoint': checkpoint}, per_image,
          None if curve is None else {**curve, 'checkpoint': checkpoint})


def run_eval(config, workdir: str, *, split: str | None = None,
             protocol: str = 'basicirstd', checkpoint: str = 'last',
             output: str | None = None) -> dict:
  """`main.py --mode=eval`: evaluates a run's checkpoint on a split and writes its folder,
  `output` (default eval_outputs.folder: WORKDIR/eval_<split>_<protocol>_<checkpoint>/,
  the layout training's final evaluation writes too; eval_outputs.py lists the files).

  Returns:
    The eval_results.json content.

  Raises:
    errors.UserError: bad config, no checkpoint, missing data (nothing is written).
    interrupts.Interrupted: Ctrl-C / SIGTERM before the split was done (nothing is written:
      metrics of part of a split would read as the split's).
  """
  from irstd_jax import datasets  # pylint: disable=g-import-not-at-top
  if protocol not in PROTOCOLS:
    raise ValueError(f'unknown protocol {protocol!r}; expected one of {PROTOCOLS}')
  config_validation.validate_config(config, mode='eval', workdir=workdir)
  split = split or config.eval.split
  t0 = time.monotonic()
  with interrupts.StopRequests() as stop:
    run = checkpointing.restore_run(config, workdir, checkpoint)
    source = datasets.load_split(config.data, split, seed=config.seed)
    try:
      results, per_image, curve = evaluate_checkpoint(
          config, evaluator_for(config, run), run.state, source, split=split,
          checkpoint=checkpoint, protocol=protocol, stop=stop)
    except interrupts.Interrupted as e:
      raise interrupts.Interrupted(
          f'{interrupts.signal_name(e.signum)}: evaluation stopped, nothing written; rerun '
          'to evaluate', signum=e.signum) from None
  output = output or eval_outputs.folder(workdir, split, protocol, checkpoint)
  if jax.process_index() == 0:
    results = eval_outputs.write(output, results, per_image, curve)
  curve_line = ('Pd-Fa: not swept (eval.pdfa_sweep=False)' if curve is None else
                f"Pd-Fa: AUC(Fa<={curve['auc_fa_max']:g}) {curve['auc']:.4f}  "
                f"Pd@Fa=1e-6 {curve['pd_at_fa']['1e-06']['pd']:.4f}  "
                f"Pd@Fa=1e-5 {curve['pd_at_fa']['1e-05']['pd']:.4f}")
  line = (f"{config.data.name} {split} | {checkpoint} checkpoint, step {run.step} | "
          f"{protocol} protocol ({results['resolution']}) | {results['num_images']} images, "
          f"{results['num_targets']} targets\n  {metrics_lib.format_results(results)}\n"
          f"  {curve_line}\n  -> {output} ({time.monotonic() - t0:.1f} s)")
  if jax.process_index() == 0:
    print(line, flush=True)  # stdout only: absl's log (stderr) would show it twice
  return results
