"""Model summary for any config: parameters, FLOPs, learned spatial scalars.

    python -m irstd_jax.tools.summary --config=configs/full_model.py
    python -m irstd_jax.tools.summary --config=configs/ablation/a0_mshnet_sls.py:nudt_sirst
    python -m irstd_jax.tools.summary --config=configs/synthetic.py --checkpoint=runs/synthetic

Prints the parameters per top-level module and in total (the model is built under
`nnx.eval_shape`, so nothing is initialised), the FLOPs of one eval-mode forward pass on
one image at `data.crop_size` from XLA's cost analysis of the compiled computation, and,
given a checkpoint (a workdir, or its `checkpoints` / `checkpoints_best` folder), the
learned sigma / angle / tau of every Gaussian spatial attention and GSConv.
"""
from __future__ import annotations

import collections
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from irstd_jax import convs
from irstd_jax import kernels
from irstd_jax import models
from irstd_jax import spatial_attention as sa


_DATAFLOW_ORDER = ('stem', 'encoder0', 'encoder1', 'encoder2', 'encoder3', 'middle',
                   'decoder3', 'decoder2', 'decoder1', 'decoder0', 'head0', 'head1', 'head2',
                   'head3', 'fuse')


def param_counts(model: nnx.Module) -> tuple[dict[str, int], int]:
  """Parameters per top-level attribute (in the model's attribute order), and the total."""
  counts = collections.Counter()
  for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param)):
    counts[path[0].key] += math.prod(leaf.shape)
  order = [name for name in _DATAFLOW_ORDER if name in counts]
  order += sorted(set(counts) - set(order))
  return {name: counts[name] for name in order}, sum(counts.values())


def param_counts_by_part(model: nnx.Module) -> dict[str, int]:
  """Parameters of the spatial attentions, the channel attentions and E0's convs."""
  parts = collections.Counter()
  for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param)):
    keys = [getattr(k, 'key', None) for k in path]
    n = math.prod(leaf.shape)
    if 'spatial_attention' in keys:
      parts['spatial attention (all blocks)'] += n
    elif 'channel_attention' in keys:
      parts['channel attention (all blocks)'] += n
    if keys[0] == 'encoder0' and keys[3] in ('conv1', 'conv2'):
      parts['E0 stem convs (model.stem_conv)'] += n
  return dict(parts)


def flops_per_image(model: nnx.Module, image_size: int, in_channels: int) -> float:
  """XLA's FLOP count of one eval-mode forward pass on a [1, S, S, in_channels] image.

  Works on an abstract model: only lowering and compiling happen, no arrays are made.
  """
  model.eval()
  graphdef, state = nnx.split(model)

  def forward(state, images):
    fused, _ = nnx.merge(graphdef, state)(images)
    return fused

  images = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)
  cost = jax.jit(forward).lower(state, images).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0]
  return float(cost['flops'])


def spatial_scalars(model: nnx.Module) -> list[dict[str, Any]]:
  """The learned scalars of every Gaussian attention / GSConv, in data-flow order."""
  rows = []
  for path, node in nnx.iter_graph(model):
    if not isinstance(node, (sa.GaussianPinwheelAttention, sa.RotatedPinwheelAttention,
                             sa.FixedRotationAttention, convs.GSConv)):
      continue
    row = {'module': '.'.join(str(p) for p in path), 'kind': type(node).__name__,
           'sigma': jax.device_get(kernels.sigma_from_log(node.log_sigma[...]))}
    if isinstance(node, sa.RotatedPinwheelAttention):
      row['theta_deg'] = math.degrees(float(node.theta[...]))
      row['tau'] = float(kernels.tau_from_log(node.log_tau[...]))
    rows.append(row)
  rank = {name: i for i, name in enumerate(_DATAFLOW_ORDER)}
  return sorted(rows, key=lambda r: rank.get(r['module'].split('.')[0], len(rank)))


def load_checkpoint_model(config, checkpoint: str) -> tuple[nnx.Module, int]:
  """The model with the parameters of the newest checkpoint under `checkpoint`.

  `checkpoint` is a workdir (its `checkpoints` folder is used) or a checkpoint folder
  itself (`<workdir>/checkpoints` or `<workdir>/checkpoints_best`). The state is restored
  by checkpointing.restore_run with this config, so the config must be the run's.
  """
  from irstd_jax import checkpointing  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(checkpoint)
  which = {folder: name for name, folder in checkpointing.CHECKPOINTS.items()}
  if os.path.isdir(os.path.join(path, checkpointing.CHECKPOINTS['last'])):
    workdir, name = path, 'last'
  elif os.path.basename(path) in which and os.path.isdir(path):
    workdir, name = os.path.dirname(path), which[os.path.basename(path)]
  else:
    raise FileNotFoundError(f'no checkpoint folder at {checkpoint} (expected a workdir, or '
                            'its checkpoints / checkpoints_best folder)')
  run = checkpointing.restore_run(config, workdir, name)
  return nnx.merge(run.graphdef, run.state.params, run.state.model_state), run.step


def summarize(config, *, checkpoint: str | None = None, flops: bool = True) -> str:
  """The summary as text (what the command prints)."""
  m = config.model
  model = models.abstract_model(m)
  lines = [f'MSHNet: in_channels={m.in_channels} widths={tuple(m.widths)} '
           f'blocks_per_stage={m.blocks_per_stage} spatial_attention={m.spatial_attention} '
           f'stem_conv={m.stem_conv}']
  per_module, total = param_counts(model)
  width = max(map(len, per_module))
  lines.append('parameters')
  lines += [f'  {name:<{width}} {n:>11,}' for name, n in per_module.items()]
  lines.append(f'  {"total":<{width}} {total:>11,}')
  lines += [f'  of which {name}: {n:,}' for name, n in param_counts_by_part(model).items()]
  if flops:
    size = config.data.crop_size
    f = flops_per_image(model, size, m.in_channels)
    lines.append(f'FLOPs per {size}x{size} image (XLA cost analysis, eval mode): '
                 f'{f / 1e9:.4g} GFLOPs (~{f / 2e9:.4g} GMACs; XLA counts 2 per MAC '
                 'plus elementwise work)')
  if checkpoint:
    trained, step = load_checkpoint_model(config, checkpoint)
    rows = spatial_scalars(trained)
    lines.append(f'learned spatial scalars (checkpoint step {step}, {checkpoint}):')
    if not rows:
      lines.append('  none (this model has no Gaussian attention or GSConv)')
    for row in rows:
      sigma = row['sigma']
      sigma_text = (f'sigma={float(sigma):.4f}' if sigma.ndim == 0 else
                    f'sigma mean={sigma.mean():.4f} min={sigma.min():.4f} max={sigma.max():.4f}')
      extra = (f' theta={row["theta_deg"]:.2f} deg tau={row["tau"]:.4f}'
               if 'theta_deg' in row else '')
      lines.append(f'  {row["module"]:<42} {sigma_text}{extra}')
  return '\n'.join(lines)


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  print(summarize(flags.FLAGS.config, checkpoint=_CHECKPOINT.value, flops=_FLOPS.value))


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                  lock_config=True)
  _CHECKPOINT = flags.DEFINE_string(
      'checkpoint', None, 'A workdir, or its checkpoints / checkpoints_best folder.')
  _FLOPS = flags.DEFINE_bool('flops', True, 'Compile once to count FLOPs.')
  flags.mark_flag_as_required('config')
  app.run(main)
