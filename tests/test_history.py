"""history.json: per-epoch entries, and running sums that resume bitwise."""
import json

import jax.numpy as jnp
import numpy as np

from irstd_jax import history as history_lib
from irstd_jax import train


def _step(i):
  rng = np.random.default_rng(i)
  return train.TrainMetrics.single_from_model_output(
      **{k: jnp.float32(rng.random()) for k in
         ('loss', 'iou', 'grad_norm', 'positive_fraction', 'nonfinite')})


def _merge(metrics, steps):
  for i in steps:
    metrics = _step(i) if metrics is None else metrics.merge(_step(i))
  return metrics


def test_epoch_resumed_from_a_mid_epoch_checkpoint_is_bitwise_the_uninterrupted_one(tmp_path):
  straight = history_lib.History(str(tmp_path / 'a'), train.TrainMetrics)
  (tmp_path / 'a').mkdir()
  want = straight.end_epoch(epoch=1, step=7, warmup=False, epoch_metrics=_merge(None, range(7)),
                            validation={'iou': 0.5, 'positive_fraction': 0.01, 'extra': 1})
  assert want['steps'] == 7 and want['validation'] == {'iou': 0.5, 'positive_fraction': 0.01}

  (tmp_path / 'b').mkdir()
  first = history_lib.History(str(tmp_path / 'b'), train.TrainMetrics)
  first.checkpoint(4, _merge(None, range(4)))  # then the process dies
  second = history_lib.History(str(tmp_path / 'b'), train.TrainMetrics)
  resumed = second.resume(4)
  got = second.end_epoch(epoch=1, step=7, warmup=False, epoch_metrics=_merge(resumed, range(4, 7)),
                         validation={'iou': 0.5, 'positive_fraction': 0.01})
  assert got == want  # floats compared exactly
  saved = json.load(open(tmp_path / 'b' / history_lib.FILENAME))
  assert saved['epochs'] == [want] and list(saved['partial']) == ['4']
  assert history_lib.read(str(tmp_path / 'b')) == [want]


def test_killed_after_an_epoch_end_before_the_next_checkpoint_resumes_exactly(tmp_path):
  # Checkpoints every 4 steps, epochs of 6: the epoch ends at step 6, the next checkpoint
  # is at 8. Killed at step 7, the run resumes from step 4, inside the finished epoch.
  (tmp_path / 'a').mkdir()
  want = history_lib.History(str(tmp_path / 'a'), train.TrainMetrics).end_epoch(
      epoch=1, step=6, warmup=True, epoch_metrics=_merge(None, range(6)), validation=None)
  (tmp_path / 'b').mkdir()
  first = history_lib.History(str(tmp_path / 'b'), train.TrainMetrics)
  first.checkpoint(4, _merge(None, range(4)))
  first.end_epoch(epoch=1, step=6, warmup=True, epoch_metrics=_merge(None, range(6)),
                  validation=None)  # then the process dies at step 7
  second = history_lib.History(str(tmp_path / 'b'), train.TrainMetrics)
  resumed = second.resume(4)
  assert second.epochs == []
  assert resumed is not None, 'the sums of the checkpoint it resumes from were dropped'
  got = second.end_epoch(epoch=1, step=6, warmup=True, epoch_metrics=_merge(resumed, range(4, 6)),
                         validation=None)
  assert got == want and got['steps'] == 6


def test_stored_sums_are_bounded(tmp_path):
  h = history_lib.History(str(tmp_path), train.TrainMetrics)
  for step in range(1, 30):
    h.checkpoint(step, _merge(None, range(1)))
  assert sorted(map(int, h.partial)) == list(range(30 - history_lib._PARTIALS_KEPT, 30))


def test_resume_forgets_entries_after_the_restored_step(tmp_path):
  h = history_lib.History(str(tmp_path), train.TrainMetrics)
  for epoch in (1, 2, 3):
    h.end_epoch(epoch=epoch, step=5 * epoch, warmup=epoch == 1,
                epoch_metrics=_merge(None, range(5)), validation=None)
  again = history_lib.History(str(tmp_path), train.TrainMetrics)
  assert again.resume(10) is None  # an epoch boundary with its entry recorded
  assert [e['epoch'] for e in again.epochs] == [1, 2]
  assert history_lib.History(str(tmp_path), train.TrainMetrics).resume(0) is None
