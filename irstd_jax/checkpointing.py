"""Orbax checkpoints of the full train state, in `workdir/checkpoints`.

The input pipeline is a pure function of (seed, step) (see input_pipeline.py), so the
step in the state is the whole of its position: restoring the state resumes the data
stream exactly.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


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


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any) -> Any | None:
  """Restores the newest checkpoint onto `abstract_state`'s shapes and shardings.

  Returns None when the directory holds no checkpoint.
  """
  step = manager.latest_step()
  if step is None:
    return None
  logging.info('Restoring checkpoint at step %d from %s', step, manager.directory)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))


def abstract_like(state: Any) -> Any:
  """ShapeDtypeStructs (with shardings) describing `state`, for restoring onto it."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
