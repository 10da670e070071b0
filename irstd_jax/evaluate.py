"""Evaluation at native resolution: one compiled step per padded shape, metrics on host.

Images are padded to a multiple of 32 for the network and cropped back, batched only with
images of the same padded shape, so predictions do not depend on the eval batch size.
"""
import functools

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from irstd_jax import input_pipeline
from irstd_jax import metrics as metrics_lib
from irstd_jax import train_state as train_state_lib


def eval_step(params, model_state, images, *, graphdef, mean: float, std: float):
  """Logits of the fused output for uint8 images [B, H, W, 1] (BN in inference mode)."""
  fused, _, _ = train_state_lib.apply_model(graphdef, params, model_state,
                         input_pipeline.normalize(images, mean, std), train=False)
  return fused


class Evaluator:
  """Evaluates a state on a split at native resolution, one compiled step per shape."""

  def __init__(self, config, graphdef, mesh, shardings):
    self.mesh = mesh
    devices = mesh.devices.size
    # Round the eval batch up so it splits over devices; filler rows are invalid.
    self.batch_size = -(-config.eval.batch_size // devices) * devices
    self.pad_multiple = config.eval.pad_multiple
    self.batch_sharding = NamedSharding(mesh, P('data'))
    self._step = jax.jit(
        functools.partial(eval_step, graphdef=graphdef, mean=config.data.mean,
                          std=config.data.std),
        in_shardings=(shardings.params, shardings.model_state, self.batch_sharding),
        out_shardings=NamedSharding(mesh, P()))
    self._batches: dict[int, list] = {}

  def predict_logits(self, state: train_state_lib.TrainState,
                     batch: input_pipeline.EvalBatch) -> np.ndarray:
    rows = self.batch_size // jax.process_count()
    lo = jax.process_index() * rows
    images = jax.make_array_from_process_local_data(
        self.batch_sharding, batch.image[lo:lo + rows])
    logits = self._step(state.params, state.model_state, images)
    # Replicated output: every process holds the whole batch in its local shard (np.asarray
    # on the global array would refuse, as it spans other processes' devices).
    return np.asarray(logits.addressable_data(0))

  def evaluate(self, state: train_state_lib.TrainState, source, *, threshold: float = 0.0):
    """Returns (results dict, per-image rows)."""
    key = id(source)
    if key not in self._batches:  # eval splits are small: decode them once per run
      self._batches[key] = input_pipeline.eval_batches(
          source, batch_size=self.batch_size, pad_multiple=self.pad_multiple)
    accumulator = metrics_lib.MetricAccumulator()
    per_image = []
    for batch in self._batches[key]:
      logits = self.predict_logits(state, batch)
      for row in np.flatnonzero(batch.valid):
        h, w = batch.heights[row], batch.widths[row]
        pred = logits[row, :h, :w, 0] > threshold
        stats = accumulator.update(pred, batch.mask[row, :h, :w, 0])
        per_image.append({'id': batch.ids[row], 'iou': stats.iou,
                          'targets': stats.num_targets, 'detected': stats.num_detected,
                          'false_alarm_pixels': stats.false_alarm_pixels})
    return accumulator.result(), per_image


