"""ONNX export (optional extra): onnxruntime reproduces the JAX logits within 1e-4."""
import subprocess
import sys

import jax
import numpy as np
import pytest

onnx = pytest.importorskip(
    'onnx', reason='ONNX export is an optional extra: pip install -r requirements-onnx.txt')
ort = pytest.importorskip(
    'onnxruntime', reason='the parity test runs the graph with onnxruntime: pip install -r '
    'requirements-onnx.txt')

import tiny_checkpoint  # noqa: E402
from conftest import REPO, load_config  # noqa: E402
from irstd_jax.tools import export as export_tool  # noqa: E402
from irstd_jax.tools import onnx_export  # noqa: E402

TINY_WIDTHS = (4, 8, 8, 16, 16)


def _onnx_and_jax(config_path, height=64, width=96, batch=3):
  config = load_config(config_path)
  config.model.widths = TINY_WIDTHS
  graphdef, state, _, _ = tiny_checkpoint.build(config)
  leaves, treedef = jax.tree.flatten((state.params, state.model_state))
  weights = [np.asarray(x) for x in leaves]
  # Random init leaves every BatchNorm at mean 0, var 1, scale 1, bias 0: move them so
  # the folded scale and shift matter (all-ones vectors stay positive, as variances must).
  rng = np.random.default_rng(0)
  weights = [np.abs(w + 0.3 * rng.standard_normal(w.shape).astype(w.dtype)) + 0.5
             if w.ndim == 1 and np.all(w == 1.0) else
             (w + 0.2 * rng.standard_normal(w.shape).astype(w.dtype)
              if w.ndim == 1 and np.all(w == 0.0) else w) for w in weights]
  infer = export_tool.inference_function(config, graphdef, treedef, pad=False)
  model = onnx_export.to_onnx(infer, weights, height=height, width=width)
  session = ort.InferenceSession(model.SerializeToString(),
                                 providers=['CPUExecutionProvider'])
  images = np.random.default_rng(1).integers(0, 256, (batch, height, width, 1), np.uint8)
  got = session.run(['logits'], {'images': images})[0]
  want = np.asarray(jax.jit(infer)(weights, images))
  return got, want, model


@pytest.mark.parametrize('config_path', [
    'configs/synthetic.py',  # CBAM attention, plain convs
    'configs/full_model.py:synthetic',  # rotated pinwheel (straight-through custom_vjp)
    'configs/ablation/a9_gsconv.py:synthetic',  # Gaussian-shaped convs in E0
    'configs/ablation/a8_pconv_sd.py:synthetic',  # PConv (asymmetric padding) in E0
])
def test_onnxruntime_reproduces_the_jax_logits(config_path):
  got, want, model = _onnx_and_jax(config_path)
  assert got.shape == want.shape == (3, 64, 96, 1) and got.dtype == np.float32
  assert np.abs(want).max() > 0.05  # not a degenerate all-zero comparison
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
  ops = {n.op_type for n in model.graph.node}
  assert 'Conv' in ops and 'Einsum' in ops  # the network, not a folded constant


def test_batch_is_dynamic_and_size_is_fixed():
  config = load_config('configs/synthetic.py')
  config.model.widths = TINY_WIDTHS
  graphdef, state, _, _ = tiny_checkpoint.build(config)
  leaves, treedef = jax.tree.flatten((state.params, state.model_state))
  weights = [np.asarray(x) for x in leaves]
  infer = export_tool.inference_function(config, graphdef, treedef, pad=False)
  model = onnx_export.to_onnx(infer, weights, height=32, width=64)
  dims = model.graph.input[0].type.tensor_type.shape.dim
  assert [d.dim_param or d.dim_value for d in dims] == ['batch', 32, 64, 1]
  session = ort.InferenceSession(model.SerializeToString(),
                                 providers=['CPUExecutionProvider'])
  images = np.random.default_rng(2).integers(0, 256, (5, 32, 64, 1), np.uint8)
  batched = session.run(['logits'], {'images': images})[0]
  one = session.run(['logits'], {'images': images[2:3]})[0]
  np.testing.assert_allclose(batched[2:3], one, rtol=0, atol=1e-6)
  np.testing.assert_allclose(batched, np.asarray(jax.jit(infer)(weights, images)), rtol=0,
                             atol=1e-4)


def test_unsupported_primitive_is_named():
  def uses_cumsum(weights, images):
    return jax.numpy.cumsum(images.astype(np.float32), axis=1) * weights[0]
  with pytest.raises(onnx_export.UnsupportedPrimitiveError, match="'cumsum'"):
    onnx_export.to_onnx(uses_cumsum, [np.ones((), np.float32)], height=32, width=32)


@pytest.mark.slow
def test_export_command_writes_both_files(tmp_path):
  config = tiny_checkpoint.tiny_config()
  tiny_checkpoint.save_checkpoint(config, tmp_path / 'run', step=2)
  proc = subprocess.run(
      [sys.executable, '-m', 'irstd_jax.tools.export', '--config=configs/synthetic.py',
       '--config.model.widths=(4,8,8,16,16)', f'--workdir={tmp_path}/run',
       '--platforms=cpu', f'--onnx={tmp_path}/m.onnx', '--onnx_size=32x32'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (tmp_path / 'run' / 'model.jaxexport').is_file()
  model = onnx.load(str(tmp_path / 'm.onnx'))
  assert {p.key for p in model.metadata_props} >= {'step', 'model'}
  bad = subprocess.run(
      [sys.executable, '-m', 'irstd_jax.tools.export', '--config=configs/synthetic.py',
       f'--workdir={tmp_path}/run', f'--onnx={tmp_path}/bad.onnx', '--onnx_size=30x32'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert bad.returncode == 2 and 'multiples of 32' in bad.stderr
  assert not (tmp_path / 'bad.onnx').exists()
