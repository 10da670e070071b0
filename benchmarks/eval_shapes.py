"""Evaluation of a mixed-size split against a same-size split of equal pixel count.

    python -m benchmarks.eval_shapes                       # full MSHNet, 48 images
    python -m benchmarks.eval_shapes --model=synthetic     # the demo's half-width model
    python -m benchmarks.eval_shapes --max_shapes=2,4 --unbounded

Each variant runs `evaluate.Evaluator.evaluate` (the code `--mode=eval` and in-training
validation run) on random weights, from a cold compilation cache: the persistent cache is
off and JAX's in-memory caches are cleared before each variant, so every padded shape is
compiled as a first `--mode=eval` would. The mixed split's sizes are drawn once
(deterministically) with both sides in [--min_side, --max_side], like the frames of a real
dataset of several cameras; the same-size split holds square images of --same_side with
(about) the same total number of pixels. Prints seconds, compiled shapes and the ratio
mixed / same-size for each bound on the shapes (`eval.max_shapes`); `--unbounded` adds the
old behaviour (one shape per size rounded up to 32). The target is a ratio within 2x.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from irstd_jax.eval_batching import round_up


def _cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


class ArraySource:
  """Random grey images of the given sizes with one bright 3x3 target each."""

  def __init__(self, shapes, seed: int):
    self.shapes = list(shapes)
    self.seed = seed

  def __len__(self):
    return len(self.shapes)

  def __getitem__(self, index):
    h, w = self.shapes[index]
    rng = np.random.default_rng([self.seed, index])
    image = rng.integers(0, 120, (h, w, 1), dtype=np.uint8)
    mask = np.zeros((h, w, 1), np.uint8)
    y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
    image[y:y + 3, x:x + 3] = 250
    mask[y:y + 3, x:x + 3] = 1
    return {'image': image, 'mask': mask, 'id': f'{index:04d}'.encode()}


def mixed_shapes(num_images: int, lo: int, hi: int, seed: int = 0) -> list[tuple[int, int]]:
  rng = np.random.default_rng(seed)
  return [(int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)))
          for _ in range(num_images)]


def time_evaluation(config, source, max_shapes) -> tuple[float, int]:
  """(seconds, compiled shapes) of one cold evaluation of `source`."""
  import jax  # pylint: disable=g-import-not-at-top
  from irstd_jax import evaluate  # pylint: disable=g-import-not-at-top
  from irstd_jax import train_state  # pylint: disable=g-import-not-at-top
  jax.clear_caches()
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.eval.max_shapes = max_shapes
  mesh = train_state.make_mesh()
  tx = train_state.make_optimizer(config.optim, train_state.STATE_ONLY)
  graphdef, state, shardings = train_state.create_train_state(config, mesh, tx)
  jax.block_until_ready(state)
  evaluator = evaluate.Evaluator(config, graphdef, mesh, shardings)
  t0 = time.perf_counter()
  evaluator.evaluate(state, source)
  seconds = time.perf_counter() - t0
  shapes = {b.image.shape[1:3] for batches in evaluator._batches.values()  # pylint: disable=protected-access
            for b in batches}
  return seconds, len(shapes)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.eval_shapes',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', choices=('full', 'synthetic'), default='full',
                      help='full: configs/base.py MSHNet; synthetic: the demo half width')
  parser.add_argument('--num_images', type=int, default=48)
  parser.add_argument('--min_side', type=int, default=128)
  parser.add_argument('--max_side', type=int, default=416)
  parser.add_argument('--same_side', type=int, default=256)
  parser.add_argument('--max_shapes', default='4', help='comma-separated bounds to time')
  parser.add_argument('--unbounded', action='store_true',
                      help='also time one shape per size rounded to 32 (the old behaviour)')
  parser.add_argument('--batch_size', type=int, default=4)
  args = parser.parse_args(argv)

  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_enable_compilation_cache', False)  # a cold start every time
  from configs import base  # pylint: disable=g-import-not-at-top
  config = base.get_config()
  if args.model == 'synthetic':
    config.model.widths = (8, 16, 32, 64, 128)
  config.eval.batch_size = args.batch_size

  shapes = mixed_shapes(args.num_images, args.min_side, args.max_side)
  pixels = sum(h * w for h, w in shapes)
  same_count = max(1, round(pixels / args.same_side ** 2))
  same = ArraySource([(args.same_side, args.same_side)] * same_count, seed=1)
  mixed = ArraySource(shapes, seed=0)
  distinct = len({(round_up(h, 32), round_up(w, 32)) for h, w in shapes})
  print(f'{_cpu_name()} | {jax.device_count()} {jax.devices()[0].platform} device(s) | '
        f'{os.cpu_count()} CPUs | load {os.getloadavg()[0]:.2f} | model {args.model}')
  print(f'mixed: {len(shapes)} images, sides {args.min_side}-{args.max_side}, '
        f'{distinct} sizes rounded to 32, {pixels / 1e6:.2f} Mpx | same-size: {same_count} '
        f'x {args.same_side}x{args.same_side}, {same_count * args.same_side ** 2 / 1e6:.2f} Mpx')
  base_seconds, _ = time_evaluation(config, same, 1)
  print(f'same-size              {base_seconds:8.1f} s   1 shape')
  bounds = [int(b) for b in args.max_shapes.split(',') if b]
  variants = [(f'mixed, max_shapes={b}', b) for b in bounds]
  if args.unbounded:
    variants.append(('mixed, unbounded', None))
  for name, bound in variants:
    seconds, num = time_evaluation(config, mixed, bound)
    print(f'{name:<22} {seconds:8.1f} s {num:3d} shapes   ratio {seconds / base_seconds:.2f}x')
  print(f'load {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
  main()
