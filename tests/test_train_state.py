"""Optimizer schedules, the abstract train state, and the host-memory setting."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import load_config
from irstd_jax import train_state


def optim_config(**overrides) -> ml_collections.ConfigDict:
  config = load_config('configs/base.py').optim
  config.unlock()
  config.update(overrides)
  return config


def test_constant_schedule_is_the_recipe_lr_at_every_step():
  schedule = train_state.learning_rate_schedule(optim_config(), num_steps=100)
  assert [float(schedule(s)) for s in (0, 50, 99, 1000)] == pytest.approx([0.05] * 4)


def test_cosine_schedule_starts_at_lr_and_ends_at_the_final_fraction():
  config = optim_config(schedule='cosine', final_lr_fraction=0.1)
  schedule = train_state.learning_rate_schedule(config, num_steps=100)
  lrs = np.array([float(schedule(s)) for s in range(101)])
  assert lrs[0] == pytest.approx(0.05)
  assert lrs[50] == pytest.approx(0.05 * (0.1 + 0.9 * 0.5))  # halfway down the cosine
  assert lrs[100] == pytest.approx(0.005)
  assert np.all(np.diff(lrs) <= 1e-12)  # never goes back up


def test_cosine_without_the_run_length_is_an_error():
  with pytest.raises(ValueError, match="'cosine' needs the run's num_steps"):
    train_state.make_optimizer(optim_config(schedule='cosine'))


def test_unknown_schedule_is_an_error():
  with pytest.raises(ValueError, match="unknown optim.schedule 'linear'"):
    train_state.learning_rate_schedule(optim_config(schedule='linear'))


def test_adagrad_first_step_is_pytorch_adagrad_up_to_eps_placement():
  # PyTorch, zero initial accumulator: sum = g^2, p -= lr * g / (sqrt(sum) + eps).
  # optax (docs/method.md's line) puts eps inside the root: g / sqrt(sum + eps). Equal to 1e-4
  # relative for |g| >= 1e-3; below that optax takes smaller steps (README, deviations).
  tx = train_state.make_optimizer(optim_config())
  params = {'w': jnp.array([1.0, -2.0, 0.5, 0.1])}
  grads = {'w': jnp.array([0.3, -4.0, 1e-3, 1e-6])}
  updates, state = tx.update(grads, tx.init(params), params)
  g = np.asarray(grads['w'], np.float64)
  np.testing.assert_allclose(updates['w'], -0.05 * g / np.sqrt(g**2 + 1e-10), rtol=1e-5)
  torch_step = -0.05 * g / (np.sqrt(g**2) + 1e-10)
  np.testing.assert_allclose(updates['w'][:3], torch_step[:3], rtol=1e-4)
  assert abs(updates['w'][3]) < 0.2 * abs(torch_step[3])  # g = 1e-6: the two differ
  # Second step: the accumulator holds the sum of squares.
  updates, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(updates['w'][:3], -0.05 * g[:3] / np.sqrt(2 * g[:3]**2),
                             rtol=1e-4)


def test_optimizer_state_structure_does_not_depend_on_the_schedule():
  # A checkpoint written with one schedule restores with the other (eval, predict and a
  # resumed run with a changed schedule all rebuild the optimizer).
  params = {'w': jnp.ones((3, 2)), 'b': jnp.zeros((2,))}
  states = [train_state.make_optimizer(optim_config(schedule=s), 50).init(params)
            for s in ('constant', 'cosine')]
  assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])


def test_abstract_train_state_describes_the_created_state():
  config = load_config('configs/synthetic.py')
  config.model.widths = (4, 8, 8, 16, 16)
  mesh = train_state.make_mesh()
  tx = train_state.make_optimizer(config.optim, train_state.STATE_ONLY)
  graphdef, abstract, abstract_shardings = train_state.abstract_train_state(config, mesh, tx)
  graphdef2, state, shardings = train_state.create_train_state(config, mesh, tx)
  assert graphdef == graphdef2
  assert jax.tree.structure(abstract) == jax.tree.structure(state)
  for a, s, sh in zip(jax.tree.leaves(abstract), jax.tree.leaves(state),
                      jax.tree.leaves(shardings)):
    assert isinstance(a, jax.ShapeDtypeStruct)
    assert (a.shape, a.dtype) == (s.shape, s.dtype)
    assert a.sharding == sh == s.sharding
  assert jax.tree.structure(abstract_shardings) == jax.tree.structure(shardings)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt is Linux-only')
def test_keep_freed_memory_applies_in_a_fresh_process():
  # A fresh interpreter: the setting must come before any thread allocates.
  code = ('from irstd_jax import host_memory; import sys; '
          'ok = host_memory.keep_freed_memory(); '
          'assert "jax" not in sys.modules, "host_memory must not import jax"; '
          'print(ok)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == 'True'
