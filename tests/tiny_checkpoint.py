"""A tiny random-init MSHNet and its checkpoint in a workdir, for eval / predict tests."""
from __future__ import annotations

from conftest import load_config
from irstd_jax import checkpointing
from irstd_jax import train_state


def tiny_config(eval_batch_size: int = 4):
  """configs/synthetic.py with widths (4, 8, 8, 16, 16) on 32x32 scenes."""
  config = load_config('configs/synthetic.py')
  config.model.widths = (4, 8, 8, 16, 16)
  config.data.synthetic.image_size = 32
  config.data.synthetic.num_train = 8
  config.data.synthetic.num_val = 4
  config.data.synthetic.num_test = 6
  config.eval.batch_size = eval_batch_size
  return config


_BUILT = {}


def build(config):
  """(graphdef, state, shardings, mesh) of an initialised model, built once per config.

  Tracing MSHNet's init takes seconds even with the compilation cache warm, and the
  state is immutable, so every test of one session shares it.
  """
  key = config.to_json()
  if key not in _BUILT:
    mesh = train_state.make_mesh()
    graphdef, state, shardings = train_state.create_train_state(
        config, mesh, train_state.make_optimizer(config.optim, train_state.STATE_ONLY))
    _BUILT[key] = graphdef, state, shardings, mesh
  return _BUILT[key]


def save_checkpoint(config, workdir, step: int = 7, name: str = 'checkpoints'):
  """Writes a random-init state at `step` where train.py would; returns the state."""
  _, state, _, _ = build(config)
  state = state.replace(step=state.step + step)
  manager = checkpointing.create_manager(str(workdir), name=name)
  checkpointing.save(manager, step, state, force=True)
  manager.wait_until_finished()
  manager.close()
  return state
