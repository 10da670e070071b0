"""Crashes and preemption through the real entry point (main.py in a subprocess).

* SIGKILL mid-training, then a rerun in the same workdir, ends with exactly the
  parameters of an uninterrupted run (bitwise: CPU XLA is deterministic and the input
  pipeline is a pure function of (seed, step)).
* SIGTERM writes a checkpoint at the step it arrived and exits with 143; Ctrl-C (SIGINT)
  does the same and exits with 130, and the rerun ends with the uninterrupted results.
  Signals are sent once a progress line names a step (no sleeps).
* An unreadable latest checkpoint is skipped with a warning; the run resumes from the
  previous one and still ends with the same parameters.
"""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# Training's record of its last checkpoint (irstd_jax/eval_outputs.py).
LAST_RESULTS = pathlib.Path('eval_test_basicirstd_last') / 'eval_results.json'
STEPS = 40  # 16 images / batch 4 = 4 steps per epoch, 10 epochs
TINY = [
    '--config=configs/synthetic.py',
    '--config.model.widths=(4,8,8,16,16)',
    '--config.data.synthetic.image_size=32',
    '--config.data.synthetic.num_train=16',
    '--config.data.synthetic.num_test=4',
    '--config.data.crop_size=32',
    '--config.data.resize_range=(24,48)',
    '--config.train.num_epochs=10',
    '--config.train.warm_epochs=1',
    '--config.train.log_every_steps=5',
    '--config.train.eval_every_epochs=0',
    '--config.eval.batch_size=4',
    f'--compilation_cache={REPO / ".jax_cache"}',
]


def _start(workdir, *extra):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  return subprocess.Popen([sys.executable, 'main.py', f'--workdir={workdir}', *TINY, *extra],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _run(workdir, *extra):
  proc = _start(workdir, *extra)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return err


def _final_params(workdir, step=STEPS):
  tree = ocp.StandardCheckpointer().restore(
      str(pathlib.Path(workdir) / 'checkpoints' / str(step) / 'default'))
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(tree['params'])}


def _wait_for(path: pathlib.Path, proc, timeout=300):
  deadline = time.monotonic() + timeout
  while not path.exists():
    assert proc.poll() is None, 'the run ended before the expected checkpoint appeared'
    assert time.monotonic() < deadline, f'{path} never appeared'
    time.sleep(0.02)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  _run(workdir, '--config.train.checkpoint_every_steps=5')
  return workdir


def _assert_same_params(a, b):
  pa, pb = _final_params(a), _final_params(b)
  assert pa.keys() == pb.keys()
  for k in pa:
    np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


def test_sigkill_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
  proc = _start(tmp_path, '--config.train.checkpoint_every_steps=5')
  # A finished checkpoint directory only appears once Orbax has committed it.
  _wait_for(tmp_path / 'checkpoints' / '10' / 'commit_success.txt', proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert not (tmp_path / LAST_RESULTS).exists()
  err = _run(tmp_path, '--config.train.checkpoint_every_steps=5')
  assert 'Restored checkpoint at step' in err
  _assert_same_params(uninterrupted, tmp_path)
  assert ((tmp_path / LAST_RESULTS).read_text()
          == (uninterrupted / LAST_RESULTS).read_text())


class _StderrWatch:
  """Reads a child's stderr on a thread; `wait_for(pattern)` blocks until a line matches."""

  def __init__(self, proc):
    self.lines = []
    self._new_line = threading.Condition()
    self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
    self._thread.start()

  def _read(self, stream):
    for line in stream:
      with self._new_line:
        self.lines.append(line)
        self._new_line.notify_all()
    with self._new_line:
      self.lines.append(None)  # end of stream
      self._new_line.notify_all()

  def wait_for(self, pattern, timeout=300):
    deadline = time.monotonic() + timeout
    seen = 0
    with self._new_line:
      while True:
        for line in self.lines[seen:]:
          assert line is not None, 'the run ended before: ' + ''.join(self.lines[-20:-1])
          if re.search(pattern, line):
            return line
        seen = len(self.lines)
        left = deadline - time.monotonic()
        assert left > 0, f'no line matched {pattern!r} in {timeout} s'
        self._new_line.wait(left)

  def text(self):
    self._thread.join(timeout=60)
    return ''.join(line for line in self.lines if line is not None)


def _interrupt_mid_training(workdir, signum, *extra):
  """Starts a run, signals it once a progress line names a step, returns (proc, stderr)."""
  proc = _start(workdir, *extra)
  watch = _StderrWatch(proc)
  watch.wait_for(r'\] step 5/')  # training is under way (compiled, checkpointing)
  proc.send_signal(signum)
  proc.wait(timeout=300)
  return proc, watch.text()


def _saved_steps(workdir):
  return sorted(int(d) for d in os.listdir(workdir / 'checkpoints') if d.isdigit())


def test_sigterm_saves_the_step_it_arrived_at(tmp_path):
  proc, err = _interrupt_mid_training(tmp_path, signal.SIGTERM,
                                      '--config.train.checkpoint_every_steps=1000',
                                      '--config.train.num_epochs=200')
  assert proc.returncode == 143, err[-3000:]
  step = int(re.search(r'SIGTERM at step (\d+): checkpoint saved', err).group(1))
  assert 5 <= step < 800
  assert _saved_steps(tmp_path) == [step]


def test_ctrl_c_saves_exits_130_and_the_rerun_ends_as_if_uninterrupted(uninterrupted,
                                                                       tmp_path):
  proc, err = _interrupt_mid_training(tmp_path, signal.SIGINT,
                                      '--config.train.checkpoint_every_steps=5')
  assert proc.returncode == 130, err[-3000:]
  assert 'Traceback' not in err and 'KeyboardInterrupt' not in err
  lines = [l for l in err.splitlines() if 'Ctrl-C (SIGINT) at step' in l]
  assert len(lines) == 1, err[-3000:]  # one line says what happened
  step = int(re.search(r'at step (\d+): checkpoint saved', lines[0]).group(1))
  assert 5 <= step < STEPS
  assert _saved_steps(tmp_path)[-1] == step
  assert (tmp_path / 'checkpoints' / str(step) / 'commit_success.txt').exists()
  assert not (tmp_path / LAST_RESULTS).exists()
  err = _run(tmp_path, '--config.train.checkpoint_every_steps=5')
  assert f'Restored checkpoint at step {step}' in err
  _assert_same_params(uninterrupted, tmp_path)
  assert ((tmp_path / LAST_RESULTS).read_text()
          == (uninterrupted / LAST_RESULTS).read_text())


def test_unreadable_latest_checkpoint_falls_back_to_the_previous(uninterrupted, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(uninterrupted, workdir)
  (workdir / LAST_RESULTS).unlink()
  latest = workdir / 'checkpoints' / str(STEPS) / 'default'
  for f in latest.rglob('*'):
    if f.is_file():
      f.write_bytes(b'\0garbage')
  err = _run(workdir, '--config.train.checkpoint_every_steps=5')
  assert re.search(rf'checkpoint at step {STEPS} .*cannot be restored', err)
  assert f'Restored checkpoint at step {STEPS - 5}' in err
  assert (workdir / 'checkpoints_unreadable' / str(STEPS)).is_dir()
  _assert_same_params(uninterrupted, workdir)
