"""Where one train step's time goes, part by part, in JAX and in the PyTorch reference.

Both sides are profiled with their framework's own tracer and every traced operation is put in
one of `PARTS`, by the same rules on both sides:

1. convolutions first (so the attention's and the heads' convs count as convolutions too),
   split into forward and backward (backward = data and weight gradients);
2. layout copies: transposes and copies that only move data (XLA's transpose/copy thunks,
   PyTorch's copy_/clone/contiguous);
3. the rest by the code it came from: BatchNorm, attention (channel and spatial, minus their
   convs), upsampling, loss, optimizer; everything else (ReLU, pooling, concatenation,
   residual adds, bias adds) is `other`.

JAX (`profile_jax`): `jax.profiler.trace` records one event per XLA:CPU thunk, named after its
HLO instruction; the compiled module's text gives each instruction's opcode, the opcodes fused
into it, its name stack (`transpose(jvp(...))` marks the backward pass) and the Python call
stack it was traced from (flax's `BatchNorm.__call__`, `upsample_bilinear`, a frame in
irstd_jax/losses.py, optax, ...; XLA keeps only the innermost one or two frames, which is
enough to tell these apart). A fusion's time is shared among the parts of what it fused.

PyTorch (`profile_torch`): `torch.profiler` with a `record_function` scope around the loss and
around each attention module's forward; each op's self time goes to the nearest enclosing
event a rule matches; a backward node inherits the category of the forward op that made it
(autograd's sequence number), except convolution/BatchNorm/upsampling backward nodes, which
are matched by name.

Times are busy milliseconds per step summed over the framework's threads: XLA may run two
independent thunks at once and PyTorch runs autograd on its own thread, so a column can add
up to more than the step's wall time. Compare shares, and each part's milliseconds across
frameworks.
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import os
import re
import tempfile
import time

PARTS = ('conv forward', 'conv backward', 'batchnorm', 'attention', 'upsampling', 'loss',
         'optimizer', 'layout copies', 'other')

# ----------------------------------------------------------------------------- JAX


@dataclasses.dataclass
class HloInstruction:
  opcode: str
  op_name: str
  functions: tuple[tuple[str, str], ...]  # (file, function), innermost first
  fused_opcodes: frozenset[str]
  fused: tuple['HloInstruction', ...] = ()  # a fusion's instructions
  inside_fusion: bool = False  # part of a fused computation (never a thunk of its own)
  custom_call_target: str = ''  # a custom-call's target, e.g. irstd_onednn_conv_forward


_SECTION = re.compile(r'^(FileNames|FunctionNames|FileLocations|StackFrames)\s*$')
_INDEXED = re.compile(r'^\s*(\d+)\s+(.*)$')
_COMPUTATION = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$')
_OPCODE = re.compile(r'\s([a-z][a-z0-9\-]*)\(')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_FRAME_ID = re.compile(r'stack_frame_id=(\d+)')
_FIELDS = re.compile(r'(\w+)=(\d+)')
_TARGET = re.compile(r'custom_call_target="([^"]*)"')


def parse_hlo(text: str) -> dict[str, HloInstruction]:
  """Instructions of a compiled HLO module's text (`compiled.as_text()`), by name.

  Reads the module's stack-frame tables (FileNames, FunctionNames, FileLocations,
  StackFrames) that XLA prints when the module carries JAX's source information.
  """
  tables = collections.defaultdict(dict)
  section = None
  computations: dict[str, list[tuple[str, str]]] = {}
  current = None
  for line in text.splitlines():
    m = _SECTION.match(line)
    if m:
      section = m.group(1)
      continue
    if section is not None:
      m = _INDEXED.match(line)
      if m:
        tables[section][int(m.group(1))] = m.group(2).strip()
        continue
      section = None
    m = _COMPUTATION.match(line)
    if m and not line[0].isspace():  # headers start the line, instructions are indented
      current = m.group(1)
      computations[current] = []
      continue
    if current is not None:
      m = _INSTRUCTION.match(line)
      if m:
        computations[current].append((m.group(1), m.group(2)))

  def unquote(s):
    return s[1:-1] if s.startswith('"') and s.endswith('"') else s

  files = {k: unquote(v) for k, v in tables['FileNames'].items()}
  funcs = {k: unquote(v) for k, v in tables['FunctionNames'].items()}
  locations = {k: dict((a, int(b)) for a, b in _FIELDS.findall(v))
               for k, v in tables['FileLocations'].items()}
  frames = {k: dict((a, int(b)) for a, b in _FIELDS.findall(v))
            for k, v in tables['StackFrames'].items()}

  def stack(frame_id):
    out, seen = [], set()
    while frame_id in frames and frame_id not in seen:
      seen.add(frame_id)
      loc = locations.get(frames[frame_id].get('file_location_id'), {})
      out.append((files.get(loc.get('file_name_id'), ''),
                  funcs.get(loc.get('function_name_id'), '')))
      frame_id = frames[frame_id].get('parent_frame_id')
    return tuple(out)

  def opcode_of(rest):
    m = _OPCODE.search(' ' + rest.split(', metadata=')[0])
    return m.group(1) if m else ''

  def plain(rest):
    op_name = _OP_NAME.search(rest)
    frame = _FRAME_ID.search(rest)
    target = _TARGET.search(rest)
    return HloInstruction(opcode=opcode_of(rest), op_name=op_name.group(1) if op_name else '',
                          functions=stack(int(frame.group(1))) if frame else (),
                          fused_opcodes=frozenset(),
                          custom_call_target=target.group(1) if target else '')

  members = {c: tuple(plain(rest) for _, rest in instrs) for c, instrs in computations.items()}
  fused_computations = {m.group(1) for instrs in computations.values() for _, rest in instrs
                        if opcode_of(rest) == 'fusion' for m in [_CALLS.search(rest)] if m}
  out = {}
  for computation, instrs in computations.items():
    for name, rest in instrs:
      instr = plain(rest)
      instr.inside_fusion = computation in fused_computations
      calls = _CALLS.search(rest)
      if calls and instr.opcode == 'fusion':
        instr.fused = members.get(calls.group(1), ())
        instr.fused_opcodes = frozenset(i.opcode for i in instr.fused)
      out[name] = instr
  return out


_CONTAINERS = frozenset({'conditional', 'while', 'call', 'async-start', 'async-done'})
_LAYOUT = frozenset({'copy', 'transpose'})
_MOVES = frozenset({'copy', 'transpose', 'bitcast', 'parameter', 'reshape', 'broadcast',
                    'constant', 'tuple', 'get-tuple-element', ''})


def jax_parts(instr: HloInstruction) -> dict[str, float]:
  """The parts of the train step an XLA instruction's time goes to, as fractions.

  A fusion with a convolution is a convolution, one that only moves data a layout copy;
  any other fusion's time is shared equally among the parts of the instructions it fused
  (data movement inside it not counted), e.g. BatchNorm's normalisation fused with the
  ReLU that follows. Containers (conditional, while, call) get nothing: the thunks inside
  them are traced on their own.
  """
  if instr.opcode in _CONTAINERS:
    return {}
  if instr.opcode == 'fusion' and instr.fused and 'convolution' not in instr.fused_opcodes:
    real = [i for i in instr.fused if i.opcode not in _MOVES]
    if not real:
      return {'layout copies': 1.0}
    shares = collections.Counter(jax_part(i) for i in real)
    return {p: n / len(real) for p, n in shares.items()}
  return {jax_part(instr): 1.0}


def jax_part(instr: HloInstruction) -> str:
  """The part of the train step one (unfused) XLA instruction belongs to."""
  if instr.custom_call_target.startswith('irstd_onednn_conv_'):  # irstd_jax/onednn_conv.py
    return ('conv forward' if instr.custom_call_target.endswith('_forward')
            else 'conv backward')
  ops = instr.fused_opcodes | {instr.opcode}
  if 'convolution' in ops:
    # The backward pass is named transpose(jvp(...)). XLA's rewrites of gradient
    # convolutions can drop the metadata (no op_name): those count as backward too.
    conv = next((i for i in instr.fused if i.opcode == 'convolution'), instr)
    backward = 'transpose(' in conv.op_name or not conv.op_name
    return 'conv backward' if backward else 'conv forward'
  if instr.opcode in _LAYOUT or (instr.opcode == 'fusion' and instr.fused_opcodes
                                 and instr.fused_opcodes <= _MOVES):
    return 'layout copies'
  for path, function in instr.functions:
    name = os.path.basename(path)
    if '/optax/' in path:
      return 'optimizer'
    if ((name == 'normalization.py' and '/flax/' in path)
        or (name == 'layers.py' and '/irstd_jax/' in path and function.startswith('BatchNorm.'))):
      return 'batchnorm'  # flax's, or irstd_jax.layers.BatchNorm (PyTorch's running variance)
    if name == 'spatial_attention.py' or function.startswith('ChannelAttention.'):
      return 'attention'
    if function == 'upsample_bilinear':
      return 'upsampling'
    if name == 'losses.py' and '/irstd_jax/' in path:
      return 'loss'
  return 'other'


def profile_jax(compiled, run_step, steps: int) -> dict:
  """Per-part busy time of `steps` calls of `run_step()` (which runs `compiled` and waits).

  Returns {'ms_per_step': {part: ms}, 'steps': steps, 'wall_ms': wall time per traced step}.
  """
  import jax  # pylint: disable=g-import-not-at-top
  instructions = parse_hlo(compiled.as_text())
  trace_dir = tempfile.mkdtemp(prefix='irstd_profile_')
  t = time.perf_counter()
  with jax.profiler.trace(trace_dir):
    for _ in range(steps):
      run_step()
  wall = (time.perf_counter() - t) / steps
  paths = glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True)
  data = jax.profiler.ProfileData.from_file(paths[0])
  parts = collections.Counter()
  for plane in data.planes:
    if not plane.name.startswith('/host:CPU'):
      continue
    for line in plane.lines:
      if not line.name.startswith('tf_XLA'):
        continue
      for event in line.events:
        instr = instructions.get(event.name)
        if instr is None:
          continue
        for part, share in jax_parts(instr).items():
          parts[part] += share * event.duration_ns / 1e6
  return dict(ms_per_step={p: parts[p] / steps for p in PARTS}, steps=steps,
              wall_ms=wall * 1e3)


# ----------------------------------------------------------------------------- PyTorch

_TORCH_RULES = (
    # (predicate on the event name, part); the nearest enclosing event that matches wins.
    (lambda n: n.startswith('Optimizer.'), 'optimizer'),
    (lambda n: 'ConvolutionBackward' in n or n == 'aten::convolution_backward',
     'conv backward'),
    (lambda n: n in ('aten::convolution', 'aten::_convolution', 'aten::mkldnn_convolution',
                     'aten::conv2d'), 'conv forward'),
    (lambda n: n in ('aten::copy_', 'aten::clone', 'aten::contiguous', 'aten::_to_copy',
                     'aten::to'), 'layout copies'),
    (lambda n: 'batch_norm' in n or 'BatchNormBackward' in n, 'batchnorm'),
    (lambda n: 'upsample' in n.lower(), 'upsampling'),
    (lambda n: n == 'irstd::attention', 'attention'),
    (lambda n: n == 'irstd::loss', 'loss'),
)
_BACKWARD_PREFIX = 'autograd::engine::evaluate_function: '


def _torch_rule(name: str) -> str | None:
  for matches, part in _TORCH_RULES:
    if matches(name):
      return part
  return None


def instrument_torch_model(model, attention_types) -> None:
  """Wraps the forward of every attention module in a `record_function('irstd::attention')`."""
  import torch  # pylint: disable=g-import-not-at-top
  for module in model.modules():
    if isinstance(module, attention_types):
      forward = module.forward

      def wrapped(*a, _forward=forward, **k):
        with torch.profiler.record_function('irstd::attention'):
          return _forward(*a, **k)

      module.forward = wrapped


def profile_torch(run_step, steps: int) -> dict:
  """Per-part busy time of `steps` calls of `run_step()`; see the module docstring.

  `run_step` must wrap its loss computation in `record_function('irstd::loss')` and the
  model must be instrumented with `instrument_torch_model`.
  """
  import torch  # pylint: disable=g-import-not-at-top
  t = time.perf_counter()
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(steps):
      run_step()
  wall = (time.perf_counter() - t) / steps
  events = list(prof.events())
  cache: dict[int, str | None] = {}

  def enclosing_part(event):
    chain = []
    e = event
    part = None
    while e is not None:
      if id(e) in cache:
        part = cache[id(e)]
        break
      chain.append(e)
      part = _torch_rule(e.name)
      if part is not None:
        break
      e = e.cpu_parent
    for c in chain:
      cache[id(c)] = part
    return part

  forward_part = {}
  for e in events:
    if e.sequence_nr >= 0 and not e.name.startswith(_BACKWARD_PREFIX):
      p = enclosing_part(e)
      if p is not None:
        forward_part.setdefault((e.sequence_nr, e.thread), p)
  parts = collections.Counter()
  for e in events:
    part = enclosing_part(e)
    if part is None:
      # Inside a backward node that no rule matches: the forward op's part.
      node = e
      while node is not None and not node.name.startswith(_BACKWARD_PREFIX):
        node = node.cpu_parent
      if node is not None:
        part = forward_part.get((node.sequence_nr, node.fwd_thread))
        if part == 'conv forward':
          part = 'conv backward'
    parts[part or 'other'] += e.self_cpu_time_total / 1e3
  return dict(ms_per_step={p: parts[p] / steps for p in PARTS}, steps=steps,
              wall_ms=wall * 1e3)


def format_profile(profiles: dict[str, dict]) -> str:
  """A table: one row per part, for each framework its ms per step and share."""
  names = list(profiles)
  head = f"{'part':<15}" + ''.join(f' {n[:22]:>22}' for n in names)
  lines = [head, '-' * len(head)]
  totals = {n: sum(profiles[n]['ms_per_step'].values()) for n in names}
  for part in PARTS + ('total (busy)', 'step wall'):
    cells = []
    for n in names:
      if part == 'total (busy)':
        ms, share = totals[n], 100.0
      elif part == 'step wall':
        ms, share = profiles[n]['wall_ms'], None
      else:
        ms = profiles[n]['ms_per_step'].get(part, 0.0)
        share = 100.0 * ms / totals[n] if totals[n] else 0.0
      cells.append(f'{ms:9.0f} ms' + (f' {share:5.1f}%' if share is not None else ' ' * 7)
                   + ' ' * 3)
    lines.append(f'{part:<15}' + ''.join(f' {c:>22}' for c in cells))
  return '\n'.join(lines)
