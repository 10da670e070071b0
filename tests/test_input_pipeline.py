"""The grain pipeline: determinism, per-host sharding, resume, and the eval padding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irstd_jax import eval_batching as eb
from irstd_jax import input_pipeline as ip
from irstd_jax import synthetic
from irstd_jax.errors import UserError


class _ArraySource:
  """A tiny in-memory source with distinct, recognisable images."""

  def __init__(self, n=10, size=24):
    rng = np.random.default_rng(0)
    self.images = rng.integers(0, 255, (n, size, size, 1), dtype=np.uint8)
    self.masks = (rng.random((n, size, size, 1)) > 0.97).astype(np.uint8)

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {'image': self.images[i], 'mask': self.masks[i], 'id': f'img{i}'}


CFG = ip.AugmentConfig(crop_size=16, resize_range=(12, 32))


def _dataset(process_index=0, process_count=1, seed=3, batch=4, epochs=2):
  schedule = ip.TrainSchedule(num_examples=10, global_batch_size=batch, num_epochs=epochs)
  return ip.train_dataset(_ArraySource(), schedule=schedule, seed=seed, cfg=CFG,
                          process_index=process_index, process_count=process_count)


def test_schedule_drops_the_last_partial_batch():
  s = ip.TrainSchedule(num_examples=10, global_batch_size=4, num_epochs=3)
  assert s.steps_per_epoch == 2 and s.num_steps == 6
  with pytest.raises(UserError, match='fewer than one global batch'):
    ip.TrainSchedule(num_examples=3, global_batch_size=4, num_epochs=1)


def _reference_schedule(num_epochs, steps_per_epoch, warm_epoch, every_epochs=1):
  """MSHNet's main loop, written out: per global step, whether the step is warm-up; per
  epoch, whether it is followed by a test. The reference (0-based epochs) switches to
  deep supervision `if epoch > warm_epoch` and tests on the same condition."""
  warm_steps, tested_after = [], []
  for epoch in range(num_epochs):
    for _ in range(steps_per_epoch):
      warm_steps.append(not epoch > warm_epoch)
    if epoch > warm_epoch and (epoch + 1) % every_epochs == 0:
      tested_after.append((epoch + 1) * steps_per_epoch)  # steps done at that point
  return warm_steps, tested_after


@pytest.mark.parametrize('every_epochs', [1, 2, 5])
def test_warmup_and_validation_boundaries_match_the_reference(every_epochs):
  from configs import base  # pylint: disable=g-import-not-at-top
  recipe = base.get_config().train
  reference_warm_epoch = 5  # MSHNet's default, which the paper's code keeps
  schedule = ip.TrainSchedule(num_examples=23, global_batch_size=4, num_epochs=12,
                              warm_epochs=recipe.warm_epochs)
  warm_steps, tested_after = _reference_schedule(12, schedule.steps_per_epoch,
                                                 reference_warm_epoch, every_epochs)
  assert recipe.warm_epochs == 6
  assert [ip.is_warmup_step(step, schedule.warmup_steps)
          for step in range(schedule.num_steps)] == warm_steps
  # The train step applies the same rule to the traced step counter.
  traced = jax.jit(lambda s: ip.is_warmup_step(s, schedule.warmup_steps))
  assert [bool(traced(jnp.int32(step))) for step in range(schedule.num_steps)] == warm_steps
  # history.json's per-epoch flag: the reference's epochs 0..5 are warm-up.
  assert [schedule.ends_warmup_epoch((epoch + 1) * schedule.steps_per_epoch)
          for epoch in range(12)] == [not epoch > reference_warm_epoch for epoch in range(12)]
  assert sum(warm_steps) == 6 * schedule.steps_per_epoch
  assert [done for done in range(1, schedule.num_steps + 1)
          if schedule.validates_after(done, every_epochs)] == tested_after
  assert not any(schedule.validates_after(done, 0) for done in range(1, 60))


def test_batches_have_the_crop_shape_and_binary_masks():
  batch = _dataset()[0]
  assert batch['image'].shape == (4, 16, 16, 1) and batch['image'].dtype == np.uint8
  assert batch['mask'].shape == (4, 16, 16, 1)
  assert set(np.unique(batch['mask'])) <= {0, 1}


def test_same_seed_same_batches_other_seed_other_batches():
  a, b, c = _dataset(seed=3), _dataset(seed=3), _dataset(seed=4)
  for step in range(len(a)):
    np.testing.assert_array_equal(a[step]['image'], b[step]['image'])
  assert any(not np.array_equal(a[s]['image'], c[s]['image']) for s in range(len(a)))


def test_process_slices_reassemble_the_global_batch():
  full = _dataset()
  halves = [_dataset(process_index=p, process_count=2) for p in range(2)]
  for step in range(len(full)):
    joined = np.concatenate([h[step]['image'] for h in halves])
    np.testing.assert_array_equal(joined, full[step]['image'])


def test_resumed_iterator_sees_the_same_batches():
  ds = _dataset()
  uninterrupted = [b['image'] for b in ip.train_iterator(ds)]
  resumed = [b['image'] for b in ip.train_iterator(ds, start_step=2)]
  assert len(uninterrupted) == 4
  for a, b in zip(uninterrupted[2:], resumed):
    np.testing.assert_array_equal(a, b)


def test_grain_worker_processes_give_the_same_batches_in_order():
  # config.data.worker_count > 0 moves the augmentation into grain worker processes (the
  # dataset is pickled to them); the stream must not change, from step 0 or from a resume.
  # pytest never parses absl flags, as a library caller would not: grain's workers read
  # theirs, which used to raise UnparsedFlagAccessError outside main.py.
  ds = _dataset(epochs=3)
  in_process = [b for b in ip.train_iterator(ds)]
  with_workers = list(ip.train_iterator(ds, worker_count=2))
  resumed = list(ip.train_iterator(ds, start_step=3, worker_count=2))
  assert len(in_process) == len(with_workers) == 6 and len(resumed) == 3
  for expected, got in zip(in_process, with_workers):
    np.testing.assert_array_equal(expected['image'], got['image'])
    np.testing.assert_array_equal(expected['mask'], got['mask'])
  for expected, got in zip(in_process[3:], resumed):
    np.testing.assert_array_equal(expected['image'], got['image'])
  for step, got in enumerate(with_workers):  # and the random-access batches, step by step
    np.testing.assert_array_equal(ds[step]['image'], got['image'])


def test_round_up_to_a_multiple():
  assert [eb.round_up(n, 32) for n in (1, 31, 32, 33, 64, 65)] == [32, 32, 32, 64, 64, 96]
  assert eb.round_up(0, 8) == 0 and eb.round_up(5, 1) == 5 and eb.round_up(6, 4) == 8


def test_each_epoch_visits_a_permutation():
  example = ip._TrainExample(_ArraySource(), ip.TrainSchedule(10, 5, 2), 0, CFG, 0, 1)
  for epoch in range(2):
    seen = [example.source_index(epoch * 10 + k) for k in range(10)]
    assert sorted(seen) == list(range(10))


def test_augment_keeps_mask_aligned_with_image():
  # A bright square whose mask is the same square: after any flip/resize/crop the mask
  # must still sit on bright pixels.
  image = np.zeros((40, 40), np.uint8)
  image[10:20, 22:32] = 250
  mask = (image > 0).astype(np.uint8)
  cfg = ip.AugmentConfig(crop_size=32, resize_range=(32, 64), blur_prob=0.0)
  for seed in range(10):
    img, msk = ip.augment(image, mask, np.random.default_rng(seed), cfg)
    if msk.any():
      assert img[msk[..., 0] > 0].mean() > 200


def test_eval_batches_pad_group_and_cover_every_image_once():
  class Mixed:
    shapes = [(20, 30), (64, 64), (20, 30), (33, 10), (64, 64), (20, 31)]

    def __len__(self):
      return len(self.shapes)

    def __getitem__(self, i):
      h, w = self.shapes[i]
      return {'image': np.full((h, w, 1), i, np.uint8), 'mask': np.zeros((h, w, 1), np.uint8),
              'id': f'm{i}'.encode()}

  batches = eb.eval_batches(Mixed(), batch_size=2, pad_multiple=32)
  ids = [i for b in batches for i in b.ids]
  assert sorted(ids) == sorted(f'm{i}' for i in range(6))
  for b in batches:
    assert b.image.shape[1] % 32 == 0 and b.image.shape[2] % 32 == 0
    assert b.image.shape[0] == 2 and b.valid.sum() == len(b.ids)
    for row, rid in enumerate(b.ids):
      i = int(rid[1:])
      h, w = Mixed.shapes[i]
      assert (b.heights[row], b.widths[row]) == (h, w)
      assert (b.image[row, :h, :w] == i).all() and b.image[row, h:].sum() == 0


def test_synthetic_source_is_deterministic_with_exact_masks():
  src = synthetic.SyntheticSource('train', 4, seed=1, cfg=synthetic.SceneConfig(image_size=64))
  again = synthetic.SyntheticSource('train', 4, seed=1, cfg=synthetic.SceneConfig(image_size=64))
  for i in range(4):
    np.testing.assert_array_equal(src[i]['image'], again[i]['image'])
    np.testing.assert_array_equal(src[i]['mask'], again[i]['mask'])
  other = synthetic.SyntheticSource('test', 4, seed=1, cfg=synthetic.SceneConfig(image_size=64))
  assert not np.array_equal(src[0]['image'], other[0]['image'])


def test_synthetic_targets_are_small_and_counted():
  from scipy import ndimage
  src = synthetic.SyntheticSource('train', 40, seed=0, cfg=synthetic.SceneConfig(image_size=96))
  areas, counts = [], []
  for i in range(len(src)):
    labels, n = ndimage.label(src[i]['mask'][..., 0], np.ones((3, 3)))
    counts.append(n)
    areas += list(np.bincount(labels.ravel())[1:])
  assert min(counts) == 0 and max(counts) <= 3 and sum(counts) > 20
  assert 1 <= min(areas) and max(areas) <= 81 + 6  # half-max area of 81 px, pixelised


def test_synthetic_clutter_smaller_than_a_target_is_refused():
  with pytest.raises(ValueError, match='smallest clutter structure'):
    synthetic.SceneConfig(structure_long_sigma=(4.0, 8.0), structure_short_sigma=(2.0, 3.0))


def _brute_force_padding(shapes, max_shapes, multiple=32):
  """Smallest total padded area of any assignment to <= max_shapes buckets (tiny inputs)."""
  import itertools
  padded = [(eb.round_up(h, multiple), eb.round_up(w, multiple)) for h, w in shapes]
  best = None
  for labels in itertools.product(range(max_shapes), repeat=len(padded)):
    area = 0
    for k in set(labels):
      members = [s for s, lab in zip(padded, labels) if lab == k]
      h, w = max(m[0] for m in members), max(m[1] for m in members)
      area += len(members) * h * w
    best = area if best is None else min(best, area)
  return best


def test_size_buckets_bound_the_shapes_hold_every_image_and_pad_little():
  rng = np.random.default_rng(0)
  shapes = [tuple(int(v) for v in rng.integers(20, 300, 2)) for _ in range(40)]
  unbounded = eb.size_buckets(shapes, max_shapes=None)
  assert unbounded == [(eb.round_up(h, 32), eb.round_up(w, 32)) for h, w in shapes]
  for bound in (1, 2, 4, 8):
    keys = eb.size_buckets(shapes, max_shapes=bound)
    assert len(set(keys)) <= bound
    for (h, w), (hb, wb) in zip(shapes, keys):
      assert hb >= h and wb >= w and hb % 32 == 0 and wb % 32 == 0
  one = eb.size_buckets(shapes, max_shapes=1)
  assert set(one) == {(max(u[0] for u in unbounded), max(u[1] for u in unbounded))}
  # Order does not matter: each size gets the same bucket in any order.
  order = rng.permutation(len(shapes))
  shuffled = eb.size_buckets([shapes[i] for i in order], max_shapes=4)
  assert shuffled == [eb.size_buckets(shapes, max_shapes=4)[i] for i in order]
  # Greedy merging stays close to the best assignment on a small case.
  small = [(30, 30), (60, 40), (40, 70), (100, 100), (130, 90), (250, 260), (240, 250)]
  area = sum(h * w for h, w in eb.size_buckets(small, max_shapes=3))
  assert area <= 1.15 * _brute_force_padding(small, 3)


def test_eval_batches_respect_max_shapes():
  shapes = [(20, 30), (64, 64), (100, 30), (33, 10), (200, 64), (20, 31), (150, 150)]

  class Source:
    def __len__(self):
      return len(shapes)

    def __getitem__(self, i):
      h, w = shapes[i]
      return {'image': np.full((h, w, 1), i + 1, np.uint8),
              'mask': np.zeros((h, w, 1), np.uint8), 'id': f'm{i}'.encode()}

  batches = eb.eval_batches(Source(), batch_size=2, max_shapes=2)
  assert len({b.image.shape[1:3] for b in batches}) <= 2
  assert sorted(i for b in batches for i in b.ids) == sorted(f'm{i}' for i in range(7))
  for b in batches:
    for row, rid in enumerate(b.ids):
      h, w = shapes[int(rid[1:])]
      assert (b.heights[row], b.widths[row]) == (h, w)
      assert b.image[row, h:].sum() == 0 and b.image[row, :, w:].sum() == 0
