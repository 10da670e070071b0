"""Orbax checkpoints of the full train state, in `workdir/checkpoints`.

The input pipeline is a pure function of (seed, step) (see input_pipeline.py), so the
step in the state is the whole of its position: restoring the state resumes the data
stream exactly.

Every restore goes through `restore_latest` (newest readable checkpoint, damaged ones
skipped): training resumes with it on its own manager, and everything that reads a
finished run (eval, predict, export, panels, the model summary) calls `restore_run`.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from irstd_jax import errors
from irstd_jax import train_state as train_state_lib

# --checkpoint names -> checkpoint folders of a workdir: the latest steps, and the one
# checkpoint that scored best on the validation split.
CHECKPOINTS = {'last': 'checkpoints', 'best': 'checkpoints_best'}


def checkpoint_dir(workdir: str, name: str = 'checkpoints') -> str:
  return os.path.join(os.path.abspath(workdir), name)


def create_manager(workdir: str, *, max_to_keep: int = 3, name: str = 'checkpoints',
                   save_interval_steps: int = 1) -> ocp.CheckpointManager:
  """A manager with async saves; every process must call save() (Orbax coordinates)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      save_interval_steps=save_interval_steps,
      enable_async_checkpointing=True,
      create=True,
  )
  return ocp.CheckpointManager(checkpoint_dir(workdir, name), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, *, force: bool = False) -> bool:
  """Starts an async save of `state` at `step`; returns whether a save was started."""
  return manager.save(step, args=ocp.args.StandardSave(state), force=force)


class CheckpointMismatchError(errors.UserError, RuntimeError):
  """Checkpoints exist but none fits the state the config describes."""


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any) -> Any | None:
  """Restores the newest readable checkpoint onto `abstract_state`'s shapes and shardings.

  A checkpoint that fails to restore (a crash mid-write on a filesystem without atomic
  renames, a damaged file) is skipped with a warning and the next older one is tried,
  so one bad write never costs the whole run. Once an older one restores, the unreadable
  newer ones are moved aside to `<checkpoints>_unreadable/` (kept for inspection), so
  training can save those steps again. Nothing is moved when no checkpoint restores
  (e.g. the config changed the model): that is an error for the user to look at.

  Returns:
    The restored state, or None when the directory holds no checkpoint at all.

  Raises:
    CheckpointMismatchError: checkpoints exist but none of them can be restored.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return None
  errors = []
  for step in steps:
    try:
      state = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('checkpoint at step %d in %s cannot be restored (%s: %s); trying an '
                      'older one', step, manager.directory, type(e).__name__, e)
      errors.append(f'step {step}: {type(e).__name__}: {e}')
      continue
    logging.info('Restored checkpoint at step %d from %s', step, manager.directory)
    if errors and jax.process_index() == 0:
      _quarantine(manager, [s for s in steps if s > step])
    if errors:
      manager.reload()
    return state
  raise CheckpointMismatchError(
      f'no checkpoint in {manager.directory} could be restored onto the state this config '
      'describes. Pass the config and overrides the run was trained with; checkpoints '
      'written before irstd_jax gave the optimizer a learning-rate schedule have another '
      'optimizer state and do not restore. Per step:\n'
      + '\n'.join(errors))


def _quarantine(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  directory = str(manager.directory)
  aside = directory.rstrip('/') + '_unreadable'
  os.makedirs(aside, exist_ok=True)
  for step in steps:
    source = os.path.join(directory, str(step))
    if os.path.isdir(source):
      target = os.path.join(aside, str(step))
      shutil.rmtree(target, ignore_errors=True)
      shutil.move(source, target)
      logging.warning('moved unreadable checkpoint %s to %s', source, target)


def abstract_like(state: Any) -> Any:
  """ShapeDtypeStructs (with shardings) describing `state`, for restoring onto it."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A finished (or stopped) run's checkpoint, restored onto the config's train state."""
  graphdef: Any  # the model's nnx graph definition
  state: train_state_lib.TrainState
  shardings: Any  # the state's shardings over `mesh`
  mesh: jax.sharding.Mesh
  step: int


def restore_run(config, workdir: str, checkpoint: str = 'last', *,
                mesh: jax.sharding.Mesh | None = None) -> RestoredRun:
  """Builds the config's state structure and restores `workdir`'s `checkpoint`.

  The one way to read a run's weights (eval, predict, export, panels, summary). Only the
  structure is built (`abstract_train_state`): the checkpoint supplies every value, so
  nothing is initialised, and the optimizer needs no run length.

  Args:
    config: the config (and overrides) the run was trained with.
    workdir: the run directory.
    checkpoint: 'last' (newest readable step) or 'best' (validation-best).
    mesh: default: every device (train_state.make_mesh()).

  Raises:
    errors.UserError: the workdir holds no such checkpoint (nothing is created).
    CheckpointMismatchError: checkpoints exist but none fits the config's state.
  """
  if checkpoint not in CHECKPOINTS:
    raise ValueError(f'unknown checkpoint {checkpoint!r}; expected one of {list(CHECKPOINTS)}')
  directory = checkpoint_dir(workdir, CHECKPOINTS[checkpoint])
  if not os.path.isdir(directory) or not any(d.isdigit() for d in os.listdir(directory)):
    if checkpoint == 'best':
      raise errors.UserError(f'no checkpoint in {directory}', '--checkpoint=best',
                             'the run never validated (train.eval_every_epochs = 0, or it '
                             'ended before the first validation): use --checkpoint=last')
    raise errors.UserError(f'no checkpoint in {directory}', '--workdir',
                           'pass the --workdir of a trained run (or train one there first)')
  mesh = train_state_lib.make_mesh() if mesh is None else mesh
  tx = train_state_lib.make_optimizer(config.optim, train_state_lib.STATE_ONLY)
  graphdef, abstract_state, shardings = train_state_lib.abstract_train_state(config, mesh, tx)
  manager = create_manager(workdir, name=CHECKPOINTS[checkpoint])
  try:
    state = restore_latest(manager, abstract_state)
  finally:
    manager.close()
  if state is None:  # step folders exist, but Orbax lists none as finished
    raise errors.UserError(f'no finished checkpoint in {directory}', '--workdir',
                           'rerun the training there to finish a checkpoint')
  return RestoredRun(graphdef, state, shardings, mesh, int(state.step))
