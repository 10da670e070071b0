"""jax.export of a run's model: dynamic shapes, the checkpoint's logits, a jax-only loader."""
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import tiny_checkpoint
from conftest import REPO
from irstd_jax import checkpointing
from irstd_jax import evaluate
from irstd_jax import exported_model
from irstd_jax import models
from irstd_jax.tools import export as export_tool


@pytest.mark.parametrize('n_in', [1, 2, 3, 5, 6, 12, 48])
def test_traced_interpolation_matrix_is_the_numpy_one_within_float32_rounding(n_in):
  for factor in (2, 4, 8):
    traced = np.asarray(jax.jit(
        lambda: models._align_corners_matrix_traced(n_in, n_in * factor))())
    expected = models._align_corners_matrix(n_in, n_in * factor)
    assert traced.shape == expected.shape
    # frac within 1 ulp of float32 (2**-24 below 1), hence 1 - frac within the same
    # absolute distance
    np.testing.assert_allclose(traced, expected, rtol=0, atol=2.0**-24)
    np.testing.assert_allclose(traced.sum(axis=1), 1.0, rtol=1e-6)


def _images(seed=0):
  """Two shapes: one already a multiple of 32, one that eval and the export must pad."""
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (2, 32, 32, 1), np.uint8),
          rng.integers(0, 256, (1, 45, 70, 1), np.uint8)]


def _checkpoint_logits(config, workdir, images):
  """The logits --mode=eval computes for each image (padded to 32, cropped back)."""
  run = checkpointing.restore_run(config, str(workdir))
  evaluator, state = evaluate.evaluator_for(config, run), run.state
  records = [{'image': im, 'mask': np.zeros_like(im), 'id': f'{k}_{i}'}
             for k, batch in enumerate(images) for i, im in enumerate(batch)]
  by_id = {i: l for i, l, _ in evaluator.predictions(state, records)}
  return [np.stack([by_id[f'{k}_{i}'] for i in range(len(batch))])[..., None]
          for k, batch in enumerate(images)]


@pytest.fixture(name='exported', scope='module')
def exported_fixture(tmp_path_factory):
  """(config, workdir, path of the exported file, the checkpoint's logits of _images())."""
  tmp = tmp_path_factory.mktemp('export')
  config = tiny_checkpoint.tiny_config()
  tiny_checkpoint.save_checkpoint(config, tmp / 'run', step=4)
  run = checkpointing.restore_run(config, str(tmp / 'run'))
  graphdef, step = run.graphdef, run.step
  treedef, weights = export_tool.model_weights(run.state)
  assert step == 4
  infer = export_tool.inference_function(config, graphdef, treedef)
  exported = export_tool.export_jax(infer, weights, platforms=('cpu', 'cuda'))
  path = str(tmp / 'model.jaxexport')
  export_tool.write_model(path, exported, weights,
                          export_tool.run_metadata(config, str(tmp / 'run'), 'last', step))
  return config, tmp / 'run', path, _checkpoint_logits(config, tmp / 'run', _images())


def test_exported_model_has_symbolic_shapes_and_the_checkpoints_logits(exported):
  _, _, path, expected = exported
  model = exported_model.ExportedModel(path)
  assert str(model.exported.in_avals[-1].shape) == '(b, h, w, 1)'
  assert model.metadata['step'] == 4 and model.metadata['pad_multiple'] == 32
  assert set(model.exported.platforms) == {'cpu', 'cuda'}
  for images, want in zip(_images(), expected):
    got = model.logits(images)
    assert got.shape == images.shape and got.dtype == np.float32
    # Equal but for the interpolation weights' last bit (see the test above).
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    confident = np.abs(want) > 1e-3
    np.testing.assert_array_equal((got > 0)[confident], (want > 0)[confident])
  # [H, W] in, [H, W] out
  single = _images()[1][0, ..., 0]
  np.testing.assert_allclose(model.logits(single), expected[1][0, ..., 0], rtol=1e-5,
                             atol=1e-5)


def test_loader_refuses_other_files_and_non_uint8(tmp_path, exported):
  np.savez(tmp_path / 'other.npz', a=np.zeros(3))
  with pytest.raises(ValueError, match='not an irstd_jax exported model'):
    exported_model.ExportedModel(str(tmp_path / 'other.npz'))
  model = exported_model.ExportedModel(exported[2])
  with pytest.raises(ValueError, match='expected uint8'):
    model.logits(np.zeros((32, 32), np.float32))


def test_loader_runs_with_only_jax_and_numpy(tmp_path, exported):
  """A fresh process in which flax, optax, orbax, PIL and the configs cannot import."""
  _, _, path, expected = exported
  images = _images()[1]
  np.save(tmp_path / 'images.npy', images)
  script = textwrap.dedent(f"""
      import sys
      for name in ('flax', 'optax', 'orbax', 'orbax.checkpoint', 'ml_collections',
                   'tensorflow_datasets', 'grain', 'clu', 'configs', 'PIL'):
        sys.modules[name] = None  # any import of them raises ImportError
      import numpy as np
      from irstd_jax.exported_model import ExportedModel
      model = ExportedModel({path!r})
      np.save({str(tmp_path / 'logits.npy')!r}, model.logits(np.load({str(tmp_path / 'images.npy')!r})))
      print(sorted(m for m in sys.modules if m.startswith('irstd_jax')))
  """)
  proc = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == "['irstd_jax', 'irstd_jax.exported_model']"
  np.testing.assert_allclose(np.load(tmp_path / 'logits.npy'), expected[1], rtol=1e-5,
                             atol=1e-5)


def test_onnx_size_must_be_multiples_of_32():
  assert export_tool.parse_size('256x320') == (256, 320)
  for bad in ('256', '250x256', 'axb', '0x32'):
    with pytest.raises(ValueError, match='--onnx_size'):
      export_tool.parse_size(bad)
