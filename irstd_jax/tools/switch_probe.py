"""The switch, step by step: what the first steps after warm-up do to each output head.

    python -m irstd_jax.tools.switch_probe --config=configs/study/nudt_stability.py \
        --config.budget.data.manual_dir=../shared/data/NUDT-SIRST \
        --workdir=runs/study_nudt --cells=l1_cbam,2 --cells=sls_cbam,2 --steps=25 \
        --out=docs/reproduction/nudt_stability/switch_probe.json

writes every step of every probed cell to --out (a cell probed before keeps its entry unless
probed again) and its tables to the .md beside it.

Why: a study cell records epochs, but the post-warm-up collapse is decided within the
first steps after the switch to the scale loss and deep supervision (docs/reproduction.md),
when the fused head and the three side heads, which warm-up never trained, start to learn.
This replays a cell's first `--steps` train steps from its seed's warm-up checkpoint (the
state every configuration of that seed forks from), with the cell's config, batches and
compiled train step (train.make_train_step), so step k here is step k of the cell. Per
step, on that step's batch and before its update:
  - positive: the fraction of pixels each output predicts positive (fused, head0..head3);
  - mean_logit: each output's mean logit;
  - iou: each output's IoU (logit > 0) with the label, max-pooled to the head's size as the
    loss pools it;
  - target_probability: each output's mean sigmoid over the target pixels (with none there,
    soft IoU's gradient only asks for more positives everywhere);
and of the step itself: the training metrics (loss, iou, grad_norm, positive_fraction, as
the cell logs them) and `update`, the mean absolute parameter change of each head
(head0..head3, fuse) and of the rest of the network (body). Nothing is written into the
study's run directories: the warm-up is only read.
"""
from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from irstd_jax import errors
from irstd_jax import study as study_lib

OUTPUTS = ('fused', 'head0', 'head1', 'head2', 'head3')
# The output heads of models.MSHNet; every other parameter is the body.
HEADS = ('head0', 'head1', 'head2', 'head3', 'fuse')
# The steps after the switch that `markdown` shows (those a replay has).
TABLE_STEPS = (1, 2, 3, 4, 6, 10, 25, 50, 100)


def _six_digits(x) -> float:
  """A float with 6 significant digits: what the tables need, a third of the JSON's size."""
  return float(f'{float(x):.6g}')


def _group(path) -> str:
  top = path[0].key
  return top if top in HEADS else 'body'


def make_output_stats(config: ml_collections.ConfigDict, graphdef, warmup_steps: int):
  """jitted (params, model_state, uint8 images [B, H, W, 1], uint8 labels [B, H, W, 1],
  step) -> {'positive' | 'mean_logit' | 'iou' | 'target_probability': {output: ()}} (as in
  the module docstring): the network as the train step at 0-based `step` runs it
  (train.params_at_step's parameters; train mode: BatchNorm on the batch's statistics)."""
  from irstd_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from irstd_jax import losses  # pylint: disable=g-import-not-at-top
  from irstd_jax import train  # pylint: disable=g-import-not-at-top
  from irstd_jax import train_state as train_state_lib  # pylint: disable=g-import-not-at-top
  fuse_at_switch = config.train.get('fuse_at_switch', 'as_initialised')

  @jax.jit
  def stats(params, model_state, images, labels, step):
    params = train.params_at_step(params, step, warmup_steps=warmup_steps,
                                  fuse_at_switch=fuse_at_switch)
    images = input_pipeline.normalize(images, config.data.mean, config.data.std)
    fused, sides, _ = train_state_lib.apply_model(graphdef, params, model_state, images,
                                                  train=True)
    maps = dict(zip(OUTPUTS, [fused, *sides]))
    out = {'positive': {}, 'mean_logit': {}, 'iou': {}, 'target_probability': {}}
    for k, v in maps.items():
      # Each head against the label max-pooled to its size, as the loss compares them.
      target = losses.max_pool_labels(labels, losses.halvings(labels.shape[1], v.shape[1])) > 0
      pred = v > 0
      out['positive'][k] = jnp.mean(pred.astype(jnp.float32))
      out['mean_logit'][k] = jnp.mean(v)
      out['iou'][k] = jnp.sum(pred & target) / jnp.maximum(jnp.sum(pred | target), 1)
      out['target_probability'][k] = (jnp.sum(jax.nn.sigmoid(v) * target)
                                      / jnp.maximum(jnp.sum(target), 1))
    return out
  return stats


@jax.jit
def update_sizes(before, after) -> dict:
  """Mean |after - before| over each group's parameters: {head0..head3, fuse, body: ()}."""
  sums, counts = {}, {}
  for (path, b), a in zip(jax.tree_util.tree_flatten_with_path(before)[0],
                          jax.tree.leaves(after)):
    group = _group(path)
    sums[group] = sums.get(group, 0.0) + jnp.sum(jnp.abs(a - b))
    counts[group] = counts.get(group, 0) + b.size
  return {g: sums[g] / counts[g] for g in sums}


def replay_switch(config: ml_collections.ConfigDict, warm_dir: str, steps: int, *,
                  log=print):
  """Replays the first `steps` train steps after warm-up from the warm-up in `warm_dir`.

  Args:
    config: the cell's run config.
    warm_dir: a run directory whose newest checkpoint is at the end of warm-up.
    steps: how many steps to replay (at most the steps the run has after warm-up).

  Returns:
    (entries, state): one dict per step (step: the 1-based step after the switch, and
    global_step, train, positive, mean_logit, iou, target_probability, update as in the
    module docstring), and the
    train state after the last step, equal to the cell's state at that step.

  Raises:
    errors.UserError: no warm-up checkpoint in `warm_dir`, or not at the switch.
  """
  from irstd_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from irstd_jax import datasets  # pylint: disable=g-import-not-at-top
  from irstd_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from irstd_jax import train  # pylint: disable=g-import-not-at-top
  from irstd_jax import train_state as train_state_lib  # pylint: disable=g-import-not-at-top

  source = datasets.load_split(config.data, 'train', seed=config.seed)
  schedule = input_pipeline.TrainSchedule(len(source), config.train.batch_size,
                                          config.train.num_epochs, config.train.warm_epochs)
  switch = schedule.warmup_steps
  if not switch:
    raise errors.UserError('this config has no warm-up, so no switch to replay',
                           'train.warm_epochs', 'probe a config with warm_epochs > 0')
  if not 0 < steps <= schedule.num_steps - switch:
    raise errors.UserError(f'--steps={steps}', '--steps',
                           f'pass 1 .. {schedule.num_steps - switch} (the steps after warm-up)')
  run = checkpointing.restore_run(config, warm_dir)
  if run.step != switch:
    raise errors.UserError(
        f'the newest checkpoint in {warm_dir} is at step {run.step}, not at the end of '
        f'warm-up (step {switch})', warm_dir,
        'finish the warm-up first (rerun the study), or pass the workdir it belongs to')
  tx = train_state_lib.make_optimizer(config.optim, schedule.num_steps)
  step_fn = train.make_train_step(config, run.graphdef, tx, run.mesh, run.shardings,
                                  warmup_steps=switch, donate=False)
  output_stats = make_output_stats(config, run.graphdef, switch)
  dataset = input_pipeline.train_dataset(
      source, schedule=schedule, seed=config.seed,
      cfg=input_pipeline.AugmentConfig.from_config(config.data),
      process_index=jax.process_index(), process_count=jax.process_count())
  batches = input_pipeline.train_iterator(dataset, start_step=switch)
  batch_sharding = NamedSharding(run.mesh, P('data'))

  state, entries = run.state, []
  for k in range(1, steps + 1):
    batch = {key: jax.make_array_from_process_local_data(batch_sharding, v)
             for key, v in next(batches).items()}
    outputs = output_stats(state.params, state.model_state, batch['image'], batch['mask'],
                           state.step)
    new_state, metrics = step_fn(state, batch)
    update = update_sizes(state.params, new_state.params)
    state = new_state
    entry = {'step': k, 'global_step': switch + k,
             **jax.tree.map(_six_digits, {'train': metrics.compute(), **outputs,
                                          'update': update})}
    entries.append(entry)
    if k == 1 or k % 5 == 0 or k == steps:
      log(f'  step {k}/{steps}: loss {entry["train"]["loss"]:.4f}, positive % '
          + ', '.join(f'{o} {100 * entry["positive"][o]:.2f}' for o in OUTPUTS))
  return entries, state


def probe_cell(study: ml_collections.ConfigDict, name: str, seed: int, *, workdir: str,
               steps: int, log=print) -> dict:
  """`replay_switch` for study cell (name, seed), from its shared warm-up in `workdir`."""
  config = study_lib.cell_config(study, name, seed)
  study_lib.check_conv_backend(config)
  warm = study_lib.warmup_name(study, name, seed)
  warm_dir = os.path.join(workdir, 'warmup', warm)
  if not os.path.exists(os.path.join(warm_dir, study_lib.WARMUP_CONFIG)):
    raise errors.UserError(f'no warm-up in {warm_dir}', '--workdir',
                           f'run the study there first (cell {name},{seed} trains it)')
  study_lib.check_warmup_config(config, warm_dir, log)
  log(f'[{name} seed {seed}] replaying {steps} steps from {warm_dir}')
  entries, _ = replay_switch(config, warm_dir, steps, log=log)
  return {'configuration': name, 'seed': seed,
          'label': study.configurations[name].get('label', name), 'warmup': warm,
          'steps': entries, 'environment': study_lib.environment(config.model.conv_backend)}


def markdown(probes: list[dict], table_steps=TABLE_STEPS) -> str:
  """One table per probed cell: the chosen steps' loss, each output's % of positive pixels,
  and the mean |update| of the untrained heads against the body's."""
  out = []
  for probe in probes:
    out += [f"### {probe['configuration']} seed {probe['seed']} (warm-up {probe['warmup']})",
            '', '| step after the switch | loss | % positive: fused | head0 | head1 | head2 '
            '| head3 | fused: IoU % | fused: mean probability on targets '
            '| mean abs update: fuse | head1-3 | head0 | body |',
            '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for e in probe['steps']:
      if e['step'] not in table_steps:
        continue
      u = e['update']
      side = np.mean([u['head1'], u['head2'], u['head3']])
      out.append(f"| {e['step']} | {e['train']['loss']:.4f} | "
                 + ' | '.join(f"{100 * e['positive'][o]:.2f}" for o in OUTPUTS)
                 + f" | {100 * e['iou']['fused']:.2f} | {e['target_probability']['fused']:.3f}"
                 + f" | {u['fuse']:.4f} | {side:.4f} | {u['head0']:.4f} | {u['body']:.5f} |")
    out.append('')
  return '\n'.join(out)


def merge(kept: list[dict], new: list[dict]) -> list[dict]:
  """`kept` with `new` added, a new probe replacing a kept one of the same cell; in the
  study's order (configuration, then seed)."""
  by_cell = {(p['configuration'], p['seed']): p for p in kept}
  by_cell.update({(p['configuration'], p['seed']): p for p in new})
  return [by_cell[k] for k in sorted(by_cell, key=lambda k: (k[1], k[0]))]


def write_markdown(path: str, probes: list[dict]) -> None:
  """`markdown(probes)` under a title, written through a temporary file."""
  from irstd_jax import reporting  # pylint: disable=g-import-not-at-top
  reporting.write_text(path, (
      '# The switch, step by step (irstd_jax/tools/switch_probe.py)\n\n'
      'Each table: one study cell replayed from its seed\'s warm-up checkpoint; step k is '
      'the cell\'s k-th step after warm-up. Per step, on its batch before its update: '
      'the % of pixels each output predicts positive, the fused map\'s IoU with the '
      'label and its mean probability on the target pixels; and the step\'s mean '
      'absolute parameter update per head and for the rest of the network.\n\n'
      + markdown(probes)))


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from irstd_jax import reporting  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  reporting.hide_library_chatter()
  try:
    study = f.config
    cells = [study_lib.parse_cell(c) for c in f.cells]
    for name, seed in cells:
      study_lib.cell_config(study, name, seed)  # every cell's config, before any work
    if f.out and not os.path.isdir(os.path.dirname(os.path.abspath(f.out))):
      raise errors.UserError(f'no folder for {f.out}', '--out', 'create the folder first')
    kept = []
    if f.out and os.path.exists(f.out):  # the file grows: other cells' probes stay
      with open(f.out) as fh:
        kept = json.load(fh)['probes']
    probes = []
    for name, seed in cells:
      probes.append(probe_cell(study, name, seed, workdir=f.workdir, steps=f.steps,
                               log=lambda line: print(line, flush=True)))
      if f.out:  # after every cell, so an interrupted probe keeps the finished ones
        merged = merge(kept, probes)
        reporting.write_json(f.out, {'probes': merged}, indent=None)  # ~0.5 MB, not 1.3
        write_markdown(os.path.splitext(f.out)[0] + '.md', merged)
    print(markdown(probes))
  except errors.UserError as e:
    print(errors.format_error(e), file=sys.stderr)
    sys.exit(errors.EXIT_USER_ERROR)


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Study config (configs/study/*.py).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, "The study's --workdir (its warm-ups are read).",
                      required=True)
  flags.DEFINE_multi_string('cells', None, "'<configuration>,<seed>'; repeat the flag.",
                            required=True)
  flags.DEFINE_integer('steps', 25, 'Steps to replay after the switch.')
  flags.DEFINE_string('out', None, 'JSON file for every step of every probed cell.')
  flags.mark_flag_as_required('config')


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
