"""Is the input pipeline fast enough? Its images/s beside the train step's, same machine.

    python -m benchmarks.pipeline                               # synthetic 256x256 scenes
    python -m benchmarks.pipeline --dataset=nudt_sirst --manual_dir=../shared/data/NUDT-SIRST

Measures, in one run:
  * the grain training pipeline (the MSHNet augmentation: flip, long-side resize, pad,
    crop, blur) at `--workers` = 0 (in-process) and each value given, in images/s;
  * the jitted train step of the configured model at the same crop and batch size, in
    images/s (median over `--steps` steps after compilation);
and prints the ratio pipeline / train step: above 1 the pipeline is not the bottleneck.
Writes everything to `--json` too.
"""
import json
import os
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np

from configs import base
from irstd_jax import datasets
from irstd_jax import input_pipeline
from irstd_jax import train
from irstd_jax import train_state

_DATASET = flags.DEFINE_string('dataset', 'synthetic', "'synthetic' or a TFDS builder name.")
_MANUAL_DIR = flags.DEFINE_string('manual_dir', '', 'Raw files of a real dataset.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'TFDS data dir (built files).')
_BATCHES = flags.DEFINE_integer('batches', 60, 'Pipeline batches to time per setting.')
_WORKERS = flags.DEFINE_list('workers', ['2'], 'grain worker counts to time besides 0.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Train steps to time.')
_WIDTHS = flags.DEFINE_list('widths', ['16', '32', '64', '128', '256'], 'MSHNet widths.')
_JSON = flags.DEFINE_string('json', '', 'Where to write the results (optional).')


def _config():
  config = base.get_config()
  config.data.name = _DATASET.value
  config.data.manual_dir = _MANUAL_DIR.value
  config.data.data_dir = _DATA_DIR.value
  config.data.synthetic.num_train = 400
  config.model.widths = tuple(int(w) for w in _WIDTHS.value)
  return config


def pipeline_rate(config, source, workers: int) -> float:
  schedule = input_pipeline.TrainSchedule(len(source), config.train.batch_size, 1000)
  dataset = input_pipeline.train_dataset(
      source, schedule=schedule, seed=0,
      cfg=input_pipeline.AugmentConfig.from_config(config.data))
  batches = input_pipeline.train_iterator(dataset, worker_count=workers)
  for _ in range(3):  # start-up (worker processes, first reads) is not the steady rate
    next(batches)
  t0 = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(batches)
  return _BATCHES.value * config.train.batch_size / (time.perf_counter() - t0)


def train_step_rate(config) -> float:
  mesh = train_state.make_mesh()
  tx = train_state.make_optimizer(config.optim)
  graphdef, state, shardings = train_state.create_train_state(config, mesh, tx)
  step = train.make_train_step(config, graphdef, tx, mesh, shardings, warmup_steps=0)
  size, batch = config.data.crop_size, config.train.batch_size
  rng = np.random.default_rng(0)
  inputs = {'image': rng.integers(0, 255, (batch, size, size, 1), dtype=np.uint8),
            'mask': (rng.random((batch, size, size, 1)) > 0.999).astype(np.uint8)}
  state, metrics = step(state, inputs)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    state, metrics = step(state, inputs)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  return batch / statistics.median(times)


def main(argv):
  del argv
  config = _config()
  source = datasets.load_split(config.data, 'train')
  results = {'dataset': config.data.name, 'crop': config.data.crop_size,
             'batch': config.train.batch_size, 'cpu_count': os.cpu_count(),
             'load_average_before': os.getloadavg()[0],
             'devices': [str(d) for d in jax.devices()]}
  rates = {0: pipeline_rate(config, source, 0)}
  for workers in (int(w) for w in _WORKERS.value):
    if workers > 0:
      rates[workers] = pipeline_rate(config, source, workers)
  results['pipeline_images_per_sec'] = {str(k): v for k, v in rates.items()}
  results['train_step_images_per_sec'] = train_step_rate(config)
  results['load_average_after'] = os.getloadavg()[0]
  consume = results['train_step_images_per_sec']
  print(f"\n{config.data.name}, {config.data.crop_size}x{config.data.crop_size} crops, "
        f"batch {config.train.batch_size}, widths {config.model.widths}, {jax.devices()[0]}")
  print(f"{'':28}{'images/s':>10}{'vs train step':>15}")
  print(f"{'train step (consumes)':28}{consume:>10.1f}{1.0:>15.2f}")
  for workers, rate in rates.items():
    print(f"{'pipeline, ' + str(workers) + ' workers':28}{rate:>10.1f}{rate / consume:>15.2f}")
  print(f"(load average {results['load_average_before']:.2f} before, "
        f"{results['load_average_after']:.2f} after)")
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)
