"""Imports PyTorch MSHNet checkpoints into the NNX model.

    python -m irstd_jax.tools.torch_import CKPT --config=configs/irstd1k.py --out=runs/imported

reads CKPT (a bare `state_dict`, or the dict the MSHNet repository saves around one under
'state_dict' / 'model' / 'net', as .pth, .pkl or .tar; a `module.` prefix from
DataParallel is dropped; .npz works too and needs no torch), maps every tensor onto the
model that `--config` builds, and writes an Orbax checkpoint of a fresh TrainState at step
0 to OUT/checkpoints, so `python main.py --config=... --workdir=OUT` resumes (fine-tunes)
from the imported weights. A checkpoint whose tensors do not fit the model is refused
with the names of the missing, unexpected and mis-shaped tensors: nothing is guessed.

Reading .pth/.pkl/.tar needs torch (`pip install -r requirements-bench.txt`); this module
imports it only then. Files are loaded with `weights_only=True` (no code runs while
unpickling); `--trust_pickle` lifts that for a file you trust that stores more than tensors
(some training scripts pickle numpy scalars next to the weights).

Name mapping (NNX path -> PyTorch key): stem -> conv_init, encoder{k} -> encoder_{k},
middle -> middle_layer, decoder{k} -> decoder_{k}, head{k} -> output_{k}, fuse -> final;
inside a block channel_attention -> ca, spatial_attention -> sa (its CBAM conv -> sa.conv1),
shortcut_conv / shortcut_bn -> shortcut.0 / shortcut.1; leaves kernel -> weight (OIHW ->
HWIO), BatchNorm scale / mean / var -> weight / running_mean / running_var; the Gaussian
attentions' log_sigma (theta, log_tau) keep their names.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from irstd_jax import models

# ImageNet statistics the MSHNet repository normalises its RGB-converted images with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_WRAPPER_KEYS = ('state_dict', 'model_state_dict', 'model', 'net', 'params')
_PREFIXES = ('module.', '_orig_mod.')  # DataParallel / DDP, torch.compile
_IGNORED_SUFFIXES = ('num_batches_tracked',)  # BatchNorm's step counter: no NNX state

_TOP_LEVEL = {'stem': 'conv_init', 'middle': 'middle_layer', 'fuse': 'final',
              **{f'encoder{k}': f'encoder_{k}' for k in range(4)},
              **{f'decoder{k}': f'decoder_{k}' for k in range(4)},
              **{f'head{k}': f'output_{k}' for k in range(4)}}
_INNER = {'channel_attention': 'ca', 'spatial_attention': 'sa',
          'shortcut_conv': 'shortcut.0', 'shortcut_bn': 'shortcut.1'}
_BN_LEAVES = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
              'var': 'running_var'}


class StateDictMismatchError(ValueError):
  """The checkpoint's tensors do not fit the configured model; the message names them."""

  def __init__(self, missing: Mapping[str, str], unexpected: list[str],
               mismatched: Mapping[str, str], hints=()):
    """Args: {key: description} of missing and mis-shaped tensors, unexpected keys."""
    self.missing_keys = list(missing)
    self.unexpected_keys = list(unexpected)
    self.mismatched_keys = list(mismatched)
    lines = ['the checkpoint does not fit the configured model:']
    for title, items in (('missing from the checkpoint', list(missing.values())),
                         ('in the checkpoint but not in the model', list(unexpected)),
                         ('wrong shape', list(mismatched.values()))):
      if items:
        lines.append(f'  {title} ({len(items)}):')
        lines += [f'    {item}' for item in items[:20]]
        if len(items) > 20:
          lines.append(f'    ... and {len(items) - 20} more')
    lines += [f'  hint: {h}' for h in hints]
    super().__init__('\n'.join(lines))


# ----------------------------------------------------------------------------- reading


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch.Tensor, without importing torch here
    value = value.detach().cpu()
    if str(value.dtype) == 'torch.bfloat16':  # numpy has no bfloat16
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def extract_state_dict(obj: Any) -> dict[str, np.ndarray]:
  """The flat {name: array} state dict inside a loaded checkpoint.

  Unwraps {'state_dict': ...} (and 'model_state_dict', 'model', 'net', 'params'), drops a
  `module.` / `_orig_mod.` prefix and BatchNorm's num_batches_tracked.

  Raises:
    ValueError: nothing in `obj` looks like a state dict.
  """
  while isinstance(obj, Mapping):
    inner = next((obj[k] for k in _WRAPPER_KEYS
                  if k in obj and isinstance(obj[k], Mapping)), None)
    if inner is None:
      break
    obj = inner
  if not isinstance(obj, Mapping) or not obj:
    raise ValueError(f'no state dict found: got {type(obj).__name__}'
                     + (f' with keys {sorted(obj)[:10]}' if isinstance(obj, Mapping) else ''))
  for key, value in obj.items():
    if not hasattr(value, 'shape'):
      raise ValueError(f'{key!r} is a {type(value).__name__}, not a tensor: is this a '
                       'state dict?')
  return _normalise_keys(obj)


def _normalise_keys(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Drops `module.` / `_orig_mod.` prefixes and num_batches_tracked; arrays to numpy."""
  out = {}
  for key, value in state_dict.items():
    for prefix in _PREFIXES:
      if key.startswith(prefix):
        key = key[len(prefix):]
    if not key.endswith(_IGNORED_SUFFIXES):
      out[key] = _to_numpy(value)
  return out


def load_checkpoint(path: str, *, trust_pickle: bool = False) -> dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint (.pth/.pt/.pkl/.tar, or .npz) into {name: array}.

  Raises:
    ImportError: a PyTorch file and torch is not installed.
    ValueError: the file holds no state dict, or (without trust_pickle) more than
      tensors and plain containers.
  """
  if path.endswith('.npz'):
    with np.load(path) as data:
      return extract_state_dict(dict(data))
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f'reading the PyTorch checkpoint {path} needs torch, which irstd_jax does not '
        'depend on: pip install -r requirements-bench.txt (torch==2.13.0), or convert it '
        'to .npz where torch is installed.') from e
  if not os.path.exists(path):
    raise FileNotFoundError(f'no checkpoint at {path}')
  try:
    obj = torch.load(path, map_location='cpu', weights_only=not trust_pickle)
  except Exception as e:  # pylint: disable=broad-except
    if not trust_pickle and 'weights_only' in str(e):
      raise ValueError(
          f'{path} stores more than tensors, so it was not unpickled (that could run '
          'code). If you trust the file, pass --trust_pickle (trust_pickle=True).\n'
          f'torch said: {str(e).splitlines()[0]}') from e
    raise ValueError(f'cannot read {path} as a PyTorch checkpoint (a truncated or '
                     f'damaged file?): {type(e).__name__}: {e}') from e
  return extract_state_dict(obj)


# ----------------------------------------------------------------------------- mapping


def torch_key(path: tuple) -> str:
  """The PyTorch state-dict key of an NNX state path, e.g.

  ('encoder1', 'blocks', 0, 'spatial_attention', 'conv', 'kernel') -> 'encoder_1.0.sa.conv1.weight'.
  """
  parts = [str(p) for p in path if p != 'blocks']
  parts[0] = _TOP_LEVEL.get(parts[0], parts[0])
  leaf = parts[-1]
  module = parts[-2] if len(parts) > 1 else ''
  parts = [_INNER.get(p, p) for p in parts[:-1]]
  if len(parts) >= 2 and parts[-2] == 'sa' and parts[-1] == 'conv':
    parts[-1] = 'conv1'
  if leaf == 'kernel':
    leaf = 'weight'
  elif module.startswith(('bn', 'shortcut_bn')) or module == 'bn':
    leaf = _BN_LEAVES.get(leaf, leaf)
  return '.'.join(parts + [leaf])


def _from_torch(value: np.ndarray, target_shape: tuple) -> np.ndarray:
  """OIHW conv weights -> HWIO; everything else as is."""
  if value.ndim == 4 and len(target_shape) == 4:
    return np.transpose(value, (2, 3, 1, 0))
  return value


def _to_torch_shape(target_shape: tuple) -> tuple:
  if len(target_shape) == 4:
    h, w, i, o = target_shape
    return (o, i, h, w)
  return tuple(target_shape)


def fold_rgb_stem(weight: np.ndarray, bias: np.ndarray, *, mean: float, std: float,
                  rgb_mean=IMAGENET_MEAN, rgb_std=IMAGENET_STD):
  """Turns a stem conv on an RGB-replicated grey image into one on the grey image.

  The MSHNet repository feeds grey images as 3 equal channels normalised per channel,
  x_c = (g - m_c) / s_c; irstd_jax feeds one channel x = (g - mean) / std. With g = std x
  + mean, sum_c w_c x_c = x * std * sum_c(w_c / s_c) + mean * sum_c(w_c / s_c)
  - sum_c(w_c m_c / s_c): exact, not an approximation.

  Args:
    weight: [O, 3, kh, kw] PyTorch stem weight.
    bias: [O].

  Returns:
    ([O, 1, kh, kw] weight, [O] bias).
  """
  s = np.asarray(rgb_std, np.float64)[None, :, None, None]
  m = np.asarray(rgb_mean, np.float64)[None, :, None, None]
  w = weight.astype(np.float64) / s
  new_weight = std * w.sum(axis=1, keepdims=True)
  new_bias = bias + (mean * w - w * m).sum(axis=(1, 2, 3))
  return new_weight.astype(np.float32), new_bias.astype(np.float32)


def _hints(missing, unexpected, mismatched) -> list[str]:
  hints = []
  sa_params = ('sa.log_sigma', 'sa.theta', 'sa.log_tau')
  if any(k.endswith('sa.conv1.weight') for k in unexpected) and any(
      k.endswith(sa_params) for k in missing):
    hints.append('the checkpoint has CBAM spatial attention (sa.conv1): use '
                 "--config.model.spatial_attention=cbam")
  if any(k.endswith('sa.conv1.weight') for k in missing) and any(
      k.endswith(sa_params) for k in unexpected):
    hints.append('the checkpoint has a Gaussian spatial attention (sa.log_sigma): set '
                 '--config.model.spatial_attention to its kind (e.g. gaussian_pinwheel)')
  if 'conv_init.weight' in mismatched and ', 3, ' in mismatched['conv_init.weight']:
    hints.append('the checkpoint was trained on RGB-replicated grey images (3 input '
                 'channels): pass --rgb_to_grey (rgb_to_grey=True) to fold its stem onto '
                 'one channel exactly, or set --config.model.in_channels=3')
  if missing and unexpected and not mismatched:
    hints.append('check --config.model.blocks_per_stage, widths and stem_conv against the '
                 'checkpoint')
  return hints


def import_state_dict(state_dict: Mapping[str, np.ndarray], model_config, *,
                      rgb_to_grey: bool = False, mean: float = 0.449, std: float = 0.226):
  """Maps a PyTorch MSHNet state dict onto the NNX model `model_config` builds.

  No parameter is initialised: the model's structure comes from `nnx.eval_shape` and every
  leaf from the checkpoint, so a tensor the checkpoint lacks is an error, never a random
  value.

  Args:
    state_dict: {PyTorch key: array or tensor}; `module.` prefixes and
      num_batches_tracked are dropped as in `extract_state_dict`.
    model_config: `config.model`.
    rgb_to_grey: fold a 3-channel stem (the MSHNet repository's RGB input) onto the
      model's 1 channel, exactly (see `fold_rgb_stem`); `mean` / `std` are the project's
      normalisation (`config.data.mean` / `.std`).

  Returns:
    (graphdef, params, model_state) as `train_state.create_train_state` splits them.

  Raises:
    StateDictMismatchError: naming every missing, unexpected and mis-shaped tensor.
  """
  abstract = models.abstract_model(model_config)
  graphdef, abstract_params, abstract_rest = nnx.split(abstract, nnx.Param, ...)
  state_dict = _normalise_keys(state_dict)
  if rgb_to_grey and state_dict.get('conv_init.weight', np.zeros((0, 0))).shape[1:2] == (3,):
    state_dict['conv_init.weight'], state_dict['conv_init.bias'] = fold_rgb_stem(
        state_dict['conv_init.weight'], state_dict['conv_init.bias'], mean=mean, std=std)

  missing, mismatched, used = {}, {}, set()

  def fill(abstract_state):
    flat = nnx.to_flat_state(abstract_state)
    leaves = []
    for path, variable in flat:
      key = torch_key(path)
      shape = tuple(variable.shape)
      if key not in state_dict:
        missing[key] = (f'{key} (model expects {list(_to_torch_shape(shape))}, '
                        f'NNX {"/".join(map(str, path))})')
        leaves.append((path, variable))
        continue
      used.add(key)
      value = np.asarray(state_dict[key])
      converted = _from_torch(value, shape)
      if converted.shape != shape:
        mismatched[key] = (f'{key}: checkpoint {list(value.shape)}, model expects '
                           f'{list(_to_torch_shape(shape))}')
        leaves.append((path, variable))
        continue
      leaves.append((path, variable.replace(jnp.asarray(converted, variable.dtype))))
    return nnx.from_flat_state(leaves)

  params = fill(abstract_params)
  rest = fill(abstract_rest)
  unexpected = sorted(k for k in state_dict if k not in used)
  if missing or unexpected or mismatched:
    raise StateDictMismatchError(missing, unexpected, mismatched,
                                  _hints(missing, unexpected, mismatched))
  return graphdef, params, rest


def import_model(state_dict: Mapping[str, np.ndarray], model_config, **kwargs) -> nnx.Module:
  """`import_state_dict`, merged into a ready MSHNet module."""
  graphdef, params, rest = import_state_dict(state_dict, model_config, **kwargs)
  return nnx.merge(graphdef, params, rest)


def import_train_state(state_dict: Mapping[str, np.ndarray], config):
  """A fresh TrainState (step 0, new optimizer state) holding the imported weights.

  Args:
    config: the full ConfigDict (`model`, `optim`, `data`).

  Returns:
    (graphdef, TrainState)
  """
  from irstd_jax import train_state as train_state_lib  # pylint: disable=g-import-not-at-top
  graphdef, params, rest = import_state_dict(
      state_dict, config.model, rgb_to_grey=config.get('rgb_to_grey', False),
      mean=config.data.mean, std=config.data.std)
  # A fresh optimizer state; training rebuilds the optimizer with the run's length.
  tx = train_state_lib.make_optimizer(config.optim, train_state_lib.STATE_ONLY)
  # Jitted: eagerly, optax would compile one fill kernel per parameter shape.
  state = train_state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                     model_state=rest, opt_state=jax.jit(tx.init)(params))
  return graphdef, state


def write_checkpoint(ckpt_path: str, config, out_dir: str, *, trust_pickle: bool = False,
                     rgb_to_grey: bool = False) -> str:
  """Imports `ckpt_path` and writes OUT/checkpoints/0 plus OUT/torch_import.json.

  Returns:
    The Orbax checkpoint directory.

  Raises:
    FileExistsError: OUT already holds checkpoints (nothing is overwritten).
  """
  from irstd_jax import checkpointing  # pylint: disable=g-import-not-at-top
  state_dict = load_checkpoint(ckpt_path, trust_pickle=trust_pickle)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.rgb_to_grey = rgb_to_grey
  _, state = import_train_state(state_dict, config)
  manager = checkpointing.create_manager(out_dir, max_to_keep=1)
  if manager.all_steps():
    raise FileExistsError(f'{manager.directory} already holds checkpoints '
                          f'{manager.all_steps()}; choose an empty --out')
  checkpointing.save(manager, 0, state, force=True)
  manager.wait_until_finished()
  with open(ckpt_path, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  with open(os.path.join(out_dir, 'torch_import.json'), 'w') as f:
    json.dump({'source': os.path.abspath(ckpt_path), 'sha256': digest,
               'tensors': len(state_dict), 'rgb_to_grey': rgb_to_grey,
               'model': config.model.to_dict(),
               'parameters': int(sum(x.size for x in jax.tree.leaves(state.params)))},
              f, indent=2)
  return str(manager.directory)


def main(argv=None):
  from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,g-multiple-import
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py) of the model.',
                                  lock_config=True)
  out = flags.DEFINE_string('out', None, 'Directory to write the Orbax checkpoint to.',
                            required=True)
  trust = flags.DEFINE_bool('trust_pickle', False,
                            'Unpickle arbitrary objects (only for a file you trust).')
  rgb = flags.DEFINE_bool('rgb_to_grey', False,
                          'Fold a 3-channel (RGB-replicated) stem onto 1 input channel.')

  def run(args):
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save phase at INFO
    if len(args) != 2:
      raise app.UsageError('usage: python -m irstd_jax.tools.torch_import CKPT --config=... --out=DIR')
    try:
      where = write_checkpoint(args[1], flags.FLAGS.config, out.value,
                               trust_pickle=trust.value, rgb_to_grey=rgb.value)
    except (StateDictMismatchError, ImportError, ValueError, FileExistsError,
            FileNotFoundError) as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    print(f'wrote {where}/0; train or fine-tune with: python main.py '
          f'--config=<same config> --workdir={out.value}')

  flags.mark_flag_as_required('config')
  app.run(run, argv)


if __name__ == '__main__':
  main()
