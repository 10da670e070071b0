"""Two real processes on localhost (jax.distributed, gloo CPU collectives) train together
and agree with a single process."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / 'tests/scripts/multiprocess_steps.py')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _result(stdout: str) -> dict:
  line = [l for l in stdout.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT '):])


# Slow: three processes each start JAX and compile a train step (603 s in the default suite
# on the 2-core CPU under load; `make test-all` runs it).
@pytest.mark.slow
def test_two_processes_agree_with_one():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  single = subprocess.run([sys.executable, SCRIPT, str(REPO)], env=env, capture_output=True,
                          text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  address = f'localhost:{_free_port()}'
  procs = [subprocess.Popen([sys.executable, SCRIPT, str(REPO), address, '2', str(i)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail('the two-process run did not finish')
    assert p.returncode == 0, err[-3000:]
    outs.append(_result(out))
  one = _result(single.stdout)
  assert one['devices'] == 1 and all(o['devices'] == 2 for o in outs)
  assert [o['process'] for o in outs] == [0, 1]
  # Both processes hold the same replicated result...
  assert outs[0]['losses'] == outs[1]['losses'] and outs[0]['logits'] == outs[1]['logits']
  # ...which is the single-process one up to the order of the batch reductions.
  np.testing.assert_allclose(outs[0]['losses'], one['losses'], rtol=1e-5)
  np.testing.assert_allclose(outs[0]['logits'], one['logits'], rtol=1e-3, atol=1e-3)
