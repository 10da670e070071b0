"""Training and evaluation loop: `train_and_evaluate(config, workdir)`.

One `jax.jit`-compiled train step with explicit shardings over a ('data',) mesh of all
devices of all processes: the global batch is split on 'data', parameters and optimizer
state are replicated. With one CPU device this is the degenerate mesh; on a pod it is
the same code. BatchNorm statistics and every batch mean are taken over the global batch
(XLA inserts the collectives), so results do not depend on the device count.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metrics as clu_metrics
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from irstd_jax import checkpointing
from irstd_jax import datasets
from irstd_jax import input_pipeline
from irstd_jax import losses
from irstd_jax import metrics as metrics_lib
from irstd_jax import models
from irstd_jax import reporting


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly where it stopped."""
  step: jax.Array  # int32 scalar: completed optimizer steps
  params: nnx.State  # nnx.Param leaves
  model_state: nnx.State  # everything else: BatchNorm running statistics
  opt_state: optax.OptState


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output('loss')
  iou: clu_metrics.Average.from_output('iou')


def make_optimizer(optim_config) -> optax.GradientTransformation:
  """Adagrad with PyTorch's defaults (zero initial accumulator)."""
  return optax.adagrad(optim_config.learning_rate,
                       initial_accumulator_value=optim_config.initial_accumulator_value,
                       eps=optim_config.eps)


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh over every device of every process."""
  return jax.make_mesh((jax.device_count(),), ('data',))


def state_shardings(abstract_state: Any, mesh: jax.sharding.Mesh) -> Any:
  """Sharding of every state leaf: replicated (data parallelism).

  Kept as a function of the leaf so that a 'model' axis can later shard large kernels.
  """
  replicated = NamedSharding(mesh, P())
  return jax.tree.map(lambda _: replicated, abstract_state)


def check_batch_divides(global_batch: int, mesh: jax.sharding.Mesh, what: str) -> None:
  devices = mesh.devices.size
  if global_batch % devices:
    raise ValueError(
        f'{what} batch size {global_batch} does not divide over {devices} devices; '
        f'use a multiple of {devices}')
  if global_batch % jax.process_count():
    raise ValueError(f'{what} batch size {global_batch} does not divide over '
                     f'{jax.process_count()} processes')


def create_train_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       tx: optax.GradientTransformation):
  """Builds parameters directly on the devices, already sharded, under jit.

  Eager NNX construction would compile one small kernel per weight shape (about 12 s for
  MSHNet on a 2-core CPU); `nnx.eval_shape` gives the structure for free and one jitted
  init materialises everything.

  Returns:
    (graphdef, state, state_shardings)
  """
  build = functools.partial(models.build_model, config.model)
  abstract_model = nnx.eval_shape(lambda: build(rngs=nnx.Rngs(0)))
  graphdef, _, _ = nnx.split(abstract_model, nnx.Param, ...)

  def init(key: jax.Array) -> TrainState:
    model = build(rngs=nnx.Rngs(params=key))
    _, params, model_state = nnx.split(model, nnx.Param, ...)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      model_state=model_state, opt_state=tx.init(params))

  key = jax.random.key(config.seed)
  abstract_state = jax.eval_shape(init, key)
  shardings = state_shardings(abstract_state, mesh)
  state = jax.jit(init, out_shardings=shardings)(key)
  return graphdef, state, shardings


def _forward(graphdef, params, model_state, images, *, train: bool):
  model = nnx.merge(graphdef, params, model_state)
  if train:
    model.train()
  else:
    model.eval()
  fused, sides = model(images)
  _, _, new_model_state = nnx.split(model, nnx.Param, ...)
  return fused, sides, new_model_state


def train_step(state: TrainState, batch: dict, *, graphdef, tx, loss_fn: Callable,
               warmup_steps: int, mean: float, std: float):
  """One optimizer step on a global batch.

  Args:
    state: the TrainState.
    batch: {'image': uint8 [B, S, S, 1], 'mask': uint8 [B, S, S, 1]}.

  Returns:
    (new state, TrainMetrics for this batch)
  """
  images = input_pipeline.normalize(batch['image'], mean, std)
  labels = batch['mask'].astype(jnp.float32)
  warmup = state.step < warmup_steps

  def compute_loss(params):
    fused, sides, new_model_state = _forward(graphdef, params, state.model_state, images,
                                             train=True)
    loss = loss_fn(fused, sides, labels, warmup=warmup)
    # Before warm-up ends the reference trains and predicts with the d0 head only.
    prediction = jnp.where(warmup, sides[0], fused)
    return loss, (new_model_state, prediction)

  (loss, (new_model_state, prediction)), grads = jax.value_and_grad(
      compute_loss, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  pred = prediction > 0
  inter = jnp.sum(pred & (labels > 0))
  union = jnp.sum(pred | (labels > 0))
  iou = inter / jnp.maximum(union, 1)
  new_state = state.replace(step=state.step + 1, params=params,
                            model_state=new_model_state, opt_state=opt_state)
  return new_state, TrainMetrics.single_from_model_output(loss=loss, iou=iou)


def eval_step(params, model_state, images, *, graphdef, mean: float, std: float):
  """Logits of the fused output for uint8 images [B, H, W, 1] (BN in inference mode)."""
  fused, _, _ = _forward(graphdef, params, model_state,
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

  def predict_logits(self, state: TrainState, batch: input_pipeline.EvalBatch) -> np.ndarray:
    rows = self.batch_size // jax.process_count()
    lo = jax.process_index() * rows
    images = jax.make_array_from_process_local_data(
        self.batch_sharding, batch.image[lo:lo + rows])
    return np.asarray(self._step(state.params, state.model_state, images))

  def evaluate(self, state: TrainState, source, *, threshold: float = 0.0):
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


class _PreemptionFlag:
  """Set by SIGTERM; the loop then saves a checkpoint at the current step and stops."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. some test runners): no handler
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint and stopping.')
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _results_table(rows: list[tuple[str, str, dict]]) -> str:
  header = (f"{'split':<11}{'checkpoint':<12}{'step':>7}{'IoU %':>8}{'nIoU %':>8}"
            f"{'Pd %':>8}{'Fa 1e-6':>9}{'images':>8}{'targets':>8}")
  lines = [header, '-' * len(header)]
  for split, which, r in rows:
    lines.append(
        f"{split:<11}{which:<12}{r['step']:>7}{100 * r['iou']:>8.2f}{100 * r['niou']:>8.2f}"
        f"{100 * r['pd']:>8.2f}{1e6 * r['fa']:>9.2f}{r['num_images']:>8}{r['num_targets']:>8}")
  return '\n'.join(lines)


def _write_json(path: str, payload: Any) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2)
  os.replace(tmp, path)  # never leave a half-written results file


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from `workdir` if it holds checkpoints) and evaluates.

  Returns:
    The test-split results of the last step (also written to workdir/eval_results.json).
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = make_mesh()
  global_batch = config.train.batch_size
  check_batch_divides(global_batch, mesh, 'train')
  is_chief = jax.process_index() == 0

  train_source = datasets.load_split(config.data, 'train', seed=config.seed)
  val_source = (datasets.load_split(config.data, 'validation', seed=config.seed)
                if config.train.eval_every_epochs else None)
  test_source = datasets.load_split(config.data, config.eval.split, seed=config.seed)
  schedule = input_pipeline.TrainSchedule(len(train_source), global_batch,
                                          config.train.num_epochs)
  logging.info('train: %d images, %d steps/epoch, %d steps; %s: %d images; devices: %d',
               len(train_source), schedule.steps_per_epoch, schedule.num_steps,
               config.eval.split, len(test_source), jax.device_count())

  tx = make_optimizer(config.optim)
  t0 = time.monotonic()
  graphdef, state, shardings = create_train_state(config, mesh, tx)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('MSHNet: %s parameters', f'{num_params:,}')

  manager = checkpointing.create_manager(workdir, max_to_keep=config.train.max_to_keep)
  best_manager = checkpointing.create_manager(workdir, max_to_keep=1,
                                              name='checkpoints_best')
  restored = checkpointing.restore_latest(manager, checkpointing.abstract_like(state))
  if restored is not None:
    state = restored
  start_step = int(state.step)

  loss_fn = functools.partial(losses.mshnet_loss, **config.loss.to_dict())
  batch_sharding = NamedSharding(mesh, P('data'))
  p_train_step = jax.jit(
      functools.partial(train_step, graphdef=graphdef, tx=tx, loss_fn=loss_fn,
                        warmup_steps=config.train.warm_epochs * schedule.steps_per_epoch,
                        mean=config.data.mean, std=config.data.std),
      in_shardings=(shardings, batch_sharding),
      out_shardings=(shardings, NamedSharding(mesh, P())),
      donate_argnums=0)
  evaluator = Evaluator(config, graphdef, mesh, shardings)

  writer = reporting.create_default_writer(workdir)
  if start_step == 0:
    writer.write_hparams(config.to_dict())
  progress = reporting.ProgressReport(
      num_steps=schedule.num_steps, steps_per_epoch=schedule.steps_per_epoch,
      global_batch_size=global_batch, every_steps=config.train.log_every_steps,
      writer=writer)
  best_path = os.path.join(workdir, 'val_best.json')
  best = json.load(open(best_path)) if os.path.exists(best_path) else None

  dataset = input_pipeline.train_dataset(
      train_source, schedule=schedule, seed=config.seed,
      cfg=input_pipeline.AugmentConfig.from_config(config.data),
      process_index=jax.process_index(), process_count=jax.process_count())
  batches = input_pipeline.train_iterator(dataset, start_step=start_step,
                                          worker_count=config.data.worker_count)
  train_metrics = None
  step = start_step
  with _PreemptionFlag() as preemption:
    for step in range(start_step, schedule.num_steps):
      local = next(batches)
      batch = {k: jax.make_array_from_process_local_data(batch_sharding, v)
               for k, v in local.items()}
      state, step_metrics = p_train_step(state, batch)
      train_metrics = (step_metrics if train_metrics is None
                       else train_metrics.merge(step_metrics))
      done = step + 1
      if done == start_step + 1:
        logging.info('first step done %.1f s after start (init + compile)',
                     time.monotonic() - t0)
      if done % config.train.log_every_steps == 0 or done == schedule.num_steps:
        computed = train_metrics.compute()
        train_metrics = None
        if not np.isfinite(float(computed['loss'])):
          manager.wait_until_finished()
          raise FloatingPointError(
              f'non-finite training loss at step {done}; the last good checkpoint '
              f'(step {manager.latest_step()}) in {manager.directory} is intact')
        progress(done, computed)
      if done % config.train.checkpoint_every_steps == 0 or preemption.requested:
        checkpointing.save(manager, done, state, force=True)
      if preemption.requested:
        manager.wait_until_finished()
        logging.warning('stopped at step %d after SIGTERM; rerun to resume', done)
        return {}
      epoch_end = done % schedule.steps_per_epoch == 0
      epoch = done // schedule.steps_per_epoch
      if (val_source is not None and epoch_end and epoch % config.train.eval_every_epochs == 0
          and epoch > config.train.warm_epochs):
        results, _ = evaluator.evaluate(state, val_source)
        writer.write_scalars(done, {f'eval_{k}': v for k, v in results.items()
                                    if k in ('iou', 'niou', 'pd', 'fa')})
        logging.info('validation @ epoch %d: %s', epoch, metrics_lib.format_results(results))
        if best is None or results['iou'] > best['iou']:
          best = {**results, 'step': done, 'epoch': epoch}
          checkpointing.save(best_manager, done, state, force=True)
          if is_chief:
            _write_json(best_path, best)
  if schedule.num_steps > start_step:
    checkpointing.save(manager, schedule.num_steps, state, force=True)
  manager.wait_until_finished()
  best_manager.wait_until_finished()
  writer.flush()

  final_step = int(state.step)
  results, per_image = evaluator.evaluate(state, test_source)
  results.update(split=config.eval.split, step=final_step, checkpoint='last',
                 protocol='basicirstd', dataset=config.data.name, num_parameters=num_params)
  table_rows = [(config.eval.split, 'last', results)]
  if best is not None:
    best_state = checkpointing.restore_latest(best_manager, checkpointing.abstract_like(state))
    best_results, _ = evaluator.evaluate(best_state, test_source)
    best_results.update(step=best['step'], checkpoint='val-best')
    results['val_best'] = {**best_results, 'validation_iou': best['iou']}
    table_rows.insert(0, ('validation', 'val-best', best))
    table_rows.append((config.eval.split, 'val-best', best_results))
  writer.write_scalars(final_step, {f'test_{k}': results[k] for k in ('iou', 'niou', 'pd', 'fa')})
  writer.close()
  if is_chief:
    _write_json(os.path.join(workdir, 'eval_results.json'), results)
    with open(os.path.join(workdir, 'eval_per_image.json'), 'w') as f:
      json.dump(per_image, f)
  table = _results_table(table_rows)
  logging.info('Results (%s protocol, native resolution):\n%s', results['protocol'], table)
  print(f"\nResults on {config.data.name} ({results['protocol']} protocol, native "
        f"resolution, Fa x 1e-6):\n{table}\n", flush=True)
  return results
