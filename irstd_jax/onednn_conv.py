"""oneDNN convolutions on XLA:CPU, an optional backend for every `nnx.Conv` of the model.

XLA:CPU's convolution backward pass is what remains of the train step's gap to PyTorch,
which hands its convolutions to oneDNN (benchmarks/README.md). `ext/onednn_conv.cc` wraps
oneDNN's forward, backward-data and backward-weights convolutions as `jax.ffi` custom
calls; `conv_general_dilated` here has `lax.conv_general_dilated`'s signature (what
`nnx.Conv(conv_general_dilated=...)` calls) and a `jax.custom_vjp` whose backward pass
calls the two backward handlers.

`model.conv_backend` picks the backend (`resolve_conv_function`): 'xla' (lax.conv),
'onednn', or 'auto'. 'onednn' and 'auto' run oneDNN only where it can: the extension is
built and loads, the default backend is the CPU, and there is one device (a custom call
does not shard, so a multi-device mesh keeps lax.conv). Anywhere else they fall back to
lax.conv, and so does every call that is not a float32 NHWC/HWIO convolution with static
shapes (`jax.export` with symbolic sizes, transposed convolutions, ...). One log line says
which backend runs.

Build (`make venv` runs it; a few seconds of g++; needs the pip packages of
requirements-onednn.txt):

    python -m irstd_jax.onednn_conv --build
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax

BACKENDS = ('xla', 'onednn', 'auto')
# oneDNN's CPU-only build with GNU OpenMP threads (requirements-onednn.txt says why not the
# newer `onednn` package).
ONEDNN, ONEDNN_DEVEL = 'onednn-cpu-gomp', 'onednn-devel-cpu-gomp'
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ext', 'onednn_conv.cc')
# One build per environment: the library is linked against that environment's libdnnl.
LIBRARY = os.path.join(sys.prefix, 'lib', 'irstd_jax_onednn_conv.so')
# The SHA-256 of the source a library was built from, written beside it: a checkout whose
# source has the same content (a new clone, a worktree, a `git checkout` that touched the
# file) keeps using the build, and a changed source is never run with an old build.
STAMP_SUFFIX = '.source-sha256'

_TARGETS = {'forward': 'OnednnConvForward', 'backward_data': 'OnednnConvBackwardData',
            'backward_weights': 'OnednnConvBackwardWeights'}
_NHWC_HWIO = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                      out_spec=(0, 3, 1, 2))
_logged: set[str] = set()


def _target_name(kind: str) -> str:
  return f'irstd_onednn_conv_{kind}'


def _onednn_paths() -> tuple[str, str]:
  """(include dir, lib dir) of the pip packages onednn-devel-cpu-gomp and onednn-cpu-gomp."""
  def locate(dist: str, suffix: str) -> str:
    for f in importlib.metadata.files(dist) or ():
      if str(f).replace('\\', '/').endswith(suffix):
        return os.path.abspath(str(f.locate()))
    raise FileNotFoundError(f'{dist} has no {suffix}')

  header = locate(ONEDNN_DEVEL, 'include/oneapi/dnnl/dnnl.hpp')
  library = locate(ONEDNN, 'libdnnl.so')
  return os.path.dirname(os.path.dirname(os.path.dirname(header))), os.path.dirname(library)


def build(output: str = LIBRARY) -> str:
  """Compiles ext/onednn_conv.cc into `output` (written aside, then renamed).

  Raises:
    importlib.metadata.PackageNotFoundError: a package of requirements-onednn.txt is missing.
    FileNotFoundError: it lacks the header or the library.
    RuntimeError: g++ failed (its first error line included).
  """
  include, libdir = _onednn_paths()
  os.makedirs(os.path.dirname(output), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(output))
  os.close(fd)
  # The wheel puts libdnnl.so in <prefix>/lib, outside the loader's search path.
  command = ['g++', '-O2', '-std=c++17', '-shared', '-fPIC',
             '-I', jax.ffi.include_dir(), '-I', include, SOURCE, '-o', tmp,
             '-L', libdir, '-ldnnl', f'-Wl,-rpath,{libdir}']
  try:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
      errors = [line for line in result.stderr.splitlines() if 'error' in line]
      raise RuntimeError(f'g++ failed: {(errors or [result.stderr.strip()])[0]}')
    os.replace(tmp, output)
    with open(output + STAMP_SUFFIX, 'w') as f:
      f.write(source_sha256() + '\n')
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return output


def source_sha256() -> str:
  with open(SOURCE, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def stale_reason(library: str = LIBRARY) -> str | None:
  """Why `library` was not built from the current SOURCE, or None when it was.

  Compared by content (the stamp `build` writes); a library built before stamps existed is
  compared by modification time.
  """
  rebuild = 'rebuild: python -m irstd_jax.onednn_conv --build'
  stamp = library + STAMP_SUFFIX
  if os.path.exists(stamp):
    with open(stamp) as f:
      if f.read().strip() != source_sha256():
        return f'{library} was built from another version of {SOURCE} ({rebuild})'
    return None
  if os.path.getmtime(library) < os.path.getmtime(SOURCE):
    return f'{library} is older than {SOURCE} ({rebuild})'
  return None


@functools.cache
def _load() -> str | None:
  """Loads the library and registers its targets once; None, or why it is unavailable."""
  if not os.path.exists(LIBRARY):
    return f'{LIBRARY} is not built (python -m irstd_jax.onednn_conv --build)'
  stale = stale_reason()
  if stale is not None:
    return stale
  try:
    library = ctypes.cdll.LoadLibrary(LIBRARY)
    for kind, symbol in _TARGETS.items():
      jax.ffi.register_ffi_target(_target_name(kind), jax.ffi.pycapsule(getattr(library, symbol)),
                                  platform='cpu')
  except (OSError, AttributeError) as e:
    return f'{LIBRARY} does not load: {e}'
  return None


def unavailable_reason() -> str | None:
  """None when the extension is built and loaded, else one line saying why not."""
  return _load()


def unavailable_here() -> str | None:
  """None when this process's model convolutions can run on oneDNN, else why not: the
  default backend is not the CPU, there are several devices, or the extension is unusable."""
  if jax.default_backend() != 'cpu':
    return f'the default backend is {jax.default_backend()}'
  if jax.device_count() > 1:
    return f'{jax.device_count()} devices (the custom call does not shard)'
  return unavailable_reason()


def _log_once(message: str) -> None:
  if message not in _logged:
    _logged.add(message)
    logging.info('%s', message)


def resolve_conv_function(backend: str):
  """The `conv_general_dilated` for `model.conv_backend`: this module's or lax's.

  'onednn' and 'auto' give oneDNN's on a single CPU device when the extension loads, else
  lax.conv_general_dilated (`auto` is the default of configs/base.py, chosen from the
  measurement in benchmarks/README.md). Logs the choice once.

  Raises:
    ValueError: an unknown backend.
  """
  if backend not in BACKENDS:
    raise ValueError(f'unknown conv backend {backend!r}; use one of {", ".join(BACKENDS)}')
  if backend == 'xla':
    _log_once('conv backend: xla (lax.conv)')
    return lax.conv_general_dilated
  why = unavailable_here()
  if why is not None:
    _log_once(f'conv backend: xla (lax.conv); {backend} asked for oneDNN, unavailable: {why}')
    return lax.conv_general_dilated
  _log_once(f'conv backend: onednn ({LIBRARY})')
  return conv_general_dilated


def resolved_backend(backend: str) -> str:
  """'onednn' or 'xla': which backend `model.conv_backend = backend` runs here."""
  return 'onednn' if resolve_conv_function(backend) is conv_general_dilated else 'xla'


def _static_ints(shape) -> bool:
  return all(isinstance(d, (int, np.integer)) for d in shape)


def _onednn_spec(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                 dimension_numbers, feature_group_count, batch_group_count,
                 preferred_element_type):
  """(strides, padding_lo, padding_hi, dilation, groups) when oneDNN can run it, else None."""
  if lhs.ndim != 4 or rhs.ndim != 4 or lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
    return None
  if not (_static_ints(lhs.shape) and _static_ints(rhs.shape)):
    return None
  if min(lhs.shape) < 1 or min(rhs.shape) < 1:  # an empty operand
    return None
  if preferred_element_type not in (None, jnp.float32) or batch_group_count != 1:
    return None
  if lhs_dilation is not None and tuple(lhs_dilation) != (1, 1):
    return None
  if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != _NHWC_HWIO:
    return None
  strides = tuple(int(s) for s in window_strides)
  dilation = (1, 1) if rhs_dilation is None else tuple(int(d) for d in rhs_dilation)
  if isinstance(padding, str):
    window = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dilation)]
    padding = lax.padtype_to_pads(lhs.shape[1:3], window, strides, padding)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  if min(min(p) for p in padding) < 0 or min(strides) < 1 or min(dilation) < 1:
    return None
  groups = int(feature_group_count)
  if lhs.shape[3] != rhs.shape[2] * groups or rhs.shape[3] % groups:
    return None
  for size, k, d, s, (lo, hi) in zip(lhs.shape[1:3], rhs.shape[:2], dilation, strides, padding):
    if size + lo + hi < (k - 1) * d + 1:  # empty output
      return None
  return strides, tuple(p[0] for p in padding), tuple(p[1] for p in padding), dilation, groups


def _output_shape(x_shape, w_shape, spec):
  strides, lo, hi, dilation, _ = spec
  spatial = [(size + l + h - (k - 1) * d - 1) // s + 1
             for size, k, d, s, l, h in zip(x_shape[1:3], w_shape[:2], dilation, strides, lo, hi)]
  return (x_shape[0], *spatial, w_shape[3])


def _call(kind: str, a: jax.Array, b: jax.Array, out_shape, spec) -> jax.Array:
  strides, lo, hi, dilation, groups = spec
  return jax.ffi.ffi_call(
      _target_name(kind), jax.ShapeDtypeStruct(out_shape, jnp.float32),
      vmap_method='sequential')(
          a, b, strides=np.asarray(strides, np.int64), padding_lo=np.asarray(lo, np.int64),
          padding_hi=np.asarray(hi, np.int64), dilation=np.asarray(dilation, np.int64),
          groups=np.int64(groups))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _onednn_conv(x: jax.Array, w: jax.Array, spec) -> jax.Array:
  return _call('forward', x, w, _output_shape(x.shape, w.shape, spec), spec)


def _onednn_conv_fwd(x, w, spec):
  return _onednn_conv(x, w, spec), (x, w)


def _onednn_conv_bwd(spec, residuals, dy):
  x, w = residuals
  dx = _call('backward_data', dy, w, x.shape, spec)
  dw = _call('backward_weights', x, dy, w.shape, spec)
  return dx, dw


_onednn_conv.defvjp(_onednn_conv_fwd, _onednn_conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding,
                         lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None, out_sharding=None
                         ) -> jax.Array:
  """`lax.conv_general_dilated` run by oneDNN where it can, else lax's.

  oneDNN runs float32 2-D convolutions with NHWC inputs, HWIO kernels and NHWC outputs,
  static shapes, any strides, non-negative padding, kernel dilation and feature groups;
  its float32 results equal XLA:CPU's within float rounding (tests/test_onednn_conv.py).
  `precision` does not apply (both compute in float32 on a CPU). Anything else, and any
  `out_sharding`, goes to lax.conv_general_dilated unchanged.
  """
  spec = None
  if out_sharding is None and unavailable_reason() is None:
    spec = _onednn_spec(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                        dimension_numbers, feature_group_count, batch_group_count,
                        preferred_element_type)
  if spec is None:
    kwargs = {} if out_sharding is None else {'out_sharding': out_sharding}
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type, **kwargs)
  return _onednn_conv(lhs, rhs, spec)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--build', action='store_true', help=f'compile {SOURCE} into {LIBRARY}')
  args = parser.parse_args(argv)
  if not args.build:
    why = unavailable_reason()
    print('oneDNN convolutions: ' + ('available' if why is None else f'unavailable: {why}'))
    return 0 if why is None else 1
  try:
    print(f'built {build()}')
  except (FileNotFoundError, importlib.metadata.PackageNotFoundError, RuntimeError,
          OSError) as e:
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    print(f'oneDNN convolutions not built ({message}); convolutions run on lax.conv',
          file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
