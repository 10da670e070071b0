"""The training loop: `train_and_evaluate(config, workdir)`.

One `jax.jit`-compiled train step with explicit shardings over a ('data',) mesh of all
devices of all processes: the global batch is split on 'data', parameters and optimizer
state are replicated. With one CPU device this is the degenerate mesh; on a pod it is
the same code. BatchNorm statistics and every batch mean are taken over the global batch
(XLA inserts the collectives), so results do not depend on the device count.
"""

import contextlib
import functools
import json
import os
import signal
import time
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from clu import metrics as clu_metrics
from jax.sharding import NamedSharding, PartitionSpec as P

from irstd_jax import checkpointing
from irstd_jax import config_validation
from irstd_jax import datasets
from irstd_jax import eval_outputs
from irstd_jax import evaluate as evaluate_lib
from irstd_jax import history as history_lib
from irstd_jax import input_pipeline
from irstd_jax import interrupts
from irstd_jax import losses
from irstd_jax import metrics as metrics_lib
from irstd_jax import reporting
from irstd_jax import train_state as train_state_lib


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output('loss')
  iou: clu_metrics.Average.from_output('iou')
  grad_norm: clu_metrics.Average.from_output('grad_norm')  # global L2 norm, before Adagrad
  # Fraction of training pixels predicted positive: a collapse drives it towards 1.
  positive_fraction: clu_metrics.Average.from_output('positive_fraction')
  nonfinite: clu_metrics.Average.from_output('nonfinite')  # fraction of skipped steps


def params_at_step(params, step, *, warmup_steps: int, fuse_at_switch: str = 'as_initialised'):
  """The parameters the train step at 0-based `step` computes with: `params`, except that
  with fuse_at_switch = 'd0' the step where deep supervision starts (`warmup_steps`; 0
  without warm-up) resets the fused head to pass the d0 head through
  (train_state.fuse_passing_d0). Warm-up never changes the fuse (it gets no gradient, and
  Adagrad moves nothing on a zero gradient), so this equals initialising it so, and a
  warm-up is shared by either setting. 'as_initialised' (the reference) compiles nothing.
  """
  if fuse_at_switch == 'as_initialised':
    return params
  if fuse_at_switch != 'd0':
    raise ValueError(f'unknown fuse_at_switch {fuse_at_switch!r}')
  return jax.lax.cond(step == warmup_steps, train_state_lib.fuse_passing_d0,
                      lambda p: p, params)


def train_step(state: train_state_lib.TrainState, batch: dict, *, graphdef, tx,
               loss_fn: Callable, warmup_steps: int, mean: float, std: float,
               accumulator_at_switch: float = 0.0, fuse_at_switch: str = 'as_initialised'):
  """One optimizer step on a global batch.

  Args:
    state: the TrainState.
    batch: {'image': uint8 [B, S, S, 1], 'mask': uint8 [B, S, S, 1]}.
    accumulator_at_switch: config.optim's; > 0: on the first step after warm-up, Adagrad
      accumulators the warm-up never touched start at this value
      (train_state.seed_unused_accumulators). 0 (the reference) compiles no such branch.
    fuse_at_switch: config.train's: the fused head when deep supervision starts
      (`params_at_step`).

  Returns:
    (new state, TrainMetrics for this batch)
  """
  images = input_pipeline.normalize(batch['image'], mean, std)
  labels = batch['mask'].astype(jnp.float32)
  warmup = input_pipeline.is_warmup_step(state.step, warmup_steps)

  def compute_loss(params):
    fused, sides, new_model_state = train_state_lib.apply_model(
        graphdef, params, state.model_state, images, train=True)
    loss = loss_fn(fused, sides, labels, warmup=warmup)
    # Before warm-up ends the reference trains and predicts with the d0 head only.
    prediction = jnp.where(warmup, sides[0], fused)
    return loss, (new_model_state, prediction)

  params = params_at_step(state.params, state.step, warmup_steps=warmup_steps,
                          fuse_at_switch=fuse_at_switch)
  (loss, (new_model_state, prediction)), grads = jax.value_and_grad(
      compute_loss, has_aux=True)(params)
  opt_state = state.opt_state
  if accumulator_at_switch and warmup_steps:
    opt_state = jax.lax.cond(
        state.step == warmup_steps,
        lambda s: train_state_lib.seed_unused_accumulators(s, accumulator_at_switch),
        lambda s: s, opt_state)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  pred = prediction > 0
  inter = jnp.sum(pred & (labels > 0))
  union = jnp.sum(pred | (labels > 0))
  iou = inter / jnp.maximum(union, 1)
  # A non-finite loss leaves the state as it was (the step counter aside), so no NaN can
  # reach the parameters or a checkpoint; the host stops the run at its next report.
  finite = jnp.isfinite(loss)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                            model_state=keep(new_model_state, state.model_state),
                            opt_state=keep(opt_state, state.opt_state))
  return new_state, TrainMetrics.single_from_model_output(
      loss=loss, iou=iou, grad_norm=optax.tree.norm(grads),
      positive_fraction=jnp.mean(pred.astype(jnp.float32)),
      nonfinite=1.0 - finite.astype(jnp.float32))


def make_train_step(config: ml_collections.ConfigDict, graphdef, tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh, state_shardings, *, warmup_steps: int,
                    donate: bool = True) -> Callable:
  """`train_step` jitted with explicit shardings: state as `state_shardings`, the batch
  split over 'data', metrics replicated.

  The one place the step is compiled, for training, benchmarks and tests alike.

  Args:
    config: the run's config (`loss` and `data.mean`/`data.std` are read).
    graphdef: the model's graph definition (create_train_state).
    tx: the optimizer the state was made with.
    mesh: the ('data',) mesh.
    state_shardings: the TrainState's shardings (create_train_state).
    warmup_steps: steps before the deep-supervision loss starts (TrainSchedule.warmup_steps;
      0: from the start).
    donate: donate the input state's buffers (the training loop never reuses them).

  Returns:
    step(state, batch) -> (new state, TrainMetrics); `batch` as in `train_step`.
  """
  loss_fn = functools.partial(losses.mshnet_loss, **config.loss.to_dict())
  return jax.jit(
      functools.partial(train_step, graphdef=graphdef, tx=tx, loss_fn=loss_fn,
                        warmup_steps=warmup_steps, mean=config.data.mean, std=config.data.std,
                        accumulator_at_switch=config.optim.get('accumulator_at_switch', 0.0),
                        fuse_at_switch=config.train.get('fuse_at_switch', 'as_initialised')),
      in_shardings=(state_shardings, NamedSharding(mesh, P('data'))),
      out_shardings=(state_shardings, NamedSharding(mesh, P())),
      donate_argnums=0 if donate else ())


def _results_table(rows: list[tuple[str, str, dict]]) -> str:
  header = (f"{'split':<11}{'checkpoint':<12}{'step':>7}{'IoU %':>8}{'nIoU %':>8}"
            f"{'Pd %':>8}{'Fa 1e-6':>11}{'images':>8}{'targets':>8}")
  lines = [header, '-' * len(header)]
  for split, which, r in rows:
    lines.append(
        f"{split:<11}{which:<12}{r['step']:>7}{100 * r['iou']:>8.2f}{100 * r['niou']:>8.2f}"
        f"{100 * r['pd']:>8.2f}{1e6 * r['fa']:>11.2f}{r['num_images']:>8}{r['num_targets']:>8}")
  return '\n'.join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at_step: int | None = None) -> dict | None:
  """Trains (resuming from `workdir` if it holds checkpoints) and evaluates.

  Every completed epoch is recorded in workdir/history.json (irstd_jax/history.py).
  The first Ctrl-C or SIGTERM saves a checkpoint at the current step (or, during the final
  evaluation, stops it: the last checkpoint is already saved) and raises
  interrupts.Interrupted; a rerun resumes. A second one aborts at once.

  Args:
    config: the run's config.
    workdir: the run directory.
    stop_at_step: train only up to this step, save a checkpoint there and return None
      without evaluating: what a later run with the same config resumes from (the study
      runner's shared warm-up). None: the whole run.

  Returns:
    The test-split results of the last step (also written to
    workdir/eval_<test split>_basicirstd_last/eval_results.json, see eval_outputs.py), or
    None when stopped at `stop_at_step`.

  Raises:
    errors.UserError: the config cannot run (nothing was created), or the data is bad.
    interrupts.Interrupted: after the checkpoint of an interrupted run was saved.
  """
  config_validation.validate_config(config, mode='train', workdir=workdir)
  logging.info('config:\n%s', config)
  with interrupts.StopRequests() as stop, contextlib.ExitStack() as cleanup:
    return _train_and_evaluate(config, workdir, stop, stop_at_step, cleanup)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        stop: interrupts.StopRequests, stop_at_step: int | None,
                        cleanup: contextlib.ExitStack) -> dict | None:
  mesh = train_state_lib.make_mesh()
  global_batch = config.train.batch_size
  is_chief = jax.process_index() == 0

  train_source = datasets.load_split(config.data, 'train', seed=config.seed)
  val_source = (datasets.load_split(config.data, 'validation', seed=config.seed)
                if config.train.eval_every_epochs else None)
  test_source = datasets.load_split(config.data, config.eval.split, seed=config.seed)
  schedule = input_pipeline.TrainSchedule(len(train_source), global_batch,
                                          config.train.num_epochs, config.train.warm_epochs)
  os.makedirs(workdir, exist_ok=True)  # only once the data is known to be there
  logging.info('train: %d images, %d steps/epoch, %d steps; %s: %d images; devices: %d',
               len(train_source), schedule.steps_per_epoch, schedule.num_steps,
               config.eval.split, len(test_source), jax.device_count())

  tx = train_state_lib.make_optimizer(config.optim, schedule.num_steps)
  t0 = time.monotonic()
  graphdef, state, shardings = train_state_lib.create_train_state(config, mesh, tx)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('MSHNet: %s parameters', f'{num_params:,}')

  manager = checkpointing.create_manager(workdir, max_to_keep=config.train.max_to_keep)
  best_manager = checkpointing.create_manager(workdir, max_to_keep=1,
                                              name='checkpoints_best')
  restored = checkpointing.restore_latest(manager, checkpointing.abstract_like(state))
  if restored is not None:
    state = restored
  start_step = int(state.step)
  end_step = schedule.num_steps if stop_at_step is None else min(stop_at_step,
                                                                 schedule.num_steps)
  history = history_lib.History(workdir, TrainMetrics)
  epoch_metrics = history.resume(start_step)

  p_train_step = make_train_step(
      config, graphdef, tx, mesh, shardings,
      warmup_steps=schedule.warmup_steps)
  evaluator = evaluate_lib.Evaluator(config, graphdef, mesh, shardings)

  writer = cleanup.enter_context(reporting.create_default_writer(workdir))
  if start_step == 0:
    writer.write_hparams(config.to_dict())
  progress = reporting.ProgressReport(
      num_steps=schedule.num_steps, steps_per_epoch=schedule.steps_per_epoch,
      global_batch_size=global_batch, every_steps=config.train.log_every_steps,
      writer=writer)
  best_path = os.path.join(workdir, 'val_best.json')
  best = json.load(open(best_path)) if os.path.exists(best_path) else None
  if best is not None and best['step'] not in best_manager.all_steps():
    logging.warning('%s names step %d, whose checkpoint is not in %s; validation-best '
                    'selection starts again', best_path, best['step'], best_manager.directory)
    best = None

  dataset = input_pipeline.train_dataset(
      train_source, schedule=schedule, seed=config.seed,
      cfg=input_pipeline.AugmentConfig.from_config(config.data),
      process_index=jax.process_index(), process_count=jax.process_count())
  batches = input_pipeline.train_iterator(dataset, start_step=start_step,
                                          worker_count=config.data.worker_count)
  batch_sharding = NamedSharding(mesh, P('data'))
  train_metrics = None
  multi_process = jax.process_count() > 1

  def finish_epoch(done: int, epoch_metrics) -> None:
    """Validation (when due), the validation-best checkpoint and the epoch's history entry."""
    nonlocal best
    epoch = done // schedule.steps_per_epoch
    results = None
    if (val_source is not None
        and schedule.validates_after(done, config.train.eval_every_epochs)):
      results, _ = evaluator.evaluate(state, val_source)
      writer.write_scalars(done, {f'eval_{k}': v for k, v in results.items()
                                  if k in ('iou', 'niou', 'pd', 'fa', 'positive_fraction')})
      logging.info('validation @ epoch %d: %s', epoch, metrics_lib.format_results(results))
      if best is None or results['iou'] > best['iou']:
        best = {**results, 'step': done, 'epoch': epoch}
        checkpointing.save(best_manager, done, state, force=True)
        # val_best.json only names a checkpoint that is on disk: a run killed in between
        # finds no record and validates that epoch again when it resumes.
        best_manager.wait_until_finished()
        if is_chief:
          reporting.write_json(best_path, best)
    history.end_epoch(epoch=epoch, step=done, warmup=schedule.ends_warmup_epoch(done),
                      epoch_metrics=epoch_metrics, validation=results)

  # Stopped after an epoch's last checkpoint but before its end was recorded: finish it.
  if (start_step and start_step % schedule.steps_per_epoch == 0 and epoch_metrics is not None
      and not any(e['step'] == start_step for e in history.epochs)):
    finish_epoch(start_step, epoch_metrics)
  epoch_metrics = None if start_step % schedule.steps_per_epoch == 0 else epoch_metrics

  for step in range(start_step, end_step):
    local = next(batches)
    batch = {k: jax.make_array_from_process_local_data(batch_sharding, v)
             for k, v in local.items()}
    state, step_metrics = p_train_step(state, batch)
    train_metrics = (step_metrics if train_metrics is None
                     else train_metrics.merge(step_metrics))
    epoch_metrics = (step_metrics if epoch_metrics is None
                     else epoch_metrics.merge(step_metrics))
    done = step + 1
    if done == start_step + 1:
      logging.info('first step done %.1f s after start (init + compile)',
                   time.monotonic() - t0)
    if done % config.train.log_every_steps == 0 or done == schedule.num_steps:
      computed = train_metrics.compute()
      train_metrics = None
      if computed.pop('nonfinite') > 0:
        manager.wait_until_finished()
        raise FloatingPointError(
            f'non-finite training loss before step {done}; stopping. Parameters were '
            f'never updated with it, and the last checkpoint (step '
            f'{manager.latest_step()}) in {manager.directory} is intact.')
      progress(done, computed)
    # Every process must agree on a preemption save: with several processes that is
    # Orbax's job (JAX's preemption sync service); alone, our SIGINT/SIGTERM flag decides.
    preempted = (manager.reached_preemption(done) if multi_process else stop.requested)
    if done % config.train.checkpoint_every_steps == 0 or preempted or done == end_step:
      history.checkpoint(done, epoch_metrics)  # before the checkpoint that needs it
      checkpointing.save(manager, done, state, force=True)
    if preempted:
      manager.wait_until_finished()
      best_manager.wait_until_finished()
      signum = stop.signum or signal.SIGTERM
      raise interrupts.Interrupted(
          f'{interrupts.signal_name(signum)} at step {done}: checkpoint saved in '
          f'{manager.directory}; rerun the same command to resume', signum=signum,
          step=done)
    if done % schedule.steps_per_epoch == 0:
      finish_epoch(done, epoch_metrics)
      epoch_metrics = None
  if stop_at_step is not None and int(state.step) == stop_at_step:
    manager.wait_until_finished()
    best_manager.wait_until_finished()
    logging.info('stopped at step %d as asked; a run with this config resumes from here',
                 stop_at_step)
    return None
  if manager.latest_step() != int(state.step):  # the last step may not be a save step
    checkpointing.save(manager, int(state.step), state, force=True)
  manager.wait_until_finished()
  best_manager.wait_until_finished()
  writer.flush()

  final_step = int(state.step)
  try:
    return _final_evaluation(config, workdir, evaluator, state, test_source, best,
                             best_manager, writer, num_params, stop)
  except interrupts.Interrupted as e:
    raise interrupts.Interrupted(
        f'{interrupts.signal_name(e.signum)} during the final evaluation: the checkpoint at '
        f'step {final_step} is saved in {manager.directory}; rerun the same command to '
        'evaluate it', signum=e.signum, step=final_step) from None


def _final_evaluation(config, workdir, evaluator, state, test_source, best, best_manager,
                      writer, num_params, stop) -> dict:
  """Scores the last and the validation-best checkpoints on the test split and writes
  their evaluation folders (eval_outputs.py), as `--mode=eval` would."""
  is_chief = jax.process_index() == 0
  final_step = int(state.step)
  split = config.eval.split
  results, per_image, curve = evaluate_lib.evaluate_checkpoint(
      config, evaluator, state, test_source, split=split, checkpoint='last', stop=stop)
  table_rows = [(split, 'last', results)]
  best_outputs = None
  if best is not None:
    if best['step'] == final_step:  # the last epoch validated best: the same weights
      best_outputs = evaluate_lib.relabel((results, per_image, curve), 'best')
    else:
      best_state = checkpointing.restore_latest(best_manager,
                                                checkpointing.abstract_like(state))
      best_outputs = evaluate_lib.evaluate_checkpoint(
          config, evaluator, best_state, test_source, split=split, checkpoint='best',
          stop=stop)
    best_results = best_outputs[0]
    results['val_best'] = {**best_results, 'checkpoint': 'val-best',
                           'validation_iou': best['iou']}
    table_rows.insert(0, ('validation', 'val-best', best))
    table_rows.append((split, 'val-best', best_results))
  results['num_parameters'] = num_params
  writer.write_scalars(final_step, {f'test_{k}': results[k] for k in ('iou', 'niou', 'pd', 'fa')})
  writer.close()
  if is_chief:
    if best_outputs is not None:
      eval_outputs.write(eval_outputs.folder(workdir, split, 'basicirstd', 'best'),
                         *best_outputs)
    # Last: the last checkpoint's record marks the run evaluated (study.py reads it).
    results = eval_outputs.write(eval_outputs.folder(workdir, split, 'basicirstd', 'last'),
                                 results, per_image, curve)
    # Printed once, to stdout (absl's log goes to stderr: logging it too showed it twice).
    print(f"\nResults on {config.data.name} ({results['protocol']} protocol, native "
          f"resolution, Fa x 1e-6):\n{_results_table(table_rows)}\n"
          f"(-> {eval_outputs.folder(workdir, split, 'basicirstd', 'last')}/)\n", flush=True)
  return results
