"""Ctrl-C and SIGTERM: finish cleanly at the next safe point, lose no finished work.

Inside `StopRequests()`, the first SIGINT (Ctrl-C) or SIGTERM only sets a flag. Long loops
(training steps, evaluation batches, predicted images) look at it between units of work;
training then saves a checkpoint at the current step, evaluation stops, predict writes
what it finished, and each raises `Interrupted`. `main.py` prints its one line and exits
with 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a job
killed by that signal. A second Ctrl-C or SIGTERM aborts at once, saving nothing more.
"""
from __future__ import annotations

import os
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
  """Raised once the interrupted work's finished part is safely written.

  Attributes:
    signum: the signal that asked to stop.
    step: the training step of the saved checkpoint (None outside training).
  """

  def __init__(self, message: str, *, signum: int, step: int | None = None):
    super().__init__(message)
    self.signum = signum
    self.step = step

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


def signal_name(signum: int) -> str:
  return 'Ctrl-C (SIGINT)' if signum == signal.SIGINT else signal.Signals(signum).name


class StopRequests:
  """Context manager: records the first SIGINT/SIGTERM; the second one aborts at once.

  Nested uses share the outer one's state (the outer handlers stay installed). Outside the
  main thread (where Python cannot install handlers) it records nothing.
  """

  _active: 'StopRequests | None' = None

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}
    self._outer = None

  @property
  def requested(self) -> bool:
    return (self._outer or self).signum is not None

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      # The user insists: stop now. Whatever was saved before stays valid (Orbax commits a
      # checkpoint atomically); os._exit skips waiting for anything.
      sys.stderr.write(f'\n{signal_name(signum)} again: aborting at once\n')
      sys.stderr.flush()
      os._exit(128 + signum)  # pylint: disable=protected-access
    self.signum = signum

  def __enter__(self) -> 'StopRequests':
    if StopRequests._active is not None:
      self._outer = StopRequests._active
      return self._outer
    try:
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    except ValueError:  # not the main thread: no handlers
      self._previous = {}
      return self
    StopRequests._active = self
    return self

  def __exit__(self, *exc) -> None:
    if self._outer is not None:
      return
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}
    if StopRequests._active is self:
      StopRequests._active = None
