"""distributed.initialize: where the coordinates come from (flags, then JAX_* environment
variables, then auto-detection), checked on the call it makes and on two real processes."""
import os
import pathlib
import socket
import subprocess
import sys

import jax
import pytest

from irstd_jax import distributed

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV_NAMES = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')


@pytest.fixture
def calls(monkeypatch):
  """Records jax.distributed.initialize's arguments instead of connecting."""
  seen = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: seen.append(kwargs))
  # Leave this session's CPU collectives setting alone.
  monkeypatch.setattr(distributed, '_use_cpu_collectives_if_cpu', lambda: None)
  for name in ENV_NAMES:
    monkeypatch.delenv(name, raising=False)
  return seen


def test_coordinates_from_the_environment(calls, monkeypatch):
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'host0:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '4')
  monkeypatch.setenv('JAX_PROCESS_ID', '3')
  assert distributed.initialize() is True
  assert calls == [{'coordinator_address': 'host0:1234', 'num_processes': 4, 'process_id': 3}]


def test_flags_win_over_the_environment(calls, monkeypatch):
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'host0:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '4')
  monkeypatch.setenv('JAX_PROCESS_ID', '3')
  assert distributed.initialize(coordinator_address='host9:99', process_id=1)
  assert calls == [{'coordinator_address': 'host9:99', 'num_processes': 4, 'process_id': 1}]


def test_an_address_without_process_coordinates_is_an_error(calls, monkeypatch):
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'host0:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '4')
  with pytest.raises(ValueError, match='JAX_PROCESS_ID'):
    distributed.initialize()
  assert not calls


def test_no_coordinates_is_a_single_process_run_and_auto_detects_on_request(calls):
  assert distributed.initialize() is False and not calls
  assert distributed.initialize(auto=True) is True
  assert calls == [{}]  # JAX's own cluster detection


_CHILD = '''
import sys
sys.path.insert(0, sys.argv[1])
from irstd_jax import distributed
assert distributed.initialize()  # no arguments: the coordinates come from the environment
import jax, jax.numpy as jnp
from jax.experimental import multihost_utils
ids = multihost_utils.process_allgather(jnp.asarray([jax.process_index()]))
print('RESULT', jax.process_index(), jax.process_count(), jax.device_count(),
      ids.ravel().tolist())
'''


def test_two_processes_connect_from_environment_variables():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  procs = []
  for i in range(2):
    env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
               JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(i))
    env.pop('XLA_FLAGS', None)  # one CPU device per process
    procs.append(subprocess.Popen([sys.executable, '-c', _CHILD, str(REPO)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  results = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail('the two processes did not connect')
    assert p.returncode == 0, err[-3000:]
    results.append([l for l in out.splitlines() if l.startswith('RESULT ')][-1].split(' ', 1)[1])
  # Process i of 2, two devices in all, and a cross-process gather sees both.
  assert results == ['0 2 2 [0, 1]', '1 2 2 [0, 1]']
