"""Speed of this project's jitted train step and inference against the PyTorch reference.

    python -m benchmarks.speed                        # 256x256 and 512x512, batch 4
    python -m benchmarks.speed --sizes=256 --steps=3 --json=/tmp/speed.json
    python -m benchmarks.speed --interleaved --cpus=0 --jax_python=.venv-py312/bin/python \
        --jax_python=.venv/bin/python               # both JAX stacks, torch, profiles

Needs torch for the reference (pip install -r requirements-bench.txt); `--no_torch` runs the
JAX side alone. Runs unchanged on a GPU: each framework uses its default device.

Every measurement runs in its own fresh subprocess, one after the other, so that each gets a
cold start (time to first step includes jitted init and compilation, with no persistent
compilation cache), its own peak-memory reading, and no thread pool left over from another
framework. Per size:

- irstd_jax: `train.train_step` (the project's loss, Adagrad) jitted exactly as
  `train.train_and_evaluate` does (explicit shardings, state donated), and
  `train_state.apply_model(train=False)` jitted for inference. FLOPs per step from XLA's
  cost analysis of the compiled step. A second run with a warm persistent compilation cache
  (what `main.py` uses by default) gives the warm time to first step.
- torch eager and torch channels-last: `benchmarks/torch_mshnet.py`, Adagrad, soft IoU over
  the 5 outputs; the faster of the two is the reference.
- matmul: a large float32 matmul in both frameworks; the machine's peak is the faster.

`--interleaved` (for a shared machine) instead keeps every implementation alive at once, each
in its own long-lived process (a JAX worker per `--jax_python` interpreter and per
`--conv_backends` value, so one run compares JAX stacks on different Pythons and XLA's
convolutions with oneDNN's, with the same PyTorch), steps them in turn for `--rounds`
rounds, takes the minimum per implementation, and then profiles one train step of each part by
part (benchmarks/step_profile.py). `--cpus=0` pins every worker to one core with one thread
per framework, the comparison that stays fair when other jobs load the machine.

Time per step is the median over `--steps` steps after one warm-up step, each waited for.
Peak memory is the process's peak resident set during the phase (CPU; includes the
framework runtime) or the device allocator's peak (GPU). The table prints at the end and
everything (plus the machine's load average before and after) goes to the JSON file.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from irstd_jax import host_memory  # imports nothing heavy: safe before jax/torch

_T_START = time.perf_counter()
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------- helpers


def _reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS counter (VmHWM) of this process; False if impossible."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def _peak_rss_mb() -> float | None:
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return None


def _timed(fn, steps: int) -> list[float]:
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return times


def _emit(result: dict) -> None:
  print('RESULT ' + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- workers


def _jax_peak(device, reset: bool) -> float | None:
  if device.platform == 'cpu':
    if reset:
      _reset_peak_rss()
      return None
    return _peak_rss_mb()
  stats = device.memory_stats() or {}
  return stats.get('peak_bytes_in_use', 0) / 2**20 if not reset else None


def _jax_setup(args):
  """Builds the project's train step as `train.train_and_evaluate` does, compiles it and runs
  one step. Returns (result dict, compiled step, state, batch, config, graphdef, images)."""

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  if args.cache_dir:
    jax.config.update('jax_compilation_cache_dir', args.cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  sys.path.insert(0, _REPO)
  from configs import base  # pylint: disable=g-import-not-at-top
  from irstd_jax import onednn_conv, train, train_state as train_state_lib  # pylint: disable=g-import-not-at-top,g-multiple-import

  t_imported = time.perf_counter()
  device = jax.devices()[0]
  config = base.get_config()
  config.model.spatial_attention = args.spatial_attention
  for override in args.jax_config:
    key, value = override.split('=', 1)
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    try:
      node[leaf] = ast.literal_eval(value)
    except (ValueError, SyntaxError):  # a bare string, e.g. model.stem_conv=pconv
      node[leaf] = value
  b, s = args.batch, args.size
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (b, s, s, 1), dtype=np.uint8)
  masks = (rng.uniform(size=(b, s, s, 1)) > 0.995).astype(np.uint8)

  t0 = time.perf_counter()
  mesh = train_state_lib.make_mesh()
  tx = train_state_lib.make_optimizer(config.optim)
  graphdef, state, shardings = train_state_lib.create_train_state(config, mesh, tx)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  batch_sharding = NamedSharding(mesh, P('data'))
  batch = {'image': jax.device_put(images, batch_sharding),
           'mask': jax.device_put(masks, batch_sharding)}
  # As train.train_and_evaluate builds it; warmup_steps=0: the deep-supervision loss of
  # every epoch after the warm-up epochs.
  step_fn = train.make_train_step(config, graphdef, tx, mesh, shardings, warmup_steps=0)
  t1 = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - t1
  state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  first_step_s = time.perf_counter() - t0
  result = dict(framework='jax', size=s, batch=b, device=str(device),
                device_kind=device.device_kind if device.platform != 'cpu' else 'cpu',
                init_s=init_s,
                compile_s=compile_s, first_step_s=first_step_s,
                import_s=t_imported - _T_START, warm_cache=bool(args.cache_dir),
                jax_version=jax.__version__, python=platform.python_version(),
                conv_backend=onednn_conv.resolved_backend(config.model.conv_backend))
  return result, compiled, state, batch, config, graphdef, images


def _jax_infer_fn(state, config, graphdef, images, batch_sharding):
  """Jitted inference (`apply_model(train=False)`) and its normalised input."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from irstd_jax import train_state as train_state_lib  # pylint: disable=g-import-not-at-top
  infer = jax.jit(lambda p, ms, x: train_state_lib.apply_model(graphdef, p, ms, x,
                                                               train=False)[0])
  x = jax.device_put(((images / 255.0 - config.data.mean) / config.data.std)
                     .astype(np.float32), batch_sharding)
  return infer, x


def worker_jax(args) -> dict:
  """The project's train step and inference, cold or with a warm compilation cache."""
  import jax  # pylint: disable=g-import-not-at-top
  result, compiled, state, batch, config, graphdef, images = _jax_setup(args)
  device = jax.devices()[0]
  if args.first_step_only:
    return result

  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  result['train_flops'] = float(cost.get('flops', 0.0))
  mem = compiled.memory_analysis()
  if mem is not None:
    result['xla_train_temp_mb'] = mem.temp_size_in_bytes / 2**20
    result['xla_train_args_mb'] = mem.argument_size_in_bytes / 2**20

  # Inference first (GPU peak counters cannot be reset; training's peak is the larger).
  infer, x = _jax_infer_fn(state, config, graphdef, images, batch['image'].sharding)
  t2 = time.perf_counter()
  jax.block_until_ready(infer(state.params, state.model_state, x))
  result['infer_first_s'] = time.perf_counter() - t2
  _jax_peak(device, reset=True)
  result['infer_times'] = _timed(
      lambda: jax.block_until_ready(infer(state.params, state.model_state, x)), args.steps)
  result['infer_peak_mb'] = _jax_peak(device, reset=False)

  holder = {'state': state}

  def one_step():
    holder['state'], m = compiled(holder['state'], batch)
    jax.block_until_ready((holder['state'], m))

  one_step()  # warm-up
  _jax_peak(device, reset=True)
  result['train_times'] = _timed(one_step, args.steps)
  result['train_peak_mb'] = _jax_peak(device, reset=False)
  return result


def _torch_session(args, channels_last: bool, profiled: bool = False):
  """The PyTorch reference in one memory layout: (train_step, infer, model, info).

  `profiled`: the loss runs inside `record_function('irstd::loss')` and the attention modules
  are instrumented for `step_profile.profile_torch`.
  """
  import contextlib  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, _REPO)
  from benchmarks import step_profile, torch_mshnet  # pylint: disable=g-import-not-at-top,g-multiple-import

  if args.cpus:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  cuda = device.type == 'cuda'
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  b, s = args.batch, args.size
  gen = torch.Generator().manual_seed(0)
  images = torch.randint(0, 256, (b, 1, s, s), generator=gen).float()
  x = ((images / 255.0 - 0.449) / 0.226).to(device).contiguous(memory_format=fmt)
  y = (torch.rand(b, 1, s, s, generator=gen) > 0.995).float().to(device).contiguous(
      memory_format=fmt)
  model = torch_mshnet.MSHNet(1, spatial_attention=args.spatial_attention).to(device)
  model = model.to(memory_format=fmt)
  if profiled:
    step_profile.instrument_torch_model(
        model, (torch_mshnet.ChannelAttention, torch_mshnet.SpatialAttention,
                torch_mshnet.GaussianPinwheelAttention))
  opt = torch.optim.Adagrad(model.parameters(), lr=0.05)
  loss_scope = ((lambda: torch.profiler.record_function('irstd::loss')) if profiled
                else contextlib.nullcontext)

  def train_step():
    model.train()
    opt.zero_grad(set_to_none=True)
    sides, fused = model(x)
    with loss_scope():
      loss = torch_mshnet.deep_supervision_loss(sides, fused, y)
    loss.backward()
    opt.step()
    sync()

  def infer():
    model.eval()
    with torch.inference_mode():
      model(x)
    sync()

  info = dict(device=str(device), device_kind=torch.cuda.get_device_name() if cuda else 'cpu',
              threads=torch.get_num_threads(), torch_version=torch.__version__)
  return train_step, infer, model, info


def worker_torch(args) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  cuda = torch.cuda.is_available()

  def reset_peak():
    if cuda:
      torch.cuda.reset_peak_memory_stats()
    else:
      _reset_peak_rss()

  def peak():
    return torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb()

  t0 = time.perf_counter()
  train_step, infer, _, info = _torch_session(
      args, channels_last=args.framework == 'torch_channels_last')
  train_step()
  result = dict(framework=args.framework, size=args.size, batch=args.batch,
                first_step_s=time.perf_counter() - t0, **info)
  train_step()  # warm-up
  reset_peak()
  result['train_times'] = _timed(train_step, args.steps)
  result['train_peak_mb'] = peak()

  infer()
  reset_peak()
  result['infer_times'] = _timed(infer, args.steps)
  result['infer_peak_mb'] = peak()
  return result


def worker_serve(args) -> None:
  """A long-lived worker for the interleaved mode: sets up its implementations, then times one
  step per command read from stdin, so that the driver can alternate frameworks step by step.

  Commands (one per line): `train IMPL`, `infer IMPL`, `profile IMPL STEPS`, `quit`. Every
  answer is one `RESULT {json}` line.
  """
  sessions = {}  # impl -> (train_step, infer, profile(steps) -> dict)
  info = {}
  if args.framework == 'jax':
    import jax  # pylint: disable=g-import-not-at-top
    from benchmarks import step_profile  # pylint: disable=g-import-not-at-top
    result, compiled, state, batch, config, graphdef, images = _jax_setup(args)
    infer_fn, x = _jax_infer_fn(state, config, graphdef, images, batch['image'].sharding)
    holder = {'state': state}

    def jax_train():
      holder['state'], m = compiled(holder['state'], batch)
      jax.block_until_ready((holder['state'], m))

    def jax_infer():
      s = holder['state']
      jax.block_until_ready(infer_fn(s.params, s.model_state, x))

    jax_infer()
    sessions['jax'] = (jax_train, jax_infer,
                       lambda n: step_profile.profile_jax(compiled, jax_train, n))
    info = {k: result[k] for k in ('jax_version', 'python', 'compile_s', 'first_step_s',
                                   'device_kind', 'conv_backend')}
  else:
    from benchmarks import step_profile  # pylint: disable=g-import-not-at-top
    for impl, channels_last in (('torch_eager', False), ('torch_channels_last', True)):
      train_step, infer, _, info = _torch_session(args, channels_last, profiled=True)
      train_step()
      infer()
      sessions[impl] = (train_step, infer,
                        lambda n, f=train_step: step_profile.profile_torch(f, n))
    info['python'] = platform.python_version()
  _emit(dict(ready=True, impls=list(sessions), **info))
  for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == 'quit':
      break
    train_step, infer, profile = sessions[cmd[1]]
    if cmd[0] == 'profile':
      _emit(profile(int(cmd[2])))
      continue
    fn = train_step if cmd[0] == 'train' else infer
    t = time.perf_counter()
    fn()
    _emit({'s': time.perf_counter() - t})


def worker_matmul(args) -> dict:
  """Large float32 matmul FLOP/s: the machine's reachable peak for dense math."""
  if args.framework == 'jax':
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    n = args.matmul_n or (4096 if jax.devices()[0].platform == 'cpu' else 8192)
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda p, q: p @ q)
    jax.block_until_ready(mm(a, a))
    times = _timed(lambda: jax.block_until_ready(mm(a, a)), args.matmul_reps)
    device = str(jax.devices()[0])
    flops = 2.0 * n**3
  else:
    import torch  # pylint: disable=g-import-not-at-top
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    n = args.matmul_n or (4096 if dev == 'cpu' else 8192)
    sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
    a = torch.randn(n, n, device=dev)
    a @ a
    sync()
    times = _timed(lambda: (a @ a, sync()), args.matmul_reps)
    device = dev
    flops = 2.0 * n**3
  return dict(framework=args.framework, kind='matmul', n=n, device=device,
              flops_per_s=flops / min(times), times=times)


# ----------------------------------------------------------------------------- driver


def _run_worker(argv: list[str], timeout: float) -> dict:
  cmd = [sys.executable, '-m', 'benchmarks.speed', *argv]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get('TF_CPP_MIN_LOG_LEVEL', '2'))
  t = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=_REPO, capture_output=True, text=True, timeout=timeout,
                          env=env)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout:.0f} s', 'argv': argv}
  for line in proc.stdout.splitlines():
    if line.startswith('RESULT '):
      out = json.loads(line[len('RESULT '):])
      out['wall_s'] = time.perf_counter() - t
      return out
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
  return {'error': ' | '.join(tail) or f'exit code {proc.returncode}', 'argv': argv}


class _Server:
  """A `--worker serve` subprocess, driven one command at a time."""

  def __init__(self, python: str, argv: list[str], timeout: float):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get('TF_CPP_MIN_LOG_LEVEL', '2'))
    self.timeout = timeout
    self.proc = subprocess.Popen([python, '-m', 'benchmarks.speed', '--worker', 'serve', *argv],
                                 cwd=_REPO, env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    self.info = self._read()

  def _read(self) -> dict:
    for line in self.proc.stdout:
      if line.startswith('RESULT '):
        return json.loads(line[len('RESULT '):])
    raise RuntimeError(f'worker exited with code {self.proc.wait()} '
                       '(run it alone with --worker serve to see why)')

  def ask(self, command: str) -> dict:
    self.proc.stdin.write(command + '\n')
    self.proc.stdin.flush()
    return self._read()

  def close(self):
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write('quit\n')
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
      except (OSError, subprocess.TimeoutExpired):
        self.proc.kill()


_PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'irstd_jax')


def source_keyed(cache_dir: str, package: str = _PACKAGE) -> str:
  """cache_dir/<hash of the package's Python sources>.

  JAX's persistent cache keys an executable by its computation with the debug information
  stripped (jax/_src/cache_key.py), so after an edit that only renames or moves code the
  cache returns the old executable, whose metadata names the OLD functions, and the
  per-part profile, which attributes time by those names, reads stale ones. (It did: a
  BatchNorm moved into module-level functions profiled as 0 ms of BatchNorm.) One cache per
  source version.
  """
  import hashlib  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256()
  for root, dirs, files in os.walk(package):
    dirs.sort()
    for name in sorted(files):
      if name.endswith('.py'):
        path = os.path.join(root, name)
        digest.update(os.path.relpath(path, package).encode() + b'\0')
        with open(path, 'rb') as f:
          digest.update(f.read())
  return os.path.join(cache_dir, digest.hexdigest()[:16])


def run_interleaved(args, common: list[str]) -> dict:
  """Every implementation alive at once in its own process, stepped in turn: round r times one
  train step of each (in an order rotated every round), then one inference of each; the
  figure is the minimum over rounds, the least disturbed step of a shared machine. Then a
  per-part profile (step_profile) of each train step. One JAX worker per `--jax_python`
  interpreter (one per JAX stack; PyTorch runs under this interpreter).
  """
  pythons = args.jax_python or [sys.executable]
  results = {}
  for size in [int(v) for v in args.sizes.split(',')]:
    servers = {}
    try:
      for python in pythons:
        for backend in args.conv_backends.split(','):
          server = _Server(python, ['--framework', 'jax', '--size', str(size), *common,
                                    '--jax_config', f'model.conv_backend={backend}',
                                    '--cache_dir', source_keyed(args.interleaved_cache)],
                           args.timeout)
          label = f"jax {server.info['jax_version']} {server.info['conv_backend']}"
          if label in servers:  # 'auto' resolved to a backend already measured
            server.close()
            continue
          servers[label] = server
          print(f'{size}: {label} ready, compile {server.info["compile_s"]:.0f} s',
                file=sys.stderr, flush=True)
      if not args.no_torch:
        server = _Server(sys.executable, ['--framework', 'torch', '--size', str(size), *common],
                         args.timeout)
        servers['torch'] = server
        print(f'{size}: torch {server.info["torch_version"]} ready', file=sys.stderr, flush=True)
      impls = [(label, impl) for label, srv in servers.items() for impl in srv.info['impls']]
      names = {(label, impl): label if impl == 'jax' else impl for label, impl in impls}
      times = {names[k]: {'train': [], 'infer': []} for k in impls}
      loads = [os.getloadavg()[0]]
      for r in range(args.rounds):
        order = impls[r % len(impls):] + impls[:r % len(impls)]
        for kind in ('train', 'infer'):
          for label, impl in order:
            times[names[(label, impl)]][kind].append(
                servers[label].ask(f'{kind} {impl}')['s'])
        loads.append(os.getloadavg()[0])
        print(f'{size}: round {r + 1}/{args.rounds} ' + ', '.join(
            f"{n} {min(t['train']):.2f}/{min(t['infer']):.2f} s" for n, t in times.items()),
              file=sys.stderr, flush=True)
      profiles = {}
      if args.profile_steps:
        for label, impl in impls:
          profiles[names[(label, impl)]] = servers[label].ask(
              f'profile {impl} {args.profile_steps}')
      rows = {}
      for n, t in times.items():
        rows[n] = dict(train_s=min(t['train']), infer_s=min(t['infer']), train_times=t['train'],
                       infer_times=t['infer'])
      torch_rows = [rows[n] for n in ('torch_eager', 'torch_channels_last') if n in rows]
      ref_train = min((r['train_s'] for r in torch_rows), default=float('nan'))
      ref_infer = min((r['infer_s'] for r in torch_rows), default=float('nan'))
      for r in rows.values():
        r['train_x_torch'] = ref_train / r['train_s']
        r['infer_x_torch'] = ref_infer / r['infer_s']
      results[str(size)] = dict(rows=rows, profiles=profiles, load_average=loads,
                                info={label: srv.info for label, srv in servers.items()})
    finally:
      for server in servers.values():
        server.close()
  return results


def make_interleaved_table(results: dict, batch: int) -> str:
  from benchmarks import step_profile  # pylint: disable=g-import-not-at-top
  lines = []
  head = (f"{'size':>5} {'impl':<30} {'train s/step':>12} {'img/s':>6} {'x torch':>7} "
          f"{'infer s':>8} {'img/s':>6} {'x torch':>7}")
  lines += [head, '-' * len(head)]
  for size, res in results.items():
    for name, r in res['rows'].items():
      lines.append(f"{size:>5} {name:<30} {r['train_s']:12.3f} {batch / r['train_s']:6.2f} "
                   f"{r['train_x_torch']:7.2f} {r['infer_s']:8.3f} {batch / r['infer_s']:6.2f} "
                   f"{r['infer_x_torch']:7.2f}")
    loads = res['load_average']
    lines.append(f"{size:>5} load average (1 min) during the rounds: "
                 f"{min(loads):.1f}-{max(loads):.1f}")
  lines.append('times: minimum over the interleaved rounds; x torch: speed relative to the '
               'faster PyTorch layout, > 1 = faster than it.')
  for size, res in results.items():
    if res['profiles']:
      lines.append('')
      lines.append(f'Per-part profile of one train step at {size}x{size}, batch {batch} '
                   '(busy ms per step, share of the busy total):')
      lines.append(step_profile.format_profile(res['profiles']))
  return '\n'.join(lines)


def _median(times):
  return statistics.median(times) if times else float('nan')


def _machine() -> dict:
  info = dict(platform=platform.platform(), python=platform.python_version(),
              cpu_count=os.cpu_count(), processor=platform.processor())
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          info['cpu'] = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  return info


def _fmt(v, spec, missing='-'):
  return missing if v is None or v != v else format(v, spec)


def make_table(report: dict) -> str:
  peak = report['matmul_peak_flops_per_s']
  lines = []
  head = (f"{'size':>5} {'impl':<20} {'train s/step':>12} {'img/s':>7} {'x torch':>8} "
          f"{'infer s':>8} {'img/s':>7} {'x torch':>8} {'1st step s':>10} "
          f"{'peak MB':>8} {'train GFLOP/s':>13} {'% matmul':>8}")
  lines.append(head)
  lines.append('-' * len(head))
  for size, rows in report['results'].items():
    ref = rows.get('torch_best') or {}
    for name in ('jax', 'torch_eager', 'torch_channels_last'):
      r = rows.get(name)
      if r is None:
        continue
      if 'error' in r:
        lines.append(f'{size:>5} {name:<20} error: {r["error"][:100]}')
        continue
      flops = rows.get('jax', {}).get('train_flops')
      train_s, infer_s = _median(r.get('train_times')), _median(r.get('infer_times'))
      gflops = flops / train_s / 1e9 if flops else None
      first = r['first_step_s']
      if name == 'jax' and rows.get('jax_warm', {}).get('first_step_s') is not None:
        first_txt = f"{first:.1f}/{rows['jax_warm']['first_step_s']:.1f}w"
      else:
        first_txt = f'{first:.1f}'
      is_ref = ref.get('framework') == name
      label = name + (' *' if is_ref else '')
      lines.append(
          f"{size:>5} {label:<20} {_fmt(train_s, '.3f'):>12} "
          f"{_fmt(r['batch'] / train_s, '.2f'):>7} "
          f"{_fmt(ref.get('train_s', float('nan')) / train_s, '.2f'):>8} "
          f"{_fmt(infer_s, '.3f'):>8} {_fmt(r['batch'] / infer_s, '.2f'):>7} "
          f"{_fmt(ref.get('infer_s', float('nan')) / infer_s, '.2f'):>8} "
          f"{first_txt:>10} {_fmt(r.get('train_peak_mb'), '.0f'):>8} "
          f"{_fmt(gflops, '.1f'):>13} {_fmt(gflops and 1e9 * gflops / peak * 100, '.0f'):>8}")
  m = report['matmul']
  lines.append('')
  lines.append(
      f"device {report['device']}; matmul peak {peak / 1e9:.0f} GFLOP/s (float32, "
      + ', '.join(f"{k} {v.get('flops_per_s', float('nan')) / 1e9:.0f}" for k, v in m.items())
      + f"); load average {report['load_before'][0]:.2f} before, "
      f"{report['load_after'][0]:.2f} after; glibc malloc: "
      + ('keeps freed memory (host_memory.keep_freed_memory)' if report['malloc'] == 'keep' else 'defaults'))
  lines.append("x torch: speed relative to the faster PyTorch layout (marked *), > 1 = faster "
               "than it; train GFLOP/s uses XLA's FLOP count of the JAX step for every row; "
               "1st step: init + compile + first step, cold / with a warm compilation cache (w).")
  return '\n'.join(lines)


def _write_report(report: dict, path: str | None) -> None:
  """Writes the run's report as JSON to `path` (--json), if one was given."""
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
      json.dump(report, f, indent=2)
    print(f'wrote {path}')


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--sizes', default='256,512', help='comma-separated square sizes')
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--steps', type=int, default=4, help='timed steps (after 1 warm-up)')
  parser.add_argument('--spatial_attention', default='cbam',
                      help='cbam | gaussian_pinwheel | gaussian (both frameworks)')
  parser.add_argument('--json', default=os.path.join(_REPO, 'benchmarks', 'results',
                                                     'speed.json'))
  parser.add_argument('--no_torch', action='store_true', help='JAX side only')
  parser.add_argument('--no_warm', action='store_true',
                      help='skip the warm-compilation-cache time to first step')
  parser.add_argument('--jax_config', action='append', default=[],
                      help='config override for the JAX side, e.g. model.widths=... '
                      '(repeatable; Python literals, else a string)')
  parser.add_argument('--malloc', choices=['keep', 'default'], default='keep',
                      help="keep: glibc keeps freed memory (see irstd_jax/host_memory.py; applied to "
                      "every framework); default: glibc's defaults")
  parser.add_argument('--matmul_n', type=int, default=0, help='0: 4096 on CPU, 8192 on GPU')
  parser.add_argument('--matmul_reps', type=int, default=3)
  parser.add_argument('--timeout', type=float, default=900.0, help='per worker, seconds')
  parser.add_argument('--interleaved', action='store_true',
                      help='all implementations alive at once, stepped in turn, minimum over '
                      '--rounds, then a per-part profile of each train step (for a shared '
                      'machine; no cold-start, memory or matmul figures)')
  parser.add_argument('--rounds', type=int, default=5, help='--interleaved: rounds')
  parser.add_argument('--cpus', default='',
                      help='pin every worker to these CPUs (e.g. 0), with PyTorch and XLA using '
                      'one thread per CPU: on a loaded machine a one-core comparison is the '
                      'one that stays fair (OpenMP threads stall behind other processes)')
  parser.add_argument('--profile_steps', type=int, default=2,
                      help='--interleaved: train steps traced per profile (0: no profile)')
  parser.add_argument('--conv_backends', default='xla,onednn',
                      help='--interleaved: comma-separated model.conv_backend values, one JAX '
                      'worker each (a backend that falls back to xla is measured once)')
  parser.add_argument('--jax_python', action='append', default=[],
                      help='--interleaved: the interpreter of a JAX stack to compare, e.g. a '
                      'Python 3.12 venv with jax 0.12 (repeatable; default: this one)')
  parser.add_argument('--interleaved_cache',
                      default=os.path.join(tempfile.gettempdir(), 'irstd_speed_cache'),
                      help='--interleaved: persistent compilation cache of the JAX workers '
                      '(one subfolder per version of the irstd_jax sources)')
  # Internal: a single measurement in this process.
  parser.add_argument('--worker', choices=['jax', 'torch', 'matmul', 'serve'],
                      help=argparse.SUPPRESS)
  parser.add_argument('--framework', default='jax', help=argparse.SUPPRESS)
  parser.add_argument('--size', type=int, default=256, help=argparse.SUPPRESS)
  parser.add_argument('--cache_dir', default='', help=argparse.SUPPRESS)
  parser.add_argument('--first_step_only', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.worker:
    if args.cpus:
      # Before jax/torch start their thread pools: both size them from the affinity mask.
      os.sched_setaffinity(0, {int(c) for c in args.cpus.split(',')})
    tuned = host_memory.keep_freed_memory() if args.malloc == 'keep' else False
    if args.worker == 'serve':
      worker_serve(args)
      return {}
    worker = {'jax': worker_jax, 'torch': worker_torch, 'matmul': worker_matmul}[args.worker]
    result = worker(args)
    result['malloc_keep_freed'] = tuned
    _emit(result)
    return {}

  common = ['--batch', str(args.batch), '--steps', str(args.steps), '--cpus', args.cpus,
            '--spatial_attention', args.spatial_attention, '--malloc', args.malloc]
  for override in args.jax_config:
    common += ['--jax_config', override]
  load_before = os.getloadavg()
  if load_before[0] > 1.5:
    print(f'warning: load average {load_before[0]:.2f}: other processes share the CPU, '
          'timings will be noisy (PyTorch\'s OpenMP threads suffer most)', file=sys.stderr)

  if args.interleaved:
    machine = _machine()
    results = run_interleaved(args, common)
    report = dict(machine=machine, mode='interleaved', batch=args.batch, rounds=args.rounds,
                  spatial_attention=args.spatial_attention, jax_config=args.jax_config,
                  xla_flags=os.environ.get('XLA_FLAGS', ''), malloc=args.malloc,
                  load_before=load_before, load_after=os.getloadavg(), results=results,
                  wall_s=time.perf_counter() - _T_START)
    report['table'] = (f"CPU: {machine.get('cpu', machine['processor'])}, "
                       f"{machine['cpu_count']} cores"
                       + (f"; every worker pinned to CPU(s) {args.cpus}, one thread each"
                          if args.cpus else '') + '\n'
                       + make_interleaved_table(results, args.batch))
    print(report['table'])
    _write_report(report, args.json)
    return report

  frameworks = ['jax'] + ([] if args.no_torch else ['torch'])
  matmul = {}
  for fw in frameworks:
    matmul[fw] = r = _run_worker(['--worker', 'matmul', '--framework', fw, '--matmul_reps',
                                  str(args.matmul_reps), '--matmul_n', str(args.matmul_n),
                                  '--malloc', args.malloc], args.timeout)
    print(f"matmul {fw}: {r.get('flops_per_s', float('nan')) / 1e9:.0f} GFLOP/s "
          f"{r.get('error', '')}", file=sys.stderr, flush=True)
  peak = max([r['flops_per_s'] for r in matmul.values() if 'flops_per_s' in r] or [float('nan')])

  results = {}
  for size in [int(v) for v in args.sizes.split(',')]:
    rows = {}
    cache_dir = tempfile.mkdtemp(prefix='irstd_speed_cache_')
    rows['jax'] = _run_worker(['--worker', 'jax', '--size', str(size), *common,
                               '--cache_dir', '' if args.no_warm else cache_dir], args.timeout)
    if not args.no_warm and 'error' not in rows['jax']:
      # The cold run above filled the cache; this is a rerun of main.py with its cache.
      rows['jax']['warm_cache'] = False
      rows['jax_warm'] = _run_worker(['--worker', 'jax', '--size', str(size), *common,
                                      '--cache_dir', cache_dir, '--first_step_only'],
                                     args.timeout)
    if not args.no_torch:
      for fw in ('torch_eager', 'torch_channels_last'):
        rows[fw] = _run_worker(['--worker', 'torch', '--framework', fw, '--size', str(size),
                                *common], args.timeout)
      ok = [rows[fw] for fw in ('torch_eager', 'torch_channels_last') if 'error' not in rows[fw]]
      if ok:
        best = min(ok, key=lambda r: _median(r['train_times']))
        rows['torch_best'] = dict(framework=best['framework'],
                                  train_s=_median(best['train_times']),
                                  infer_s=min(_median(r['infer_times']) for r in ok))
    results[str(size)] = rows
    for name, r in rows.items():
      if name != 'torch_best':
        print(f'{size} {name}: ' + ('error ' + r['error'] if 'error' in r else
                                    f"first step {r['first_step_s']:.1f} s, train "
                                    f"{_median(r.get('train_times', [])):.3f} s/step"),
              file=sys.stderr, flush=True)

  machine = _machine()
  device = next((r.get('device_kind') or r['device'] for rows in results.values()
                 for r in rows.values() if isinstance(r, dict) and 'device' in r), 'unknown')
  if device.startswith(('cpu', 'TFRT_CPU')) or device == 'cpu':
    device = f"CPU ({machine.get('cpu', machine['processor'])}, {machine['cpu_count']} cores)"
  report = dict(machine=machine, device=device, malloc=args.malloc, batch=args.batch, steps=args.steps,
                spatial_attention=args.spatial_attention, jax_config=args.jax_config,
                xla_flags=os.environ.get('XLA_FLAGS', ''), matmul=matmul,
                matmul_peak_flops_per_s=peak, load_before=load_before,
                load_after=os.getloadavg(), results=results,
                wall_s=time.perf_counter() - _T_START)
  report['table'] = make_table(report)
  print(report['table'])
  _write_report(report, args.json)
  return report


if __name__ == '__main__':
  main()
