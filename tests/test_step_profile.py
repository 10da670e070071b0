"""benchmarks/step_profile.py: the per-part profile of a train step puts each op where it belongs
(and benchmarks/speed.py gives it executables compiled from the current sources).

The PyTorch test needs torch (optional, requirements-bench.txt) and skips without it.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from benchmarks import speed
from benchmarks import step_profile
from irstd_jax import models

# A compiled module's text as XLA prints it, cut down: the stack-frame tables, one fusion of a
# BatchNorm multiply with a ReLU, a backward convolution and an optimizer op.
_HLO = '''HloModule jit_step, is_scheduled=true

FileNames
1 "/site-packages/flax/nnx/nn/normalization.py"
2 "/repo/irstd_jax/models.py"
3 "/site-packages/optax/_src/transform.py"

FunctionNames
1 "_normalize"
2 "ResBlock.__call__"
3 "update_fn"

FileLocations
1 {file_name_id=1 function_name_id=1 line=180 end_line=180 column=4 end_column=13}
2 {file_name_id=2 function_name_id=2 line=147 end_line=147 column=10 end_column=43}
3 {file_name_id=3 function_name_id=3 line=9 end_line=9 column=1 end_column=2}

StackFrames
1 {file_location_id=2 parent_frame_id=1}
2 {file_location_id=1 parent_frame_id=1}
3 {file_location_id=3 parent_frame_id=3}

%fused_computation.1 (param_0: f32[4]) -> f32[4] {
  %param_0 = f32[4]{0} parameter(0)
  %mul.1 = f32[4]{0} multiply(%param_0, %param_0), metadata={op_name="jit(step)/jvp()/mul" stack_frame_id=2}
  ROOT %max.1 = f32[4]{0} maximum(%mul.1, %param_0), metadata={op_name="jit(step)/jvp()/max" stack_frame_id=1}
}

%fused_computation.2 (param_0: f32[4]) -> f32[4,1] {
  %param_0 = f32[4]{0} parameter(0)
  ROOT %bitcast.1 = f32[4,1]{1,0} bitcast(%param_0)
}

ENTRY %main.9 (p0: f32[4], p1: f32[1,8,8,4]) -> f32[4] {
  %p0 = f32[4]{0} parameter(0)
  %p1 = f32[1,8,8,4]{3,2,1,0} parameter(1)
  %multiply_maximum_fusion = f32[4]{0} fusion(%p0), kind=kLoop, calls=%fused_computation.1, metadata={op_name="jit(step)/jvp()/max" stack_frame_id=1}
  %bitcast_fusion = f32[4,1]{1,0} fusion(%p0), kind=kLoop, calls=%fused_computation.2
  %convolution.3 = f32[3,3,4,4]{3,2,1,0} convolution(%p1, %p1), window={size=8x8}, dim_labels=b01f_io01->b01f, metadata={op_name="jit(step)/transpose(jvp())/conv_general_dilated" stack_frame_id=1}
  %transpose.2 = f32[4,4,3,3]{3,2,1,0} transpose(%convolution.3), dimensions={3,2,0,1}
  ROOT %add.7 = f32[4]{0} add(%p0, %p0), metadata={op_name="jit(step)/add" stack_frame_id=3}
}
'''


def test_parse_hlo_reads_stacks_and_fusions():
  instrs = step_profile.parse_hlo(_HLO)
  fusion = instrs['multiply_maximum_fusion']
  assert fusion.opcode == 'fusion'
  assert fusion.fused_opcodes == {'parameter', 'multiply', 'maximum'}
  # Frame 2 is _normalize called from ResBlock.__call__ (frame 1, a root).
  mul = next(i for i in fusion.fused if i.opcode == 'multiply')
  assert [f for _, f in mul.functions] == ['_normalize', 'ResBlock.__call__']
  assert instrs['convolution.3'].op_name.endswith('transpose(jvp())/conv_general_dilated')


def test_jax_parts_by_rule():
  instrs = step_profile.parse_hlo(_HLO)
  # BatchNorm's multiply fused with the block's ReLU: half each.
  assert step_profile.jax_parts(instrs['multiply_maximum_fusion']) == {
      'batchnorm': 0.5, 'other': 0.5}
  assert step_profile.jax_parts(instrs['bitcast_fusion']) == {'layout copies': 1.0}
  assert step_profile.jax_parts(instrs['convolution.3']) == {'conv backward': 1.0}
  assert step_profile.jax_parts(instrs['transpose.2']) == {'layout copies': 1.0}
  assert step_profile.jax_parts(instrs['add.7']) == {'optimizer': 1.0}


def test_onednn_custom_calls_count_as_convolutions():
  """irstd_jax/onednn_conv.py's custom calls, as XLA prints them (attributes cut)."""
  calls = ''.join(
      f'  %ffi_call.{i} = f32[1,8,8,4]{{3,2,1,0}} custom-call(%p1, %p1), '
      f'custom_call_target="irstd_onednn_conv_{kind}", api_version=API_VERSION_TYPED_FFI, '
      f'metadata={{op_name="jit(step)/{scope}/ffi_call" stack_frame_id=1}}\n'
      for i, (kind, scope) in enumerate([('forward', 'jvp()'),
                                         ('backward_data', 'transpose(jvp())'),
                                         ('backward_weights', 'transpose(jvp())')]))
  instrs = step_profile.parse_hlo(_HLO.replace('  ROOT %add.7', calls + '  ROOT %add.7'))
  assert instrs['ffi_call.0'].custom_call_target == 'irstd_onednn_conv_forward'
  assert step_profile.jax_parts(instrs['ffi_call.0']) == {'conv forward': 1.0}
  assert step_profile.jax_parts(instrs['ffi_call.1']) == {'conv backward': 1.0}
  assert step_profile.jax_parts(instrs['ffi_call.2']) == {'conv backward': 1.0}


def test_the_projects_batchnorm_counts_as_batchnorm():
  """irstd_jax.layers.BatchNorm computes its statistics itself, outside flax's module."""
  hlo = _HLO.replace('"/site-packages/flax/nnx/nn/normalization.py"', '"/repo/irstd_jax/layers.py"')
  hlo = hlo.replace('1 "_normalize"', '1 "BatchNorm.__call__"')
  instrs = step_profile.parse_hlo(hlo)
  assert step_profile.jax_parts(instrs['multiply_maximum_fusion']) == {
      'batchnorm': 0.5, 'other': 0.5}


class _Tiny(nnx.Module):

  def __init__(self, rngs):
    self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, use_running_average=True, rngs=rngs)  # no state to update

  def __call__(self, x):
    return models.upsample_bilinear(jax.nn.relu(self.bn(self.conv(x))), 2)


def _tiny_step():
  model = _Tiny(nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adagrad(0.05)
  opt_state = tx.init(params)

  def step(params, opt_state, x):
    def loss_fn(p):
      y = nnx.merge(graphdef, p, rest)(x)
      return jnp.mean(y ** 2)
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 2)), jnp.float32)
  compiled = jax.jit(step).lower(params, opt_state, x).compile()
  return compiled, (params, opt_state, x)


def test_compiled_step_parts():
  """One conv whose input needs no gradient: one forward convolution and one backward (the
  weight gradient); BatchNorm, upsampling and the optimizer each own some instructions."""
  compiled, _ = _tiny_step()
  instrs = step_profile.parse_hlo(compiled.as_text())
  convs = [i for i in instrs.values()
           if 'convolution' in i.fused_opcodes | {i.opcode} and not i.inside_fusion]
  parts = [step_profile.jax_part(i) for i in convs]
  assert sorted(parts) == ['conv backward', 'conv forward'], parts
  seen = set()
  for i in instrs.values():
    seen.update(step_profile.jax_parts(i))
  assert {'batchnorm', 'upsampling', 'optimizer'} <= seen, seen


def test_profile_jax_traces_the_convolutions():
  compiled, args = _tiny_step()
  run = lambda: jax.block_until_ready(compiled(*args))
  run()
  prof = step_profile.profile_jax(compiled, run, steps=2)
  ms = prof['ms_per_step']
  assert set(ms) == set(step_profile.PARTS)
  assert ms['conv forward'] > 0 and ms['conv backward'] > 0, ms
  assert all(v >= 0 for v in ms.values())
  assert prof['wall_ms'] > 0


def _torch_available() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


@pytest.mark.skipif(not _torch_available(),
                    reason='torch is not installed (optional: pip install -r requirements-bench.txt)')
def test_profile_torch_parts():
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  class Attention(nn.Module):

    def forward(self, x):
      return torch.sigmoid(x.mean(dim=1, keepdim=True))

  model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), Attention(),
                        nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True))
  step_profile.instrument_torch_model(model, (Attention,))
  opt = torch.optim.Adagrad(model.parameters(), lr=0.05)
  x = torch.randn(2, 2, 16, 16)

  def run():
    opt.zero_grad()
    y = model(x)
    with torch.profiler.record_function('irstd::loss'):
      loss = (y ** 2).mean()
    loss.backward()
    opt.step()

  run()
  ms = step_profile.profile_torch(run, steps=2)['ms_per_step']
  for part in ('conv forward', 'conv backward', 'batchnorm', 'attention', 'upsampling', 'loss',
               'optimizer'):
    assert ms[part] > 0, (part, ms)


def test_the_interleaved_compilation_cache_is_keyed_by_the_source_version(tmp_path):
  """JAX's persistent cache ignores source locations: a rename alone must change the cache
  folder, or the profile would read the old executable's function names."""
  package = tmp_path / 'pkg'
  (package / 'sub').mkdir(parents=True)
  (package / 'layers.py').write_text('def batch_norm(x):\n  return x\n')
  (package / 'sub' / 'notes.txt').write_text('not source')
  first = speed.source_keyed('/cache', str(package))
  assert first.startswith('/cache/') and first == speed.source_keyed('/cache', str(package))
  (package / 'sub' / 'notes.txt').write_text('changed, still not source')
  assert speed.source_keyed('/cache', str(package)) == first
  (package / 'layers.py').write_text('def _batch_norm(x):\n  return x\n')
  assert speed.source_keyed('/cache', str(package)) != first
  assert speed.source_keyed('/cache') != first  # the default: irstd_jax's own sources
