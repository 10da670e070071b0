"""The switch probe replays a cell's first steps after warm-up exactly (its state equals the
cell's), reports what the train step saw, and refuses warm-ups it cannot replay from."""
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irstd_jax import checkpointing
from irstd_jax import errors
from irstd_jax import study as study_lib
from irstd_jax.tools import switch_probe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny():
  sys.path.insert(0, ROOT)
  from tests import study_tiny  # pylint: disable=g-import-not-at-top
  return study_tiny.get_config()


def test_update_sizes_are_mean_absolute_changes_per_head_and_body():
  before = {'head1': {'kernel': jnp.zeros((2, 3))}, 'fuse': {'bias': jnp.zeros((1,))},
            'encoder0': {'conv': {'kernel': jnp.zeros((4,))}}, 'stem': {'bias': jnp.ones((2,))}}
  after = {'head1': {'kernel': jnp.full((2, 3), -0.05)}, 'fuse': {'bias': jnp.array([0.05])},
           'encoder0': {'conv': {'kernel': jnp.array([0.1, -0.1, 0.0, 0.2])}},
           'stem': {'bias': jnp.array([1.0, 0.0])}}
  sizes = switch_probe.update_sizes(before, after)
  assert set(sizes) == {'head1', 'fuse', 'body'}
  np.testing.assert_allclose(float(sizes['head1']), 0.05, rtol=1e-6)
  np.testing.assert_allclose(float(sizes['fuse']), 0.05, rtol=1e-6)
  np.testing.assert_allclose(float(sizes['body']), (0.4 + 1.0) / 6, rtol=1e-6)  # both modules


def test_markdown_shows_the_chosen_steps_of_each_probe():
  entry = lambda k: {'step': k, 'train': {'loss': 1.0 + k / 100},
                     'positive': {o: 0.5 for o in switch_probe.OUTPUTS},
                     'iou': {'fused': 0.25}, 'target_probability': {'fused': 0.75},
                     'update': {g: 0.05 for g in switch_probe.HEADS} | {'body': 0.001}}
  probe = {'configuration': 'l1', 'seed': 2, 'warmup': 'l1-seed2',
           'steps': [entry(k) for k in range(1, 8)]}
  text = switch_probe.markdown([probe], table_steps=(1, 6))
  rows = [line for line in text.splitlines() if line.startswith('| ') and line[2].isdigit()]
  assert [r.split(' | ')[0] for r in rows] == ['| 1', '| 6']
  assert rows[0] == ('| 1 | 1.0100 | 50.00 | 50.00 | 50.00 | 50.00 | 50.00 | 25.00 | 0.750 '
                     '| 0.0500 | 0.0500 | 0.0500 | 0.00100 |')


def test_merge_keeps_other_cells_and_replaces_a_cell_probed_again():
  probe = lambda name, seed, tag: {'configuration': name, 'seed': seed, 'tag': tag}
  kept = [probe('sls', 0, 'old'), probe('l1', 1, 'old'), probe('l1', 0, 'old')]
  merged = switch_probe.merge(kept, [probe('l1', 0, 'new'), probe('l1', 2, 'new')])
  assert [(p['configuration'], p['seed'], p['tag']) for p in merged] == [
      ('l1', 0, 'new'), ('sls', 0, 'old'), ('l1', 1, 'old'), ('l1', 2, 'new')]


def test_a_missing_warmup_is_named(tmp_path):
  with pytest.raises(errors.UserError, match='no warm-up in .*l1-seed0'):
    switch_probe.probe_cell(_tiny(), 'l1', 0, workdir=str(tmp_path), steps=1)


def test_replay_equals_the_cell_step_by_step(tmp_path):
  """Two steps replayed from the end of warm-up give the state the cell itself reaches at
  that step, and the outputs' statistics are those its train step saw."""
  from irstd_jax import train  # pylint: disable=g-import-not-at-top
  study = _tiny()
  config = study_lib.cell_config(study, 'l1', 0)
  warm_dir = os.path.join(tmp_path, 'warmup', study_lib.warmup_name(study, 'l1', 0))
  study_lib.check_warmup_config(config, warm_dir)
  switch = 3  # 12 training images, batch 4, one warm-up epoch
  train.train_and_evaluate(config, warm_dir, stop_at_step=switch)
  cell_dir = os.path.join(tmp_path, 'cell')
  shutil.copytree(warm_dir, cell_dir)
  train.train_and_evaluate(config, cell_dir, stop_at_step=switch + 2)
  expected = checkpointing.restore_run(config, cell_dir).state

  entries, state = switch_probe.replay_switch(config, warm_dir, 2, log=lambda _: None)
  assert int(state.step) == switch + 2
  for got, want in zip(jax.tree.leaves((state.params, state.model_state, state.opt_state)),
                       jax.tree.leaves((expected.params, expected.model_state,
                                        expected.opt_state))):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

  assert [e['step'] for e in entries] == [1, 2]
  assert [e['global_step'] for e in entries] == [switch + 1, switch + 2]
  pixels = config.train.batch_size * config.data.crop_size ** 2
  for e in entries:
    # After warm-up the train step predicts with the fused map: the probe's fused statistics
    # are that prediction's (up to a pixel at the threshold: another compiled program).
    assert abs(e['positive']['fused'] - e['train']['positive_fraction']) <= 1 / pixels
    assert all(set(e[k]) == set(switch_probe.OUTPUTS)
               for k in ('positive', 'mean_logit', 'iou', 'target_probability'))
    assert all(0 <= e[k][o] <= 1 for k in ('iou', 'target_probability') for o in e[k])
    # The step's own training IoU is the fused map's (after warm-up it predicts with it).
    np.testing.assert_allclose(e['iou']['fused'], e['train']['iou'], atol=2 / pixels)
  # Warm-up trained head0 only: on the first step the other heads' Adagrad accumulators are
  # 0, so every weight there moves by lr * |g| / sqrt(g^2 + eps), about lr (the sign step).
  from irstd_jax import train_state  # pylint: disable=g-import-not-at-top
  num_steps = 3 * switch  # three epochs
  lr = float(train_state.learning_rate_schedule(config.optim, num_steps)(switch))
  first = entries[0]['update']
  for head in ('head1', 'head2', 'head3', 'fuse'):
    assert 0.9 * lr < first[head] <= lr * (1 + 1e-6), (head, first[head])
  # The body's accumulators hold the warm-up's gradients: after k similar ones its step is
  # about lr / sqrt(k + 1), lr / 2 after this test's 3 warm-up steps.
  assert first['body'] < 0.75 * lr

  # With the fuse reset at the switch, the first step's fused map is the d0 head's.
  config.train.fuse_at_switch = 'd0'
  reset, _ = switch_probe.replay_switch(config, warm_dir, 1, log=lambda _: None)
  np.testing.assert_allclose(reset[0]['mean_logit']['fused'], reset[0]['mean_logit']['head0'],
                             rtol=1e-5)
  assert reset[0]['positive']['fused'] == reset[0]['positive']['head0']
  assert entries[0]['positive']['head0'] == reset[0]['positive']['head0']  # same warm-up

  with pytest.raises(errors.UserError, match='not at the end of warm-up'):
    switch_probe.replay_switch(config, cell_dir, 1)
