"""Crashes and preemption through the real entry point (main.py in a subprocess).

* SIGKILL mid-training, then a rerun in the same workdir, ends with exactly the
  parameters of an uninterrupted run (bitwise: CPU XLA is deterministic and the input
  pipeline is a pure function of (seed, step)).
* SIGTERM writes a checkpoint at the step it arrived and exits with 143.
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
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
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
  assert not (tmp_path / 'eval_results.json').exists()
  err = _run(tmp_path, '--config.train.checkpoint_every_steps=5')
  assert 'Restored checkpoint at step' in err
  _assert_same_params(uninterrupted, tmp_path)
  assert ((tmp_path / 'eval_results.json').read_text()
          == (uninterrupted / 'eval_results.json').read_text())


def test_sigterm_saves_the_step_it_arrived_at(tmp_path):
  proc = _start(tmp_path, '--config.train.checkpoint_every_steps=1000',
                '--config.train.num_epochs=200')
  _wait_for(tmp_path / 'checkpoints', proc)
  time.sleep(8)  # well into training (compilation included)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-3000:]
  step = int(re.search(r'preempted at step (\d+)', err).group(1))
  assert 0 < step < 800
  saved = sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())
  assert saved == [step]


def test_unreadable_latest_checkpoint_falls_back_to_the_previous(uninterrupted, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(uninterrupted, workdir)
  (workdir / 'eval_results.json').unlink()
  latest = workdir / 'checkpoints' / str(STEPS) / 'default'
  for f in latest.rglob('*'):
    if f.is_file():
      f.write_bytes(b'\0garbage')
  err = _run(workdir, '--config.train.checkpoint_every_steps=5')
  assert re.search(rf'checkpoint at step {STEPS} .*cannot be restored', err)
  assert f'Restored checkpoint at step {STEPS - 5}' in err
  assert (workdir / 'checkpoints_unreadable' / str(STEPS)).is_dir()
  _assert_same_params(uninterrupted, workdir)
