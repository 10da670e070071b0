"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8.

For the same initial state and global batch, computes on a 1-device and an 8-device mesh:
the loss and its gradient for several losses, and one full train step (the real, sharded
`train.train_step`). Prints the largest differences as JSON for tests/test_sharding.py.
"""
import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

sys.path.insert(0, sys.argv[1])
from configs import synthetic  # pylint: disable=g-import-not-at-top
from irstd_jax import input_pipeline, losses, train, train_state  # pylint: disable=g-import-not-at-top

LOSSES = {
    'sls': dict(scale_weight='variance', location='mean'),
    'sd': dict(scale_weight='variance', location='mass', dynamic='sd'),
    'diff': dict(scale_weight='diff', location='mass'),
}


def make_batch():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 80, (8, 32, 32, 1), dtype=np.uint8)
  mask = np.zeros((8, 32, 32, 1), np.uint8)
  for b in range(8):  # a different target size per image: batch statistics matter
    y, x, s = rng.integers(2, 24), rng.integers(2, 24), b % 4 + 1
    mask[b, y:y + s, x:x + s] = 1
  image[mask > 0] = 250
  return {'image': image, 'mask': mask}


def flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(l)
          for p, l in jax.tree_util.tree_leaves_with_path(tree)}


def cancelled_by_batch_norm(name: str) -> bool:
  """A conv bias feeding a BatchNorm: the normalisation removes it, so its true gradient
  is exactly 0 and the computed one is rounding noise (compared in absolute terms)."""
  return "'bias'" in name and any(c in name for c in ("'conv1'", "'conv2'",
                                                       "'shortcut_conv'"))


def on_mesh(devices, batch):
  config = synthetic.get_config()
  config.model.widths = (4, 8, 8, 16, 16)
  # The paper's full model: the straight-through rotated pinwheel runs in the sharded step.
  config.model.spatial_attention = 'rotated_pinwheel'
  mesh = train_state.make_mesh(devices)
  tx = train_state.make_optimizer(config.optim, num_steps=1)  # gradients, then one step
  graphdef, state, shardings = train_state.create_train_state(config, mesh, tx)
  data = NamedSharding(mesh, P('data'))
  batch = {k: jax.device_put(v, data) for k, v in batch.items()}
  out = {}
  for name, kwargs in LOSSES.items():
    loss_fn = functools.partial(losses.mshnet_loss, **{**config.loss.to_dict(), **kwargs})

    def objective(params, image, mask, loss_fn=loss_fn):
      images = input_pipeline.normalize(image, 0.45, 0.23)
      fused, sides, _ = train_state.apply_model(graphdef, params, state.model_state, images,
                                                train=True)
      return loss_fn(fused, sides, mask.astype(jnp.float32), warmup=False)

    # The batch is an argument (a closed-over array would be baked in as a replicated
    # constant, and nothing would be sharded).
    loss, grads = jax.jit(jax.value_and_grad(objective))(state.params, batch['image'],
                                                         batch['mask'])
    out[name] = {'loss': float(loss), 'grads': flat(grads)}
  step = train.make_train_step(config, graphdef, tx, mesh, shardings, warmup_steps=0)
  new_state, metrics = step(state, batch)
  out['step'] = {'loss': float(metrics.compute()['loss']), 'params': flat(new_state.params),
                 'stats': flat(new_state.model_state)}
  return out


def main():
  assert jax.device_count() == 8, jax.devices()
  batch = make_batch()
  one, eight = on_mesh(jax.devices()[:1], batch), on_mesh(jax.devices(), batch)
  report = {}
  for name in LOSSES:
    g1, g8 = one[name]['grads'], eight[name]['grads']
    # Gradient error relative to the gradient's overall scale (a per-tensor ratio would
    # single out tensors whose own gradient is itself mostly cancellation).
    kept = [k for k in g1 if not cancelled_by_batch_norm(k)]
    scale = max(float(np.abs(g1[k]).max()) for k in kept)
    rel = max(float(np.abs(g1[k] - g8[k]).max()) for k in kept) / scale
    noise = max(max(float(np.abs(g1[k]).max()), float(np.abs(g8[k]).max()))
                for k in g1 if cancelled_by_batch_norm(k))
    report[name] = {'loss_1': one[name]['loss'], 'loss_8': eight[name]['loss'],
                    'max_rel_grad_diff': rel, 'max_cancelled_bias_grad': noise}
  # Adagrad's first step is lr * g / sqrt(g^2 + 1e-10): for |g| below ~1e-4 it amplifies
  # rounding differences of g by up to lr / 1e-5, so parameters are compared where the
  # gradient is clear of that regime (the gradients themselves are compared above).
  grads = one['diff']['grads']
  p1, p8 = one['step']['params'], eight['step']['params']
  param_diff = max(float(np.abs(p1[k] - p8[k])[np.abs(grads[k]) > 1e-4].max(initial=0.0))
                   for k in p1)
  compared = int(sum((np.abs(grads[k]) > 1e-4).sum() for k in p1))
  s1, s8 = one['step']['stats'], eight['step']['stats']
  report['step'] = {'loss_1': one['step']['loss'], 'loss_8': eight['step']['loss'],
                    'max_param_diff': param_diff, 'params_compared': compared,
                    'params_total': int(sum(v.size for v in p1.values())),
                    'max_batch_stat_diff': max(float(np.abs(s1[k] - s8[k]).max()) for k in s1)}
  print('RESULT ' + json.dumps(report))


if __name__ == '__main__':
  main()
