"""The train loop's safeguards: a non-finite loss never reaches the state and stops the run;
the validation-best checkpoint is the first one with the highest validation IoU.

Not marked slow although the file takes about 4 min on the loaded 2-core CPU (75 s of CPU
time): these are the only tests of model selection and of the non-finite guard, so CI must
run them.
"""
import json
import shutil

import jax
import numpy as np
import pytest

import tiny_checkpoint
from irstd_jax import checkpointing
from irstd_jax import evaluate
from irstd_jax import reporting
from irstd_jax import train
from irstd_jax import train_state
from test_train import tiny_config

_SCRIPTED_VAL_IOU = {4: 0.2, 8: 0.5, 12: 0.4, 16: 0.5}  # step -> validation IoU; a tie at 16


def _leaves_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))))


def _batch():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 60, (4, 32, 32, 1), dtype=np.uint8)
  mask = np.zeros((4, 32, 32, 1), np.uint8)
  mask[:, 10:13, 20:23] = 1
  image[mask > 0] = 255
  return {'image': image, 'mask': mask}


def test_a_non_finite_loss_never_reaches_the_state():
  config = tiny_config()
  mesh = train_state.make_mesh()
  tx = train_state.make_optimizer(config.optim, num_steps=2)  # the two steps below
  graphdef, state, shardings = train_state.create_train_state(config, mesh, tx)
  # Donating steps, exactly as training compiles them: test_train.py's step test and the
  # runs below then find these programs in the persistent compilation cache.
  finite_step = train.make_train_step(config, graphdef, tx, mesh, shardings, warmup_steps=0)
  broken = config.copy_and_resolve_references()
  broken.data.std = 0.0  # the normalised input is +-inf / nan, and so is the loss
  nan_step = train.make_train_step(broken, graphdef, tx, mesh, shardings, warmup_steps=0)
  batch = _batch()
  before = jax.tree.map(np.array, state)  # host copies: the step donates the state's buffers
  after, metrics = nan_step(state, batch)
  computed = metrics.compute()
  assert not np.isfinite(computed['loss']) and computed['nonfinite'] == 1.0
  assert int(after.step) == int(before.step) + 1  # counted, so the data stream moves on
  for field in ('params', 'model_state', 'opt_state'):
    assert _leaves_equal(getattr(after, field), getattr(before, field)), field
  # Only that step is held back: the next finite batch trains as usual.
  again, metrics = finite_step(after, batch)
  assert metrics.compute()['nonfinite'] == 0.0
  assert not _leaves_equal(again.params, before.params)


def _four_epoch_config():
  config = tiny_config()  # 16 training images, batch 4: 4 steps per epoch
  config.train.num_epochs = 4
  config.train.warm_epochs = 0
  config.train.checkpoint_every_steps = 4
  config.train.max_to_keep = 4
  return config


@pytest.fixture(scope='module')
def scripted_run(tmp_path_factory):
  """A 16-step run whose validation IoUs are _SCRIPTED_VAL_IOU (the test split is real)."""
  config = _four_epoch_config()
  workdir = tmp_path_factory.mktemp('run')
  real_evaluate = evaluate.Evaluator.evaluate
  validated = []

  def scripted(self, state, source, **kwargs):
    results, per_image = real_evaluate(self, state, source, **kwargs)
    if len(source) == config.data.synthetic.num_val:
      validated.append(int(state.step))
      results = {**results, 'iou': _SCRIPTED_VAL_IOU[int(state.step)]}
    return results, per_image

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(evaluate.Evaluator, 'evaluate', scripted)
    results = train.train_and_evaluate(config, str(workdir))
  return config, workdir, results, validated


def _restore(config, workdir, step, name='checkpoints'):
  abstract = checkpointing.abstract_like(tiny_checkpoint.build(config)[1])
  manager = checkpointing.create_manager(str(workdir), name=name)
  try:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
  finally:
    manager.close()


def test_validation_best_is_the_first_highest_validation_iou(scripted_run):
  config, workdir, results, validated = scripted_run
  assert validated == [4, 8, 12, 16]  # every epoch (no warm-up epochs here)
  best = json.loads((workdir / 'val_best.json').read_text())
  # 0.5 at step 8 and again at step 16: a tie does not replace the earlier checkpoint.
  assert (best['step'], best['epoch'], best['iou']) == (8, 2, 0.5)
  assert results['step'] == 16 and results['checkpoint'] == 'last'
  assert results['val_best']['step'] == 8 and results['val_best']['validation_iou'] == 0.5
  assert sorted(p.name for p in (workdir / 'checkpoints_best').iterdir()
                if p.name.isdigit()) == ['8']
  best_state = _restore(config, workdir, 8, name='checkpoints_best')
  assert _leaves_equal(best_state.params, _restore(config, workdir, 8).params)
  assert not _leaves_equal(best_state.params, _restore(config, workdir, 16).params)


def test_a_non_finite_loss_stops_the_run_with_its_checkpoints_intact(scripted_run, tmp_path):
  config, finished, _, _ = scripted_run
  workdir = tmp_path / 'run'
  shutil.copytree(finished, workdir)
  config = config.copy_and_resolve_references()
  config.train.num_epochs = 5  # resumes at step 16; every further step is non-finite
  config.data.std = 0.0
  closed = []
  real_close = reporting.MetricWriter.close

  def recording_close(writer):
    closed.append(writer)
    real_close(writer)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(reporting.MetricWriter, 'close', recording_close)
    with pytest.raises(FloatingPointError, match='non-finite training loss before step 20'):
      train.train_and_evaluate(config, str(workdir))
  # The failed run closed its event file (left to tensorboardX's atexit hook, closing fails
  # on Python 3.12 with "can't create new thread at interpreter shutdown").
  assert closed
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  assert steps[-1] == 16  # nothing saved after the first non-finite step
  assert _leaves_equal(_restore(config, workdir, 16).params,
                       _restore(config, finished, 16).params)
