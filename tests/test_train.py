"""The train loop: configs, one train step, and a tiny end-to-end run with resume."""
import functools
import glob
import inspect
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import load_config
from irstd_jax import input_pipeline
from irstd_jax import losses
from irstd_jax import models
from irstd_jax import train
from irstd_jax import train_state

REPO = pathlib.Path(__file__).resolve().parents[1]
# Run configs; study configs (configs/study/) describe grids of them: tests/test_study.py.
CONFIG_FILES = sorted(str(p.relative_to(REPO)) for p in (REPO / 'configs').rglob('*.py')
                      if p.name not in ('__init__.py', 'base.py') and p.parent.name != 'study')



@pytest.mark.parametrize('path', CONFIG_FILES)
def test_every_config_builds_its_model(path):
  config = load_config(path)
  model = nnx.eval_shape(lambda: models.build_model(config.model, rngs=nnx.Rngs(0)))
  n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n > 0
  # Every loss field is a keyword of the loss function (train.py binds them all by name; a
  # field that is not one would be a TypeError at the first step, after the data is built).
  keywords = {name for name, p in inspect.signature(losses.mshnet_loss).parameters.items()
              if p.kind is p.KEYWORD_ONLY and name != 'warmup'}
  assert set(config.loss) <= keywords, set(config.loss) - keywords


def tiny_config(workdir_seed=0):
  config = load_config('configs/synthetic.py')
  config.seed = workdir_seed
  config.model.widths = (4, 8, 8, 16, 16)
  config.data.synthetic.image_size = 32
  config.data.synthetic.num_train = 16
  config.data.synthetic.num_val = 4
  config.data.synthetic.num_test = 6
  config.data.crop_size = 32
  config.data.resize_range = (24, 48)
  config.train.batch_size = 4
  config.train.num_epochs = 3
  config.train.warm_epochs = 1
  config.train.log_every_steps = 4
  config.train.checkpoint_every_steps = 4
  config.train.eval_every_epochs = 1
  config.eval.batch_size = 4
  return config


def fixed_batch() -> dict:
  """Four 32x32 scenes, each with one bright 3x3 target: {'image', 'mask'} uint8 [4, 32, 32, 1]."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 60, (4, 32, 32, 1), dtype=np.uint8)
  mask = np.zeros((4, 32, 32, 1), np.uint8)
  mask[:, 10:13, 20:23] = 1
  image[mask > 0] = 255
  return {'image': jnp.asarray(image), 'mask': jnp.asarray(mask)}


def test_train_step_lowers_the_loss_on_a_fixed_batch():
  config = tiny_config()
  config.train.warm_epochs = 0
  mesh = train_state.make_mesh()
  tx = train_state.make_optimizer(config.optim, num_steps=8)
  graphdef, state, shardings = train_state.create_train_state(config, mesh, tx)
  step = train.make_train_step(config, graphdef, tx, mesh, shardings, warmup_steps=0)
  batch = fixed_batch()
  losses_seen = []
  for _ in range(8):
    state, m = step(state, batch)
    losses_seen.append(float(m.compute()['loss']))
  assert int(state.step) == 8
  assert np.all(np.isfinite(losses_seen))
  assert losses_seen[-1] < losses_seen[0] - 0.05, losses_seen


def _steps_through_the_switch(accumulator_at_switch: float = 0.0,
                              fuse_at_switch: str = 'as_initialised'):
  """Two warm-up steps and the first step after them on a fixed batch: (state after the
  warm-up, state after the switch step, the step's learning rate)."""
  config = tiny_config()
  config.optim.accumulator_at_switch = accumulator_at_switch
  config.train.fuse_at_switch = fuse_at_switch
  mesh = train_state.make_mesh()
  tx = train_state.make_optimizer(config.optim, num_steps=3)
  graphdef, state, shardings = train_state.create_train_state(config, mesh, tx)
  step = train.make_train_step(config, graphdef, tx, mesh, shardings, warmup_steps=2,
                               donate=False)
  batch = fixed_batch()
  for _ in range(2):
    state, _ = step(state, batch)
  after, _ = step(state, batch)
  return state, after, float(train_state.learning_rate_schedule(config.optim, 3)(2))


def test_fuse_at_switch_d0_starts_deep_supervision_from_the_trained_d0_head():
  """'d0' resets the fused head at the switch so that fused = h0; warm-up is unchanged (so
  it can be shared), and the switch step trains on from the reset weights."""
  warm, switched, lr = _steps_through_the_switch()
  warm_d0, switched_d0, _ = _steps_through_the_switch(fuse_at_switch='d0')
  for a, b in zip(jax.tree.leaves(warm), jax.tree.leaves(warm_d0)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the same warm-up

  config = tiny_config()
  graphdef, _, _ = train_state.create_train_state(
      config, train_state.make_mesh(), train_state.make_optimizer(config.optim, 3))
  reset = train.params_at_step(warm.params, 2, warmup_steps=2, fuse_at_switch='d0')
  images = input_pipeline.normalize(fixed_batch()['image'], config.data.mean,
                                          config.data.std)
  fused, sides, _ = train_state.apply_model(graphdef, reset, warm.model_state, images,
                                            train=False)
  np.testing.assert_allclose(np.asarray(fused), np.asarray(sides[0]), atol=1e-5)
  before, _, _ = train_state.apply_model(graphdef, warm.params, warm.model_state, images,
                                         train=False)
  assert np.max(np.abs(np.asarray(before) - np.asarray(sides[0]))) > 0.1  # the random fuse
  for step in (1, 3):  # only the switch step resets
    same = train.params_at_step(warm.params, step, warmup_steps=2, fuse_at_switch='d0')
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(same),
                                                    jax.tree.leaves(warm.params)))

  kernel = lambda params: np.asarray(params['fuse']['kernel'][...])
  start = np.zeros_like(kernel(warm.params))
  start[1, 1, 0, 0] = 1.0
  # Then one Adagrad step from the reset weights (their first: at most lr per weight).
  assert np.all(np.abs(kernel(switched_d0.params) - start) <= lr * (1 + 1e-6))
  assert np.any(kernel(switched_d0.params) != start)
  assert not np.allclose(kernel(switched.params), kernel(switched_d0.params))


def test_accumulator_at_switch_tempers_the_first_step_of_the_heads_warm_up_never_trained():
  """Warm-up trains the d0 head only, so the fused head's and the side heads' Adagrad
  accumulators are still 0 when it ends, and their first step is lr * sign(grad): every
  weight moves by the full learning rate. Seeded accumulators make that step smaller and
  leave the update of every entry the warm-up did train bit for bit as it was."""
  warm, switched, lr = _steps_through_the_switch(0.0)
  warm_seeded, switched_seeded, _ = _steps_through_the_switch(0.1)
  flat = lambda tree: {jax.tree_util.keystr(k): np.asarray(v)
                       for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  accumulators = flat(warm.opt_state[0].sum_of_squares)  # the same paths as the params
  for head in ('fuse', 'head1', 'head2', 'head3'):
    assert all(np.all(a == 0) for k, a in accumulators.items() if k.startswith(f"['{head}']"))
  before, after, after_seeded = (flat(s.params) for s in (warm, switched, switched_seeded))
  untrained_steps, untrained_seeded_steps = [], []
  for key, a in accumulators.items():
    np.testing.assert_array_equal(flat(warm_seeded.params)[key], before[key])  # same warm-up
    step, step_seeded = after[key] - before[key], after_seeded[key] - before[key]
    untrained = a == 0
    np.testing.assert_array_equal(step_seeded[~untrained], step[~untrained], err_msg=key)
    moved = untrained & (step != 0)
    untrained_steps.append(np.abs(step[moved]))
    untrained_seeded_steps.append(np.abs(step_seeded[moved]))
    assert np.all(flat(switched_seeded.opt_state[0].sum_of_squares)[key][untrained] >= 0.1)
  untrained_steps = np.concatenate(untrained_steps)
  # lr * g / sqrt(g^2 + eps): lr * sign(g), less only where |g| comes near sqrt(eps) = 1e-5.
  assert untrained_steps.size and np.all(untrained_steps <= lr * (1 + 1e-6))
  np.testing.assert_allclose(np.median(untrained_steps), lr, rtol=1e-3)
  assert np.all(np.concatenate(untrained_seeded_steps) < 0.5 * lr)


def test_tiny_end_to_end_run_writes_results_and_resumes(tmp_path):
  config = tiny_config()
  results = train.train_and_evaluate(config, str(tmp_path))
  saved = json.loads((tmp_path / 'eval_test_basicirstd_last' / 'eval_results.json').read_text())
  for key in ('iou', 'niou', 'pd', 'fa', 'num_images', 'num_targets', 'split', 'step'):
    assert key in saved
  assert saved['step'] == 12 and saved['num_images'] == 6 and saved['split'] == 'test'
  assert 0.0 <= saved['iou'] <= 1.0 and 0.0 <= saved['fa'] <= 1.0
  assert 'val_best' in saved
  assert max(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit()) == 12
  assert glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  # A second call finds the finished run, trains nothing and reproduces the results.
  again = train.train_and_evaluate(config, str(tmp_path))
  for key in ('iou', 'niou', 'pd', 'fa'):
    assert again[key] == results[key]


def test_a_best_checkpoint_at_the_last_step_is_recorded_without_evaluating_it_again(
    tmp_path, monkeypatch):
  """Validated once, after the last epoch: the validation-best checkpoint is the last one,
  so the final evaluation scores the test split once and records it under both names."""
  config = tiny_config()
  config.train.eval_every_epochs = 3  # of 3 epochs: validation after the last one only
  evaluated = []
  evaluate_checkpoint = train.evaluate_lib.evaluate_checkpoint

  def counting(*args, checkpoint, **kwargs):
    evaluated.append(checkpoint)
    return evaluate_checkpoint(*args, checkpoint=checkpoint, **kwargs)

  monkeypatch.setattr(train.evaluate_lib, 'evaluate_checkpoint', counting)
  results = train.train_and_evaluate(config, str(tmp_path))
  assert evaluated == ['last']
  assert results['step'] == results['val_best']['step'] == 12
  folder = lambda checkpoint: tmp_path / f'eval_test_basicirstd_{checkpoint}'
  last = json.loads((folder('last') / 'eval_results.json').read_text())
  best = json.loads((folder('best') / 'eval_results.json').read_text())
  assert (best['checkpoint'], last['checkpoint']) == ('best', 'last')
  for key in ('iou', 'niou', 'pd', 'fa', 'num_images', 'num_targets', 'step'):
    assert best[key] == last[key] == results['val_best'].get(key, results[key]), key
  assert ((folder('best') / 'per_image.csv').read_text()
          == (folder('last') / 'per_image.csv').read_text())


def _main(*args, cwd=REPO):
  return subprocess.run([sys.executable, 'main.py', *args], cwd=cwd, capture_output=True,
                        text=True, timeout=300)


def test_misspelt_override_is_an_error(tmp_path):
  proc = _main('--config=configs/synthetic.py', f'--workdir={tmp_path}',
               '--config.train.num_epochz=3')
  assert proc.returncode != 0
  assert 'num_epochz' in proc.stderr
  assert not os.listdir(tmp_path)


def test_missing_raw_data_says_where_to_put_which_files(tmp_path):
  workdir = tmp_path / 'run'
  proc = _main('--config=configs/irstd1k.py', f'--workdir={workdir}',
               f'--config.data.data_dir={tmp_path / "tfds"}')
  assert proc.returncode == 2
  manual = tmp_path / 'tfds' / 'downloads' / 'manual' / 'irstd1k'
  assert str(manual) in proc.stderr
  for name in ('IRSTD1k_Img', 'IRSTD1k_Label', 'trainval.txt', 'test.txt'):
    assert name in proc.stderr
  assert not workdir.exists()  # nothing half-written
