"""The train state, its creation under jit, and the device mesh it lives on.

Parameters are created directly on the devices, already sharded, inside one jitted init
(`nnx.eval_shape` gives the structure for free). The mesh is 1-D ('data',) over every
device of every process; state leaves are replicated, batches split on 'data'.
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from irstd_jax import models


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly where it stopped."""
  step: jax.Array  # int32 scalar: completed optimizer steps
  params: nnx.State  # nnx.Param leaves
  model_state: nnx.State  # everything else: BatchNorm running statistics
  opt_state: optax.OptState


# num_steps for optimizers whose update is never run (restoring or initialising a state).
STATE_ONLY = 1


def learning_rate_schedule(optim_config, num_steps: int | None = None) -> optax.Schedule:
  """The learning rate as a function of the step.

  'constant' is the paper's recipe (Adagrad already decays the effective step). 'cosine'
  anneals to `final_lr_fraction` x lr over `num_steps`: for short schedules (the synthetic
  default) where the run ends long before Adagrad's own decay has settled the weights.
  """
  lr = optim_config.learning_rate
  if optim_config.schedule == 'constant':
    return optax.constant_schedule(lr)
  if optim_config.schedule == 'cosine':
    if not num_steps:
      # Silently decaying over some default length would train at the wrong rate.
      raise ValueError("optim.schedule 'cosine' needs the run's num_steps")
    return optax.cosine_decay_schedule(lr, num_steps, alpha=optim_config.final_lr_fraction)
  raise ValueError(f"unknown optim.schedule {optim_config.schedule!r}; expected 'constant' "
                   "or 'cosine'")


def make_optimizer(optim_config, num_steps: int | None = None) -> optax.GradientTransformation:
  """Adagrad with PyTorch's defaults (zero initial accumulator), lr from a schedule.

  The learning rate is always a schedule, even a constant one, so the optimizer state
  holds a step count either way and checkpoints restore across `optim.schedule` values.
  `num_steps` (the run's total) is needed by decaying schedules only. The state's
  structure and initial value never depend on it, so code that only restores or
  initialises the state passes `num_steps=STATE_ONLY`.
  """
  return optax.adagrad(learning_rate_schedule(optim_config, num_steps),
                       initial_accumulator_value=optim_config.initial_accumulator_value,
                       eps=optim_config.eps)


FUSE_AT_SWITCH = ('as_initialised', 'd0')


def fuse_passing_d0(params):
  """`params` with the fused head reset to pass the d0 head through unchanged.

  The fuse is a 3x3 conv over [h0, h1, h2, h3] (models.MSHNet): kernel [3, 3, 4, 1] and
  bias [1]. Here its centre tap on h0 is 1 and every other weight and the bias 0, so
  fused = h0 exactly ('SAME' padding). `train.fuse_at_switch = 'd0'` applies it when deep
  supervision starts: the reference's warm-up trains the d0 head only and predicts with
  it, then switches the prediction to the fuse as PyTorch initialised it, a random mix of
  the d0 head and three untrained heads (docs/reproduction.md).
  """
  def reset(path, leaf):
    if path[0].key != 'fuse':
      return leaf
    if leaf.ndim == 4:  # the kernel, HWIO
      return jnp.zeros_like(leaf).at[leaf.shape[0] // 2, leaf.shape[1] // 2, 0, :].set(1)
    return jnp.zeros_like(leaf)
  return jax.tree_util.tree_map_with_path(reset, params)


def seed_unused_accumulators(opt_state: optax.OptState, value: float) -> optax.OptState:
  """Adagrad's state with every accumulator entry that is still exactly 0 set to `value`.

  An entry is 0 only while its parameter has never had a non-zero gradient. Adagrad's first
  step on such a parameter is lr * g / sqrt(g^2 + eps) (optax; PyTorch: lr * g / (|g| +
  eps)), i.e. lr * sign(g), the full learning rate, for any |g| well above sqrt(eps) = 1e-5;
  the reference's warm-up trains the d0 head only, so at the switch to deep supervision
  every weight of the fused head and the side heads moves by about 0.05 in one step
  (`optim.accumulator_at_switch`, applied there by train.train_step).
  """
  def seed(state):
    if isinstance(state, optax.ScaleByRssState):
      return state._replace(sum_of_squares=jax.tree.map(
          lambda a: jnp.where(a == 0, jnp.asarray(value, a.dtype), a), state.sum_of_squares))
    return state

  return jax.tree.map(seed, opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByRssState))


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh over `devices` (default: every device of every process).

  Auto axis: XLA's partitioner propagates the batch sharding through the network, so
  model code stays free of sharding annotations (reshapes in pooling, etc.).
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), ('data',), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def state_shardings(abstract_state: Any, mesh: jax.sharding.Mesh) -> Any:
  """Sharding of every state leaf: replicated (data parallelism).

  Kept as a function of the leaf so that a 'model' axis can later shard large kernels.
  """
  replicated = NamedSharding(mesh, P())
  return jax.tree.map(lambda _: replicated, abstract_state)


def check_batch_divides(global_batch: int, mesh: jax.sharding.Mesh, what: str) -> None:
  devices = mesh.devices.size
  if global_batch % devices:
    raise ValueError(
        f'{what} batch size {global_batch} does not divide over {devices} devices; '
        f'use a multiple of {devices}')
  if global_batch % jax.process_count():
    raise ValueError(f'{what} batch size {global_batch} does not divide over '
                     f'{jax.process_count()} processes')


def _initializer(config: ml_collections.ConfigDict, tx: optax.GradientTransformation):
  """(graphdef, init(key) -> TrainState) for the model `config.model` describes."""
  graphdef, _, _ = nnx.split(models.abstract_model(config.model), nnx.Param, ...)

  def init(key: jax.Array) -> TrainState:
    model = models.build_model(config.model, rngs=nnx.Rngs(params=key))
    _, params, model_state = nnx.split(model, nnx.Param, ...)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      model_state=model_state, opt_state=tx.init(params))

  return graphdef, init


def abstract_train_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                         tx: optax.GradientTransformation):
  """The train state's structure without computing or compiling anything.

  What restoring a checkpoint needs (eval, predict): every leaf a ShapeDtypeStruct that
  carries its sharding.

  Returns:
    (graphdef, abstract state, state_shardings)
  """
  graphdef, init = _initializer(config, tx)
  abstract_state = jax.eval_shape(init, jax.random.key(config.seed))
  shardings = state_shardings(abstract_state, mesh)
  abstract_state = jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
      abstract_state, shardings)
  return graphdef, abstract_state, shardings


def create_train_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       tx: optax.GradientTransformation):
  """Builds parameters directly on the devices, already sharded, under jit.

  Eager NNX construction would compile one small kernel per weight shape (about 12 s for
  MSHNet on a 2-core CPU); `nnx.eval_shape` gives the structure for free and one jitted
  init materialises everything.

  Returns:
    (graphdef, state, state_shardings)
  """
  graphdef, init = _initializer(config, tx)
  key = jax.random.key(config.seed)
  shardings = state_shardings(jax.eval_shape(init, key), mesh)
  state = jax.jit(init, out_shardings=shardings)(key)
  return graphdef, state, shardings


def apply_model(graphdef, params, model_state, images, *, train: bool):
  """Runs the network on normalised images [B, H, W, C].

  Returns:
    (fused logits [B, H, W, 1], side logits, model_state after the call: BatchNorm
    statistics updated when train=True, unchanged otherwise).
  """
  # copy=True: fresh Variables at this trace level, so BatchNorm may update its
  # statistics inside jax.grad without touching the caller's state.
  model = nnx.merge(graphdef, params, model_state, copy=True)
  if train:
    model.train()
  else:
    model.eval()
  fused, sides = model(images)
  _, _, new_model_state = nnx.split(model, nnx.Param, ...)
  return fused, sides, new_model_state


