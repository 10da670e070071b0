"""Metric writers, progress reports, and the one way a run's JSON outputs are written.

`clu.metric_writers` and `clu.periodic_actions` import TensorFlow (and tensorboard) at
import time, and TensorFlow is not a dependency of this project. So the writer here
follows clu's `MetricWriter` interface (write_scalars / write_hparams / flush / close)
but writes TensorBoard event files with tensorboardX, which needs no TensorFlow. Only
process 0 writes files; every process logs.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
from absl import logging


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file: never a half-written file."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, payload: Any, *, indent: int = 2) -> None:
  """Writes `payload` as JSON to `path` through a temporary file (`write_text`)."""
  write_text(path, json.dumps(payload, indent=indent))


class _HideLibraryChatter(logging.logging.Filter):
  """Drops Orbax's per-save INFO lines so progress stays readable (warnings pass)."""

  def filter(self, record):
    return record.levelno >= logging.logging.WARNING or '/orbax/' not in record.pathname


def hide_library_chatter() -> None:
  """Keeps the absl log to what a person running a command should read."""
  logging.get_absl_handler().addFilter(_HideLibraryChatter())


class MetricWriter:
  """TensorBoard events in `workdir` (the callers log what a person should read)."""

  def __init__(self, workdir: str, *, just_logging: bool = False):
    self._tb = None
    if not just_logging:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      os.makedirs(workdir, exist_ok=True)
      self._tb = SummaryWriter(logdir=workdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    logging.debug('[%d] %s', step, ', '.join(f'{k}={float(v):.6g}' for k, v in scalars.items()))
    if self._tb is not None:
      for key, value in scalars.items():
        self._tb.add_scalar(key, float(value), global_step=step)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    if self._tb is not None:
      self._tb.add_text('config', '```\n' + json.dumps(hparams, indent=1, default=str) + '\n```')

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Flushes and closes the event file; later calls do nothing."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  # A context manager, so that a run that fails (a non-finite loss, a bug) still closes its
  # event file: tensorboardX otherwise closes it from an atexit hook, which on Python 3.12
  # fails ("can't create new thread at interpreter shutdown").
  def __enter__(self) -> 'MetricWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def create_default_writer(workdir: str) -> MetricWriter:
  return MetricWriter(workdir, just_logging=jax.process_index() > 0)


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h:d}:{m:02d}:{s:02d}' if h else f'{m:d}:{s:02d}'


class ProgressReport:
  """Logs step, epoch, images/s, elapsed and time left every `every_steps` steps.

  The first interval includes compilation, so the rate is measured from the step
  after the first report onward.
  """

  def __init__(self, *, num_steps: int, steps_per_epoch: int, global_batch_size: int,
               every_steps: int, writer: MetricWriter | None = None):
    self.num_steps = num_steps
    self.steps_per_epoch = steps_per_epoch
    self.global_batch_size = global_batch_size
    self.every_steps = max(every_steps, 1)
    self.writer = writer
    self._t0 = time.monotonic()
    self._last_time = None
    self._last_step = None

  def __call__(self, step: int, scalars: Mapping[str, float]) -> None:
    """Reports after `step` completed steps (1-based)."""
    if step % self.every_steps and step != self.num_steps:
      return
    now = time.monotonic()
    rate = None
    if self._last_time is not None and step > self._last_step:
      rate = (step - self._last_step) / (now - self._last_time)
    self._last_time, self._last_step = now, step
    epoch = step / self.steps_per_epoch
    parts = [f'step {step}/{self.num_steps}', f'epoch {epoch:.2f}']
    parts += [f'{k} {float(v):.4f}' for k, v in scalars.items()]
    if rate:
      parts.append(f'{rate * self.global_batch_size:.1f} img/s')
      parts.append(f'elapsed {_duration(now - self._t0)}')
      parts.append(f'left {_duration((self.num_steps - step) / rate)}')
    else:
      parts.append(f'elapsed {_duration(now - self._t0)} (incl. compile)')
    logging.info(' | '.join(parts))
    if self.writer is not None:
      extra = {'train_images_per_sec': rate * self.global_batch_size} if rate else {}
      self.writer.write_scalars(step, {**{f'train_{k}': v for k, v in scalars.items()}, **extra})
