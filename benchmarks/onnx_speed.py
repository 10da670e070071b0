"""Inference speed of the ONNX export in onnxruntime (CPU) next to JAX, same weights.

    python -m benchmarks.onnx_speed                               # synthetic default model
    python -m benchmarks.onnx_speed --config=configs/full_model.py --size=256 --batch=4
    python -m benchmarks.onnx_speed --config=configs/synthetic.py --workdir=runs/synthetic

Needs the optional extra (pip install -r requirements-onnx.txt). The model is the run's
checkpoint with `--workdir`, else a random initialisation of `--config`'s model (speed
does not depend on the weights). Both sides run the same function on the same uint8
batch: JAX jitted (`tools.export.inference_function`, what jax.export serialises) and the
graph `tools/onnx_export.py` converts from it, in onnxruntime with its default CPU
options (all optimisations, one thread per core). Reported: the median time per batch
over `--steps` runs after `--warmup` runs, images/s, onnxruntime's speed relative to JAX,
the first call (compile / session creation), and the largest logit difference. Results
also go to benchmarks/results/onnx_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _median_seconds(fn, warmup: int, steps: int) -> tuple[float, float]:
  """(first call seconds, median of `steps` later calls)."""
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  for _ in range(max(warmup - 1, 0)):
    fn()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.onnx_speed',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/synthetic.py')
  parser.add_argument('--workdir', default=None, help='a run to restore (else random init)')
  parser.add_argument('--size', type=int, default=256, help='height = width (multiple of 32)')
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--json', default=os.path.join(_REPO, 'benchmarks', 'results',
                                                     'onnx_speed.json'))
  args = parser.parse_args(argv)
  if args.size % 32:
    parser.error(f'--size={args.size}: must be a multiple of 32')
  try:
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  except ImportError:
    parser.error('needs the optional extra: pip install -r requirements-onnx.txt')
  import jax  # pylint: disable=g-import-not-at-top
  # The parser behind --config: the same 'path.py[:arg]' syntax as main.py.
  from ml_collections.config_flags import config_flags as config_file_parser  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, _REPO)  # configs import `configs.base`
  from irstd_jax import train_state  # pylint: disable=g-import-not-at-top
  from irstd_jax.tools import export as export_tool  # pylint: disable=g-import-not-at-top
  from irstd_jax.tools import onnx_export  # pylint: disable=g-import-not-at-top

  config = config_file_parser.ConfigFileFlagParser(name='config').parse(args.config)
  load_before = os.getloadavg()
  if args.workdir:
    from irstd_jax import checkpointing  # pylint: disable=g-import-not-at-top
    run = checkpointing.restore_run(config, args.workdir)
    graphdef, (treedef, weights) = run.graphdef, export_tool.model_weights(run.state)
    source = f'{args.workdir} step {run.step}'
  else:
    mesh = train_state.make_mesh()
    graphdef, state, _ = train_state.create_train_state(
        config, mesh, train_state.make_optimizer(config.optim, train_state.STATE_ONLY))
    treedef, weights = export_tool.model_weights(state)
    source = 'random init'
  infer = export_tool.inference_function(config, graphdef, treedef, pad=False)
  images = np.random.default_rng(0).integers(
      0, 256, (args.batch, args.size, args.size, 1), np.uint8)

  jitted = jax.jit(infer)
  device_weights = [jax.device_put(w) for w in weights]
  jax_out = {}

  def run_jax():
    jax_out['logits'] = np.asarray(jitted(device_weights, images))

  jax_first, jax_median = _median_seconds(run_jax, args.warmup, args.steps)

  t0 = time.perf_counter()
  model = onnx_export.to_onnx(infer, weights, height=args.size, width=args.size)
  convert_s = time.perf_counter() - t0
  ort_out = {}
  session = {}

  def run_ort():
    if 'session' not in session:
      session['session'] = ort.InferenceSession(model.SerializeToString(),
                                                providers=['CPUExecutionProvider'])
    ort_out['logits'] = session['session'].run(['logits'], {'images': images})[0]

  ort_first, ort_median = _median_seconds(run_ort, args.warmup, args.steps)
  diff = float(np.abs(ort_out['logits'] - jax_out['logits']).max())
  largest = float(np.abs(jax_out['logits']).max())
  rows = [('jax (jit, XLA CPU)', jax_first, jax_median),
          (f'onnxruntime {ort.__version__} CPU', ort_first, ort_median)]
  print(f'MSHNet widths {tuple(config.model.widths)}, {config.model.spatial_attention} '
        f'attention, {source}; batch {args.batch} x {args.size}x{args.size}; '
        f'{os.cpu_count()} CPUs, load {load_before[0]:.2f} before')
  print(f"{'runtime':<28}{'ms/batch':>10}{'img/s':>9}{'vs jax':>8}{'first call s':>14}")
  for name, first, median in rows:
    print(f'{name:<28}{1e3 * median:>10.1f}{args.batch / median:>9.1f}'
          f'{jax_median / median:>8.2f}{first:>14.1f}')
  print(f'ONNX conversion {convert_s:.1f} s; max |logit difference| {diff:.2e} (largest '
        f'|logit| {largest:.1f}); '
        f'load {os.getloadavg()[0]:.2f} after')
  result = {
      'config': args.config, 'widths': list(config.model.widths), 'weights': source,
      'batch': args.batch, 'size': args.size, 'steps': args.steps,
      'jax': {'version': jax.__version__, 'median_s': jax_median, 'first_call_s': jax_first},
      'onnxruntime': {'version': ort.__version__, 'median_s': ort_median,
                      'first_call_s': ort_first},
      'onnxruntime_speedup_vs_jax': jax_median / ort_median,
      'conversion_s': convert_s, 'max_abs_logit_diff': diff, 'max_abs_logit': largest,
      'cpu': platform.processor() or platform.machine(), 'cpus': os.cpu_count(),
      'load_before': load_before[0], 'load_after': os.getloadavg()[0],
  }
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == '__main__':
  main()
