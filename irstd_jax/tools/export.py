"""A run's trained model as a file that runs without the training code.

    python -m irstd_jax.tools.export --config=configs/synthetic.py --workdir=runs/synthetic \
        [--checkpoint=last|best] [--out=runs/synthetic/model.jaxexport] [--platforms=cpu,cuda] \
        [--onnx=runs/synthetic/model.onnx --onnx_size=256x256]

jax.export (always): the inference function with its weights in one .npz file that
`irstd_jax.exported_model.ExportedModel` (jax and numpy only) loads. Batch, height and
width are symbolic: any uint8 [B, H, W, 1] goes in, the logits [B, H, W, 1] come out,
padded to 32 and cropped inside, exactly as `--mode=eval` runs the network.

ONNX (optional extra, `pip install -r requirements-onnx.txt`): the same function at one
height x width (multiples of 32, `--onnx_size`) and any batch, converted from its jaxpr
by irstd_jax/tools/onnx_export.py, for onnxruntime, TensorRT or OpenVINO.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from irstd_jax import checkpointing
from irstd_jax import evaluate
from irstd_jax import exported_model


def inference_function(config, graphdef, treedef, *, pad: bool = True):
  """(weights: list of arrays, uint8 images [B, H, W, 1]) -> logits [B, H, W, 1].

  Runs evaluate.eval_step (BatchNorm in inference mode, the run's normalisation). With
  `pad`, first zero-pads at the bottom/right to `config.eval.pad_multiple` and crops the
  logits back, as eval does; without, H and W must already be multiples of it (ONNX).
  """
  multiple = config.eval.pad_multiple
  step = functools.partial(evaluate.eval_step, graphdef=graphdef, mean=config.data.mean,
                           std=config.data.std)

  def infer(weights, images):
    params, model_state = jax.tree.unflatten(treedef, weights)
    if not pad:
      return step(params, model_state, images)
    b, h, w, c = images.shape
    padded = jnp.zeros((b, (h + multiple - 1) // multiple * multiple,
                        (w + multiple - 1) // multiple * multiple, c), images.dtype)
    padded = jax.lax.dynamic_update_slice(padded, images, (0, 0, 0, 0))
    return step(params, model_state, padded)[:, :h, :w]

  return infer


def model_weights(state) -> tuple[jax.tree_util.PyTreeDef, list[np.ndarray]]:
  """(treedef, weights as numpy) of a state's parameters and BatchNorm statistics.

  inference_function(config, graphdef, treedef) is the function of those weights; the
  state comes from checkpointing.restore_run.
  """
  leaves, treedef = jax.tree.flatten((state.params, state.model_state))
  return treedef, [np.asarray(leaf) for leaf in leaves]


def export_jax(infer, weights: Sequence[np.ndarray], *, platforms: Sequence[str] = ('cpu',)
               ) -> export.Exported:
  """jax.export of `infer` for uint8 [b, h, w, 1] with b, h, w symbolic."""
  b, h, w = export.symbolic_shape('b, h, w')
  weight_specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in weights]
  return export.export(jax.jit(infer), platforms=tuple(platforms))(
      weight_specs, jax.ShapeDtypeStruct((b, h, w, 1), jnp.uint8))


def write_model(path: str, exported: export.Exported, weights: Sequence[np.ndarray],
                metadata: dict) -> None:
  """Writes the .npz that exported_model.ExportedModel reads (aside, then renamed)."""
  metadata = {'format': exported_model.FORMAT, 'num_weights': len(weights),
              'platforms': list(exported.platforms), 'jax_version': jax.__version__,
              'input': 'uint8 images [B, H, W, 1], any B, H, W',
              'output': 'float32 logits [B, H, W, 1]; mask = logits > 0', **metadata}
  arrays = {exported_model.weight_name(i): w for i, w in enumerate(weights)}
  arrays['exported'] = np.frombuffer(bytes(exported.serialize()), np.uint8)
  arrays['metadata'] = np.frombuffer(json.dumps(metadata, indent=1).encode(), np.uint8)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  try:
    with open(tmp, 'wb') as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def run_metadata(config, workdir: str, checkpoint: str, step: int) -> dict:
  return {'workdir': os.path.abspath(workdir), 'checkpoint': checkpoint, 'step': step,
          'dataset': config.data.name, 'pad_multiple': config.eval.pad_multiple,
          'normalisation': {'mean': config.data.mean, 'std': config.data.std},
          'model': config.model.to_dict()}


def parse_size(spec: str, multiple: int = 32) -> tuple[int, int]:
  """'HxW' (each a multiple of `multiple`) -> (H, W)."""
  try:
    h, w = (int(v) for v in spec.lower().split('x'))
  except ValueError:
    raise ValueError(f'--onnx_size={spec!r}: expected HxW, e.g. 256x256') from None
  if h <= 0 or w <= 0 or h % multiple or w % multiple:
    raise ValueError(f'--onnx_size={spec!r}: height and width must be positive multiples '
                     f'of {multiple} (pad frames to it, as eval does)')
  return h, w


def main(argv: Sequence[str]) -> None:  # pragma: no cover - exercised via subprocess
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise SystemExit(f'error: unexpected arguments {argv[1:]}')
  f = flags.FLAGS
  config = f.config
  out = f.out or os.path.join(f.workdir, 'model.jaxexport')
  try:
    onnx_size = parse_size(f.onnx_size, config.eval.pad_multiple) if f.onnx else None
    if f.onnx:
      from irstd_jax.tools import onnx_export  # pylint: disable=g-import-not-at-top
      onnx_export.require_onnx()
    run = checkpointing.restore_run(config, f.workdir, f.checkpoint)
    graphdef, step = run.graphdef, run.step
    treedef, weights = model_weights(run.state)
    metadata = run_metadata(config, f.workdir, f.checkpoint, step)
    exported = export_jax(inference_function(config, graphdef, treedef), weights,
                          platforms=f.platforms)
    write_model(out, exported, weights, metadata)
    print(f'{out}: jax.export of step {step} ({f.checkpoint}), {len(weights)} weight arrays, '
          f'{os.path.getsize(out) / 1e6:.1f} MB, platforms {list(exported.platforms)}; '
          'load with irstd_jax.exported_model.ExportedModel', flush=True)
    if f.onnx:
      model = onnx_export.to_onnx(inference_function(config, graphdef, treedef, pad=False),
                                  weights, height=onnx_size[0], width=onnx_size[1],
                                  metadata={k: json.dumps(v) for k, v in metadata.items()})
      onnx_export.save(model, f.onnx)
      print(f'{f.onnx}: ONNX opset {onnx_export.OPSET}, input uint8 [batch, {onnx_size[0]}, '
            f'{onnx_size[1]}, 1], {os.path.getsize(f.onnx) / 1e6:.1f} MB', flush=True)
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':  # pragma: no cover
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags as _flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Config file the run was trained with.',
                                  lock_config=True)
  _flags.DEFINE_string('workdir', None, 'The run directory.', required=True)
  _flags.DEFINE_enum('checkpoint', 'last', ['last', 'best'], 'Which checkpoint.')
  _flags.DEFINE_string('out', None, 'The jax.export file (default WORKDIR/model.jaxexport).')
  _flags.DEFINE_list('platforms', ['cpu', 'cuda'], 'Platforms to lower for (jax.export).')
  _flags.DEFINE_string('onnx', None, 'Also write an ONNX model here (needs '
                       'requirements-onnx.txt).')
  _flags.DEFINE_string('onnx_size', '256x256', 'ONNX input height x width (multiples of 32).')
  _flags.mark_flag_as_required('config')
  app.run(main)
