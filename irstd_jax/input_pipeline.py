"""grain input pipeline: the training stream (MSHNet's augmentation, the run's schedule) and the
model's input normalisation. Evaluation batches are irstd_jax.eval_batching's.

Sources are random-access sequences of records {'image': uint8 [H, W, 1],
'mask': uint8 [H, W, 1] in {0, 1}, 'id': str | bytes}: the TFDS data sources and
`synthetic.SyntheticSource` alike.

Determinism. A training example is identified by its global position k = step *
global_batch + row. Which source index sits at k (a per-epoch permutation) and how it is
augmented (a generator seeded with (seed, k)) are pure functions of (seed, k). So:
  * the batch of step s is the same whatever the number of hosts or devices, and
    whatever step the run was resumed from: nothing about the pipeline needs saving;
  * each process computes only its own rows of every global batch (per-host sharding).

Images leave the pipeline as uint8 (4x less host->device traffic); the model's input
normalisation happens on the device (`normalize`).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import grain
import jax.numpy as jnp
from absl import flags
import numpy as np
from PIL import Image, ImageFilter

from irstd_jax.errors import UserError
from irstd_jax.eval_batching import as_2d


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """The MSHNet `_sync_transform` recipe (docs/method.md section 7)."""
  crop_size: int = 256
  resize_range: tuple[int, int] = (128, 512)  # long side, inclusive
  hflip_prob: float = 0.5
  blur_prob: float = 0.5
  blur_max_radius: float = 1.0

  @classmethod
  def from_config(cls, data_config) -> 'AugmentConfig':
    return cls(crop_size=data_config.crop_size,
               resize_range=tuple(data_config.resize_range),
               hflip_prob=data_config.hflip_prob,
               blur_prob=data_config.blur_prob,
               blur_max_radius=data_config.blur_max_radius)


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
            cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
  """Random flip, long-side resize, zero pad, crop and blur.

  Args:
    image: uint8 [H, W] or [H, W, 1].
    mask: uint8 [H, W] or [H, W, 1] in {0, 1}.
    rng: the example's own generator.
    cfg: augmentation settings.

  Returns:
    (image uint8 [S, S, 1], mask uint8 [S, S, 1]) with S = cfg.crop_size.
  """
  img = Image.fromarray(as_2d(image).astype(np.uint8), mode='L')
  msk = Image.fromarray(as_2d(mask).astype(np.uint8), mode='L')
  if rng.random() < cfg.hflip_prob:
    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    msk = msk.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  long_size = int(rng.integers(cfg.resize_range[0], cfg.resize_range[1] + 1))
  w, h = img.size
  if h > w:
    oh, ow = long_size, int(1.0 * w * long_size / h + 0.5)
  else:
    ow, oh = long_size, int(1.0 * h * long_size / w + 0.5)
  img = img.resize((ow, oh), Image.Resampling.BILINEAR)
  msk = msk.resize((ow, oh), Image.Resampling.NEAREST)
  crop = cfg.crop_size
  img_arr, msk_arr = np.asarray(img), np.asarray(msk)
  pad_h, pad_w = max(crop - oh, 0), max(crop - ow, 0)
  if pad_h or pad_w:  # zero pad at the bottom/right, as the reference does
    img_arr = np.pad(img_arr, ((0, pad_h), (0, pad_w)))
    msk_arr = np.pad(msk_arr, ((0, pad_h), (0, pad_w)))
  h, w = img_arr.shape
  y1 = int(rng.integers(0, h - crop + 1))
  x1 = int(rng.integers(0, w - crop + 1))
  img_arr = img_arr[y1:y1 + crop, x1:x1 + crop]
  msk_arr = msk_arr[y1:y1 + crop, x1:x1 + crop]
  if rng.random() < cfg.blur_prob:
    radius = float(rng.random()) * cfg.blur_max_radius
    img_arr = np.asarray(Image.fromarray(img_arr).filter(ImageFilter.GaussianBlur(radius)))
  return img_arr[..., None].astype(np.uint8), msk_arr[..., None].astype(np.uint8)


def is_warmup_step(step, warmup_steps: int):
  """Whether the 0-based step `step` (an int, or a traced array inside the train step) is a
  warm-up step: the warm-up rule, in its one place. Steps 0 .. warmup_steps - 1 are."""
  return step < warmup_steps


@dataclasses.dataclass(frozen=True)
class TrainSchedule:
  """How many steps a run takes and how they map onto epochs."""
  num_examples: int
  global_batch_size: int
  num_epochs: int
  # Epochs 0 .. warm_epochs - 1 are warm-up (soft IoU on the d0 head, no validation). The
  # reference tests `epoch > warm_epoch` with 0-based epochs, so its warm_epoch = 5 is
  # warm_epochs = 6 here (docs/method.md section 1).
  warm_epochs: int = 0

  def __post_init__(self):
    if self.num_examples < self.global_batch_size:
      raise UserError(
          f'the training split has {self.num_examples} images, fewer than one global '
          f'batch of {self.global_batch_size}', 'train.batch_size',
          f'use a batch of at most {self.num_examples} images, or more training data')

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self.global_batch_size  # the last partial batch is dropped

  @property
  def num_steps(self) -> int:
    return self.steps_per_epoch * self.num_epochs

  @property
  def warmup_steps(self) -> int:
    """Steps 0 .. warmup_steps - 1 (0-based, as `TrainState.step` counts) are warm-up."""
    return self.steps_per_epoch * self.warm_epochs

  def ends_warmup_epoch(self, done: int) -> bool:
    """Whether the epoch that ends once `done` steps are complete was a warm-up epoch."""
    return is_warmup_step(done - 1, self.warmup_steps)

  def validates_after(self, done: int, every_epochs: int) -> bool:
    """Whether the run validates once `done` steps are complete.

    At the end of every `every_epochs`-th epoch (counting from 1), except warm-up
    epochs: like the reference, which skips its test on the same boundary. 0 = never.
    """
    if not every_epochs or done % self.steps_per_epoch:
      return False
    return (done // self.steps_per_epoch) % every_epochs == 0 and not self.ends_warmup_epoch(done)


class _TrainExample:
  """Maps a global example position to its augmented record (picklable for workers)."""

  def __init__(self, source, schedule: TrainSchedule, seed: int, cfg: AugmentConfig,
               process_index: int, process_count: int):
    self.source = source
    self.schedule = schedule
    self.seed = seed
    self.cfg = cfg
    self.local_batch = schedule.global_batch_size // process_count
    self.process_index = process_index

  def position(self, local_position: int) -> int:
    step, row = divmod(local_position, self.local_batch)
    return (step * self.schedule.global_batch_size
            + self.process_index * self.local_batch + row)

  def source_index(self, k: int) -> int:
    per_epoch = self.schedule.steps_per_epoch * self.schedule.global_batch_size
    epoch, offset = divmod(k, per_epoch)
    permutation = np.random.default_rng([self.seed, 1, epoch]).permutation(
        self.schedule.num_examples)
    return int(permutation[offset])

  def __call__(self, local_position: int) -> dict:
    k = self.position(int(local_position))
    record = self.source[self.source_index(k)]
    rng = np.random.default_rng([self.seed, 2, k])
    image, mask = augment(record['image'], record['mask'], rng, self.cfg)
    return {'image': image, 'mask': mask}


def train_dataset(source: Sequence[dict], *, schedule: TrainSchedule, seed: int,
                  cfg: AugmentConfig, process_index: int = 0,
                  process_count: int = 1) -> grain.MapDataset:
  """The training stream as a random-access dataset of this process's batches.

  Item s is this process's rows of the global batch of step s:
  {'image': uint8 [L, S, S, 1], 'mask': uint8 [L, S, S, 1]}, L = global / process_count.
  """
  if schedule.global_batch_size % process_count:
    raise ValueError(f'global batch {schedule.global_batch_size} does not divide over '
                     f'{process_count} processes')
  example = _TrainExample(source, schedule, seed, cfg, process_index, process_count)
  local_batch = schedule.global_batch_size // process_count
  return (grain.MapDataset.range(schedule.num_steps * local_batch)
          .map(example)
          .batch(local_batch, drop_remainder=True))


def train_iterator(dataset: grain.MapDataset, *, start_step: int = 0,
                   worker_count: int = 0, prefetch: int = 2) -> Iterator[dict]:
  """Iterates batches from `start_step` on, with `worker_count` grain processes."""
  ds = dataset[start_step:].to_iter_dataset(
      grain.ReadOptions(num_threads=max(prefetch, 1), prefetch_buffer_size=prefetch))
  if worker_count > 0:
    # grain's worker start-up reads its absl flags, which raises UnparsedFlagAccessError
    # unless absl parsed the command line (main.py does; a notebook, a test or another
    # program need not): take grain's defaults then, as main.py would.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(ds)


def normalize(image: jnp.ndarray, mean: float, std: float) -> jnp.ndarray:
  """uint8 [..., H, W, 1] -> float32, (x / 255 - mean) / std."""
  return (image.astype(jnp.float32) / 255.0 - mean) / std
