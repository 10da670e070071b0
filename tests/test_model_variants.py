"""MSHNet with the paper's spatial variants: parameter counts, gradients, the summary."""
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import load_config
from irstd_jax import models
from irstd_jax import spatial_attention as sa
from irstd_jax.tools import summary

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = (4, 8, 8, 16, 16)
NUM_BLOCKS = 16  # E0 1 + E1..E3 6 + M 2 + D3..D1 6 + D0 1


def _param_count(**kwargs):
  model = nnx.eval_shape(lambda: models.MSHNet(rngs=nnx.Rngs(0), **kwargs))
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_full_width_parameter_counts():
  # The references (docs/method.md sections 2 and 5), counted on the PyTorch code.
  assert _param_count(in_channels=3, spatial_attention='cbam') == 4_065_513
  assert _param_count(in_channels=3, spatial_attention='gaussian_pinwheel') == 4_063_961
  # 1 parameter per block instead of 98; 3 for the learnable rotation.
  assert _param_count(in_channels=3, spatial_attention='fixed_rotation') == 4_063_961
  assert (_param_count(in_channels=3, spatial_attention='rotated_pinwheel')
          == 4_063_961 + 2 * NUM_BLOCKS)
  # E0's convs: plain 2 x (16*16*9 + 16) = 4640. PConv(16, 16, k): cw and ch each
  # 16*k*4 + BN 2*4, cat 2*2*16*16 + BN 2*16, so 3040 for k = 4, 3; GSConv adds 16 sigmas.
  assert _param_count(in_channels=3, stem_conv='pconv') == 4_065_513 - 4640 + 3040
  assert _param_count(in_channels=3, stem_conv='gsconv') == 4_065_513 + 2 * 16


_INIT = {'theta': math.pi / 6, 'log_sigma': math.log(1.5), 'log_tau': math.log(0.1),
         'scale': 1.0, 'var': 1.0, 'bias': 0.0, 'mean': 0.0}


def _filled_state(state, seed=0):
  """Arrays for an eval_shape'd state, without the model's 10-20 s eager / jitted init:
  the spec's initial scalars, identity BatchNorms, U(+-1/sqrt(fan_in)) kernels."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-2].key
    if name == 'kernel':
      bound = 1 / math.sqrt(math.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.uniform(-bound, bound, leaf.shape), leaf.dtype)
    return jnp.full(leaf.shape, _INIT[name], leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, state)


def _filled_model(**kwargs):
  graphdef, state = nnx.split(
      nnx.eval_shape(lambda: models.MSHNet(rngs=nnx.Rngs(0), **kwargs)))
  return nnx.merge(graphdef, _filled_state(state))


def _grads(model, images, labels):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def grad_fn(params, rest):
    def loss(params):
      fused, sides = nnx.merge(graphdef, params, rest, copy=True)(images)
      terms = [jnp.mean((jax.nn.sigmoid(fused) - labels) ** 2)]
      for side in sides:
        scale = labels.shape[1] // side.shape[1]
        terms.append(jnp.mean((jax.nn.sigmoid(side) - labels[:, ::scale, ::scale]) ** 2))
      return sum(terms)
    return jax.grad(loss)(params)

  return grad_fn(params, rest)


def _scalar_grads(grads, name):
  return [np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(grads)
          if any(getattr(k, 'key', None) == name for k in path)]


def test_gradients_reach_every_spatial_scalar_through_the_network():
  # One block per stage (9 blocks) keeps the compile short.
  model = _filled_model(widths=TINY, blocks_per_stage=1, spatial_attention='rotated_pinwheel',
                        stem_conv='gsconv')
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(2, 32, 32, 1)), jnp.float32)
  labels = jnp.asarray(rng.uniform(size=(2, 32, 32, 1)) > 0.97, jnp.float32)
  grads = _grads(model, images, labels)
  theta, log_tau = _scalar_grads(grads, 'theta'), _scalar_grads(grads, 'log_tau')
  log_sigma = _scalar_grads(grads, 'log_sigma')
  assert len(theta) == len(log_tau) == 9
  assert len(log_sigma) == 9 + 2  # + the two GSConvs' per-channel sigmas
  for g in theta + log_tau + log_sigma:
    assert np.all(np.isfinite(g)) and np.all(g != 0), g


def test_attention_options_reach_the_modules():
  config = load_config('configs/ablation/a6_rotated_single_band.py')
  config.model.widths = TINY
  config.model.attention.sigma_init = 2.0
  model = nnx.eval_shape(lambda: models.build_model(config.model, rngs=nnx.Rngs(0)))
  block = model.encoder1.blocks[0].spatial_attention
  assert isinstance(block, sa.RotatedPinwheelAttention) and block.num_arms == 1
  # options_for keeps only what a kind takes: CBAM gets the size and nothing else.
  assert sa.options_for('cbam', config.model.attention) == {'size': 7}
  assert 'num_arms' not in sa.options_for('gaussian_pinwheel', config.model.attention)
  with pytest.raises(ValueError, match='valid kinds'):
    sa.options_for('cbma', {})


def test_summary_counts_flops_and_reads_learned_scalars(tmp_path):
  from irstd_jax import checkpointing
  from irstd_jax import train_state
  config = load_config('configs/synthetic.py')
  config.model.widths = TINY
  config.model.spatial_attention = 'rotated_pinwheel'
  config.data.crop_size = 32

  text = summary.summarize(config, flops=True)
  total = _param_count(widths=TINY, spatial_attention='rotated_pinwheel')
  totals = [line.split() for line in text.splitlines() if line.split()[:1] == ['total']]
  assert totals == [['total', f'{total:,}']]
  assert 'spatial attention (all blocks): 48' in text
  assert 'GFLOPs' in text and 'FLOPs per 32x32 image' in text

  # A checkpoint as train.py writes it (a train_state.TrainState) with a moved angle and
  # sigma in one block.
  _, params, model_state = nnx.split(models.abstract_model(config.model), nnx.Param, ...)
  params, model_state = _filled_state(params), _filled_state(model_state)
  params['encoder0']['blocks'][0]['spatial_attention']['theta'][...] = jnp.asarray(0.7)
  params['encoder0']['blocks'][0]['spatial_attention']['log_sigma'][...] = math.log(2.5)
  tx = train_state.make_optimizer(config.optim, train_state.STATE_ONLY)
  state = train_state.TrainState(step=jnp.asarray(7, jnp.int32), params=params,
                           model_state=model_state, opt_state=tx.init(params))
  manager = checkpointing.create_manager(str(tmp_path))
  checkpointing.save(manager, 7, state, force=True)
  manager.wait_until_finished()

  rows = {r['module']: r for r in summary.spatial_scalars(
      summary.load_checkpoint_model(config, str(tmp_path))[0])}
  row = rows['encoder0.blocks.0.spatial_attention']
  np.testing.assert_allclose(row['theta_deg'], math.degrees(0.7), rtol=1e-5)
  np.testing.assert_allclose(row['sigma'], 2.5, rtol=1e-5)
  np.testing.assert_allclose(rows['encoder1.blocks.0.spatial_attention']['theta_deg'], 30.0,
                             rtol=1e-5)
  text = summary.summarize(config, checkpoint=str(tmp_path), flops=False)
  assert 'checkpoint step 7' in text and f'theta={math.degrees(0.7):.2f} deg' in text
