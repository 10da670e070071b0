"""Multi-host start-up on JAX's own distributed runtime.

Each process of a pod (or of several GPU hosts) runs the same `main.py`; this module
connects them before any JAX computation, after which `jax.devices()` lists every device
of every host and the train step's mesh spans them all.

Where the coordinates come from, first match wins:
  1. flags: --coordinator_address=host:port --num_processes=N --process_id=I;
  2. environment: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID;
  3. --distributed=auto: JAX's cluster auto-detection (Cloud TPU pods, SLURM, Open MPI,
     Kubernetes JobSets), which needs no coordinates at all.
Otherwise the run is single-process.
"""
import os

import jax
from absl import logging


def initialize(*, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> bool:
  """Connects this process to the others; returns whether the run is distributed."""
  env = os.environ
  coordinator_address = coordinator_address or env.get('JAX_COORDINATOR_ADDRESS')
  if coordinator_address:
    if num_processes is None and 'JAX_NUM_PROCESSES' in env:
      num_processes = int(env['JAX_NUM_PROCESSES'])
    if process_id is None and 'JAX_PROCESS_ID' in env:
      process_id = int(env['JAX_PROCESS_ID'])
    if num_processes is None or process_id is None:
      raise ValueError('a coordinator address needs --num_processes and --process_id '
                       '(or JAX_NUM_PROCESSES and JAX_PROCESS_ID)')
    _use_cpu_collectives_if_cpu()
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif auto:
    _use_cpu_collectives_if_cpu()
    jax.distributed.initialize()
  else:
    return False
  logging.info('process %d of %d; %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def _use_cpu_collectives_if_cpu() -> None:
  # Cross-process computations on CPU devices need a collectives backend; GPUs and TPUs
  # bring their own (NCCL, ICI). Setting it is harmless where CPUs are not used.
  if os.environ.get('JAX_PLATFORMS', '').startswith('cpu'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
