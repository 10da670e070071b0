"""Data parallelism: 8 (fake CPU) devices compute what 1 device computes."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from irstd_jax import train_state

REPO = pathlib.Path(__file__).resolve().parents[1]


# Slow: a fresh process compiles the losses and a full train step for 1 and 8 devices
# (824 s in the default suite on the 2-core CPU under load; `make test-all` runs it).
@pytest.mark.slow
def test_one_device_and_eight_devices_agree():
  # A fresh process: the device count is fixed when JAX starts.
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, str(REPO / 'tests/scripts/sharded_vs_single.py'), str(REPO)],
      env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')][-1]
  report = json.loads(line[len('RESULT '):])
  for name in ('sls', 'sd', 'diff'):  # SD's beta is a batch mean: global on both meshes
    r = report[name]
    assert r['loss_1'] == pytest.approx(r['loss_8'], rel=1e-5), (name, r)
    assert r['max_rel_grad_diff'] < 1e-3, (name, r)
    assert r['max_cancelled_bias_grad'] < 1e-5, (name, r)
  step = report['step']
  assert step['loss_1'] == pytest.approx(step['loss_8'], rel=1e-5), step
  assert step['params_compared'] > step['params_total'] // 2, step
  assert step['max_param_diff'] < 1e-4, step
  assert step['max_batch_stat_diff'] < 1e-4, step


def test_batch_that_does_not_divide_is_an_error():
  mesh = train_state.make_mesh()
  train_state.check_batch_divides(3, mesh, 'train')  # one device: anything divides
  fake = type('FakeMesh', (), {'devices': np.zeros(8)})()
  with pytest.raises(ValueError, match='does not divide over 8 devices'):
    train_state.check_batch_divides(12, fake, 'train')
