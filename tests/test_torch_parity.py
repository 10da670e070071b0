"""Parity with the PyTorch reference MSHNet, and the checkpoint importer.

The PyTorch tests need torch. requirements-dev.txt installs it on Python 3.11 (the CPU wheel),
so `make test` and CI run them there; on other Pythons (where pip would fetch a CUDA build)
they skip with that reason. The mapping and RGB-folding tests need only numpy and run everywhere.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import base
from irstd_jax import models
from irstd_jax.tools import torch_import



def _torch_available() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


needs_torch = pytest.mark.skipif(
    not _torch_available(),
    reason='torch is not installed (requirements-dev.txt installs it on Python 3.11; '
           'elsewhere: pip install -r requirements-bench.txt)')

WIDTHS = (4, 8, 8, 16, 16)  # tiny, so each test runs in seconds
REDUCTION = 4  # hidden = c // 4 >= 1 at these widths


def _config(kind='cbam', in_channels=1):
  config = base.get_config()
  config.model.widths = WIDTHS
  config.model.channel_reduction = REDUCTION
  config.model.spatial_attention = kind
  config.model.in_channels = in_channels
  return config


def _torch_model(kind='cbam', in_channels=1, seed=0):
  """A reference MSHNet with random weights AND random BatchNorm statistics / affines."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_mshnet  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = torch_mshnet.MSHNet(in_channels, WIDTHS, 2, kind, REDUCTION)
  with torch.no_grad():
    for name, buf in model.named_buffers():
      if name.endswith('running_mean'):
        buf.normal_(0.0, 0.5)
      elif name.endswith('running_var'):
        buf.uniform_(0.5, 2.0)
    for name, p in model.named_parameters():
      if p.ndim == 1 and ('bn' in name or 'shortcut.1' in name):  # BN affine
        p.normal_(1.0 if name.endswith('weight') else 0.0, 0.3)
      elif name.endswith('log_sigma'):  # away from the default, so it must be imported
        p.uniform_(-0.5, 1.0)
  return model.eval()


def _state_dict(model):
  # Copies: .numpy() shares the tensor's memory, and JAX on the CPU may alias a numpy
  # buffer, so a later training forward of the torch model would change the JAX arrays.
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _torch_outputs(model, x_nhwc):
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    sides, fused = model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))
  return [t.numpy().transpose(0, 2, 3, 1) for t in [fused] + sides]


def _jax_outputs(nnx_model, x_nhwc):
  # One compiled program: op-by-op dispatch would compile every op separately (slower).
  fused, sides = nnx.jit(lambda m, x: m(x))(nnx_model, jnp.asarray(x_nhwc))
  return [np.asarray(t) for t in [fused] + sides]


@needs_torch
@pytest.mark.parametrize('kind', ['cbam', 'gaussian_pinwheel'])
def test_imported_weights_give_the_same_five_outputs(kind):
  torch_model = _torch_model(kind)
  # The wrapper and prefix the MSHNet repository's DataParallel checkpoints have.
  wrapped = {'epoch': 7, 'state_dict': {f'module.{k}': v
                                        for k, v in torch_model.state_dict().items()}}
  model = torch_import.import_model(torch_import.extract_state_dict(wrapped),
                                    _config(kind).model)
  model.eval()
  x = np.random.default_rng(1).normal(size=(2, 32, 48, 1)).astype(np.float32)
  want, got = _torch_outputs(torch_model, x), _jax_outputs(model, x)
  assert [g.shape for g in got] == [(2, 32, 48, 1), (2, 32, 48, 1), (2, 16, 24, 1),
                                    (2, 8, 12, 1), (2, 4, 6, 1)]
  for name, w, g in zip(['fused', 'h0', 'h1', 'h2', 'h3'], want, got):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=0, err_msg=name)


@needs_torch
def test_training_mode_forward_matches_too():
  """BatchNorm on batch statistics (the train step's forward) agrees as well."""
  torch_model = _torch_model('gaussian_pinwheel').train()
  model = torch_import.import_model(_state_dict(torch_model),
                                    _config('gaussian_pinwheel').model)
  model.train()
  x = np.random.default_rng(2).normal(size=(2, 32, 32, 1)).astype(np.float32)
  for w, g in zip(_torch_outputs(torch_model, x), _jax_outputs(model, x)):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)


@needs_torch
def test_training_forward_updates_running_statistics_as_torch_does():
  """running_mean / running_var after one training forward equal PyTorch's buffers.

  At these sizes a deep BatchNorm sees n = 2 * 4 * 4 = 32 values per channel, so
  PyTorch's unbiased running_var (x 32/31) and Flax's biased one differ by 3 % x 0.1.
  """
  torch_model = _torch_model('cbam').train()
  model = torch_import.import_model(_state_dict(torch_model), _config('cbam').model)
  model.train()
  x = np.random.default_rng(4).normal(size=(2, 32, 32, 1)).astype(np.float32)
  _torch_outputs(torch_model, x)  # updates the torch buffers in place
  _jax_outputs(model, x)  # nnx.jit writes the new statistics back into `model`
  want = _state_dict(torch_model)
  stats = nnx.to_flat_state(nnx.state(model, nnx.BatchStat))
  assert len(stats) == sum(k.endswith(('running_mean', 'running_var')) for k in want)
  for path, variable in stats:
    key = torch_import.torch_key(path)
    np.testing.assert_allclose(np.asarray(variable.get_value()), want[key], rtol=2e-5,
                               atol=1e-6, err_msg=key)


@needs_torch
def test_truncated_checkpoint_names_what_is_missing(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  state = _torch_model().state_dict()
  keys = list(state)
  dropped = keys[-6:]  # as if the file were cut short after the decoder
  truncated = {k: state[k] for k in keys[:-6]}
  path = str(tmp_path / 'weight.pkl')
  torch.save(truncated, path)
  with pytest.raises(torch_import.StateDictMismatchError) as err:
    torch_import.import_model(torch_import.load_checkpoint(path), _config().model)
  message = str(err.value)
  assert 'missing from the checkpoint (6)' in message
  for key in dropped:
    assert key in message
  assert set(err.value.missing_keys) == set(dropped)


@needs_torch
def test_wrong_width_and_wrong_attention_are_named():
  state = _state_dict(_torch_model('cbam'))
  state['encoder_2.1.conv2.weight'] = state['encoder_2.1.conv2.weight'][:, :4]
  with pytest.raises(torch_import.StateDictMismatchError) as err:
    torch_import.import_model(state, _config('cbam').model)
  assert ('encoder_2.1.conv2.weight: checkpoint [8, 4, 3, 3], model expects [8, 8, 3, 3]'
          in str(err.value))
  # A CBAM checkpoint into a Gaussian-pinwheel model: sa.conv1 is unexpected, log_sigma
  # missing, and the hint says which config to use.
  with pytest.raises(torch_import.StateDictMismatchError) as err:
    torch_import.import_model(_state_dict(_torch_model('cbam')),
                              _config('gaussian_pinwheel').model)
  assert 'encoder_0.0.sa.log_sigma' in str(err.value)
  assert 'encoder_0.0.sa.conv1.weight' in str(err.value)
  assert 'spatial_attention=cbam' in str(err.value)


@needs_torch
def test_damaged_file_is_refused_with_its_name(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'weight.tar'
  torch.save(_torch_model().state_dict(), str(path))
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match='cannot read .*weight.tar'):
    torch_import.load_checkpoint(str(path))


def _write_and_restore(tmp_path, abstract_fn):
  """Saves a reference model as the MSHNet repo does, imports it with the command's
  function, restores it with the project's checkpointing onto abstract_fn(config), and
  checks the restored network against the reference."""
  import torch  # pylint: disable=g-import-not-at-top
  from irstd_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from irstd_jax import train_state as train_state_lib  # pylint: disable=g-import-not-at-top
  torch_model = _torch_model('gaussian_pinwheel')
  path = str(tmp_path / 'IRSTD-1k_weight.tar')
  torch.save({'epoch': 400, 'state_dict': torch_model.state_dict()}, path)
  config = _config('gaussian_pinwheel')
  torch_import.write_checkpoint(path, config, str(tmp_path / 'run'))

  manager = checkpointing.create_manager(str(tmp_path / 'run'))
  state = checkpointing.restore_latest(manager, abstract_fn(config))
  assert int(state.step) == 0
  graphdef = nnx.graphdef(nnx.eval_shape(
      lambda: models.build_model(config.model, rngs=nnx.Rngs(0))))
  x = np.random.default_rng(3).normal(size=(1, 16, 16, 1)).astype(np.float32)
  fused = jax.jit(lambda p, m, x: train_state_lib.apply_model(graphdef, p, m, x,
                                                              train=False)[0])(
                                                                  state.params,
                                                                  state.model_state, x)
  np.testing.assert_allclose(np.asarray(fused), _torch_outputs(torch_model, x)[0],
                             atol=1e-4, rtol=0)
  with pytest.raises(FileExistsError):  # never overwrites
    torch_import.write_checkpoint(path, config, str(tmp_path / 'run'))


@needs_torch
def test_command_writes_a_checkpoint_the_project_restores(tmp_path):
  # The TrainState structure comes from the importer here (fast); the slow test below
  # restores onto the one create_train_state builds, as train.py does.
  def abstract(config):
    from irstd_jax import checkpointing  # pylint: disable=g-import-not-at-top
    state_dict = _state_dict(_torch_model('gaussian_pinwheel'))
    return checkpointing.abstract_like(torch_import.import_train_state(state_dict, config)[1])

  _write_and_restore(tmp_path, abstract)


@needs_torch
@pytest.mark.slow
def test_checkpoint_restores_onto_create_train_state(tmp_path):
  from irstd_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from irstd_jax import train_state as train_state_lib  # pylint: disable=g-import-not-at-top

  def abstract(config):
    mesh = train_state_lib.make_mesh()
    _, fresh, _ = train_state_lib.create_train_state(
        config, mesh, train_state_lib.make_optimizer(config.optim, train_state_lib.STATE_ONLY))
    return checkpointing.abstract_like(fresh)

  _write_and_restore(tmp_path, abstract)


@needs_torch
def test_rgb_checkpoint_folds_onto_one_channel_exactly():
  """The MSHNet repo's 3-channel stem on an RGB-replicated grey image, ImageNet-normalised,
  equals the folded 1-channel stem on the project's normalisation."""
  torch_model = _torch_model(in_channels=3)
  config = _config()
  state = _state_dict(torch_model)
  with pytest.raises(torch_import.StateDictMismatchError, match='--rgb_to_grey'):
    torch_import.import_model(state, config.model)
  model = torch_import.import_model(state, config.model, rgb_to_grey=True,
                                    mean=config.data.mean, std=config.data.std)
  model.eval()
  grey = np.random.default_rng(4).uniform(size=(2, 32, 32, 1)).astype(np.float32)
  rgb = (grey - np.asarray(torch_import.IMAGENET_MEAN, np.float32)) / np.asarray(
      torch_import.IMAGENET_STD, np.float32)
  ours = (grey - config.data.mean) / config.data.std
  for w, g in zip(_torch_outputs(torch_model, rgb), _jax_outputs(model, ours)):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)


# ------------------------------------------------------------------ no torch needed


def test_torch_key_mapping():
  cases = {
      ('stem', 'kernel'): 'conv_init.weight',
      ('encoder1', 'blocks', 0, 'spatial_attention', 'conv', 'kernel'):
          'encoder_1.0.sa.conv1.weight',
      ('middle', 'blocks', 1, 'channel_attention', 'fc2', 'kernel'):
          'middle_layer.1.ca.fc2.weight',
      ('decoder3', 'blocks', 0, 'shortcut_bn', 'var'): 'decoder_3.0.shortcut.1.running_var',
      ('decoder3', 'blocks', 0, 'shortcut_conv', 'bias'): 'decoder_3.0.shortcut.0.bias',
      ('encoder0', 'blocks', 0, 'bn2', 'scale'): 'encoder_0.0.bn2.weight',
      ('encoder0', 'blocks', 0, 'spatial_attention', 'log_sigma'):
          'encoder_0.0.sa.log_sigma',
      ('head3', 'bias'): 'output_3.bias',
      ('fuse', 'kernel'): 'final.weight',
  }
  for path, key in cases.items():
    assert torch_import.torch_key(path) == key


def test_every_model_tensor_has_a_distinct_torch_key():
  model = nnx.eval_shape(lambda: models.build_model(base.get_config().model,
                                                    rngs=nnx.Rngs(0)))
  paths = [p for p, _ in nnx.to_flat_state(nnx.state(model))]
  keys = [torch_import.torch_key(p) for p in paths]
  assert len(set(keys)) == len(keys)
  # The full MSHNet with one input channel: 4,065,481 parameters (docs/method.md section 5).
  assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == 4_065_481


def test_fold_rgb_stem_is_exact():
  rng = np.random.default_rng(5)
  w, b = rng.normal(size=(6, 3, 1, 1)), rng.normal(size=(6,))
  grey = rng.uniform(size=(10,))
  m, s = np.asarray(torch_import.IMAGENET_MEAN), np.asarray(torch_import.IMAGENET_STD)
  rgb = (grey[:, None] - m) / s  # [10, 3]
  want = rgb @ w[:, :, 0, 0].T + b
  w1, b1 = torch_import.fold_rgb_stem(w, b, mean=0.449, std=0.226)
  got = ((grey - 0.449) / 0.226)[:, None] * w1[:, 0, 0, 0] + b1
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_npz_needs_no_torch_and_pth_without_torch_says_so(tmp_path, monkeypatch):
  rng = np.random.default_rng(6)
  np.savez(tmp_path / 'w.npz', **{'module.conv_init.weight': rng.normal(size=(4, 1, 1, 1)),
                                  'conv_init.bias': rng.normal(size=(4,))})
  state = torch_import.load_checkpoint(str(tmp_path / 'w.npz'))
  assert sorted(state) == ['conv_init.bias', 'conv_init.weight']
  monkeypatch.setitem(sys.modules, 'torch', None)  # as if torch were not installed
  (tmp_path / 'w.pth').write_bytes(b'')
  with pytest.raises(ImportError, match='needs torch'):
    torch_import.load_checkpoint(str(tmp_path / 'w.pth'))
