"""A few sharded train steps on a fixed global batch; prints losses and outputs as JSON.

Single process:  python multiprocess_steps.py REPO
Process i of 2:  python multiprocess_steps.py REPO localhost:PORT 2 i
Each process feeds only its own rows of the global batch, as main.py does.
"""
import json
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

sys.path.insert(0, sys.argv[1])
from irstd_jax import distributed  # pylint: disable=g-import-not-at-top

if len(sys.argv) > 2:
  distributed.initialize(coordinator_address=sys.argv[2], num_processes=int(sys.argv[3]),
                         process_id=int(sys.argv[4]))

from configs import synthetic  # pylint: disable=g-import-not-at-top
from irstd_jax import eval_batching, evaluate, train, train_state  # pylint: disable=g-import-not-at-top


def main():
  config = synthetic.get_config()
  config.model.widths = (4, 8, 8, 16, 16)
  config.loss.scale_weight = 'variance'
  # PyTorch's zero initial accumulator makes Adagrad's first step lr * g / |g|: for
  # parameters whose gradient is ~0 (rounding noise) that is +-lr in a direction set by
  # the noise, so two reduction orders would diverge for reasons unrelated to sharding.
  # A non-zero accumulator keeps the update a smooth function of g.
  config.optim.initial_accumulator_value = 0.1
  mesh = train_state.make_mesh()
  tx = train_state.make_optimizer(config.optim, num_steps=3)
  graphdef, state, shardings = train_state.create_train_state(config, mesh, tx)
  rng = np.random.default_rng(0)
  image = rng.integers(0, 80, (4, 32, 32, 1), dtype=np.uint8)
  mask = np.zeros((4, 32, 32, 1), np.uint8)
  for b in range(4):
    mask[b, 8 + 3 * b:11 + 3 * b, 10:12 + b] = 1
  image[mask > 0] = 250
  rows = 4 // jax.process_count()
  lo = jax.process_index() * rows
  data = NamedSharding(mesh, P('data'))
  batch = {k: jax.make_array_from_process_local_data(data, v[lo:lo + rows])
           for k, v in (('image', image), ('mask', mask))}
  step = train.make_train_step(config, graphdef, tx, mesh, shardings, warmup_steps=0)
  seen = []
  for _ in range(3):
    state, metrics = step(state, batch)
    seen.append(float(metrics.compute()['loss']))
  config.eval.batch_size = 4
  evaluator = evaluate.Evaluator(config, graphdef, mesh, shardings)
  eval_batch = eval_batching.EvalBatch(image=image, mask=mask, valid=np.ones(4, bool),
                                        heights=np.full(4, 32), widths=np.full(4, 32),
                                        ids=['a', 'b', 'c', 'd'])
  logits = evaluator.predict_logits(state, eval_batch)
  print('RESULT ' + json.dumps({'process': jax.process_index(), 'devices': jax.device_count(),
                                'losses': seen, 'logits': logits.ravel()[::37].tolist()}))


if __name__ == '__main__':
  main()
