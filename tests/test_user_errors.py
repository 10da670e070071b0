"""Every user error ends the same way: one `error: <what> (<where>): <fix>` line, exit 2,
no traceback, nothing left behind (no workdir, no checkpoint folder, no half-built dataset).

Each case runs main.py in a subprocess, as a user would, because the exit code, stderr and
the files left on disk are the behaviour under test.
"""
import os
import pathlib
import re
import subprocess
import sys

import pytest

import raw_folders
from conftest import load_config
from irstd_jax import config_validation
from irstd_jax.errors import UserError, format_error

REPO = pathlib.Path(__file__).resolve().parents[1]
ERROR_LINE = re.compile(r'^error: .+ \((?P<where>[^()]+)\): .+$')


def _main(*args, env_extra=None):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  env.update(env_extra or {})
  return subprocess.run([sys.executable, 'main.py', *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=env)


def _assert_user_error(proc, where: str | None, *words):
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, proc.stderr[-3000:]
  match = ERROR_LINE.match(lines[0])
  assert match, lines[0]
  assert where is None or match.group('where') == where, lines[0]
  for word in words:
    assert word in lines[0], lines[0]


CASES = {
    # name: (overrides, where the error points, words the line must hold)
    'misspelt field': (['--config.train.num_epoch=3'], '--config.train.num_epoch',
                       ["'num_epoch'", '"num_epochs"']),
    'misspelt group': (['--config.trian.batch_size=3'], '--config.trian.batch_size',
                       ["'trian'", '"train"']),
    'batch size 0': (['--config.train.batch_size=0'], 'train.batch_size', ['0']),
    'negative batch size': (['--config.train.batch_size=-4'], 'train.batch_size', ['-4']),
    'no epochs': (['--config.train.num_epochs=0'], 'train.num_epochs', ['untrained']),
    'unknown attention': (['--config.model.spatial_attention=gausian'],
                          'model.spatial_attention', ['gausian', 'gaussian_pinwheel']),
    'four widths': (['--config.model.widths=(8,16,32,64)'], 'model.widths', ['5']),
    'zero width': (['--config.model.widths=(8,16,0,64,128)'], 'model.widths', ['5']),
    'pconv width': (['--config.model.stem_conv=pconv', '--config.model.widths=(6,16,32,64,128)'],
                    'model', ['PConv']),
    'unknown dataset': (['--config.data.name=nudt'], 'data.name', ['nudt_sirst']),
    'folder without manual_dir': (['--config.data.name=irstd_folder'], 'data.manual_dir',
                                  ['irstd_folder']),
    'missing raw folder': (['--config.data.name=irstd_folder',
                            '--config.data.manual_dir=/nonexistent/raw'], 'data.manual_dir',
                           ['/nonexistent/raw']),
    'negative accumulator seed': (['--config.optim.accumulator_at_switch=-0.1'],
                                  'optim.accumulator_at_switch', ['-0.1']),
    'unknown fuse reset': (['--config.train.fuse_at_switch=identity'],
                           'train.fuse_at_switch', ['identity', 'd0']),
    'bad value type': (['--config.train.batch_size=four'], 'command line', ['batch_size']),
    'unknown flag': (['--epochs=3'], 'command line', ['epochs']),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_bad_config_is_one_line_exit_2_and_creates_nothing(name, tmp_path):
  overrides, where, words = CASES[name]
  workdir = tmp_path / 'run'
  proc = _main('--config=configs/synthetic.py', f'--workdir={workdir}', *overrides)
  _assert_user_error(proc, where, *words)
  assert not workdir.exists()


def test_missing_config_file_is_reported_before_jax_starts(tmp_path):
  proc = _main('--config=configs/synthetc.py', f'--workdir={tmp_path / "run"}')
  _assert_user_error(proc, '--config', 'configs/synthetc.py')
  assert not (tmp_path / 'run').exists()


def test_workdir_that_is_a_file(tmp_path):
  workdir = tmp_path / 'run'
  workdir.write_text('not a folder')
  proc = _main('--config=configs/synthetic.py', f'--workdir={workdir}')
  _assert_user_error(proc, '--workdir', 'is a file')
  assert workdir.read_text() == 'not a folder'


def test_batch_that_does_not_divide_over_the_devices(tmp_path):
  proc = _main('--config=configs/synthetic.py', f'--workdir={tmp_path / "run"}',
               '--config.train.batch_size=3',
               env_extra={'XLA_FLAGS': '--xla_force_host_platform_device_count=2'})
  _assert_user_error(proc, 'train.batch_size', '3', '2 devices')
  assert not (tmp_path / 'run').exists()


def test_bad_raw_folder_names_the_file_and_builds_nothing(tmp_path):
  raw = tmp_path / 'raw'
  raw_folders.write_folder(raw, 'dnanet')
  raw_folders.resize(raw / 'masks' / 'tr002.png')
  proc = _main('--config=configs/synthetic.py', f'--workdir={tmp_path / "run"}',
               '--config.data.name=irstd_folder', f'--config.data.manual_dir={raw}',
               f'--config.data.data_dir={tmp_path / "tfds"}')
  _assert_user_error(proc, None, '1 error(s)', str(raw))
  assert 'tr002.png' in proc.stderr and 'size_mismatch' in proc.stderr
  assert not (tmp_path / 'run').exists()
  assert not (tmp_path / 'tfds' / 'irstd_folder').exists()


def test_eval_of_a_workdir_without_checkpoints(tmp_path):
  proc = _main('--config=configs/synthetic.py', f'--workdir={tmp_path}', '--mode=eval')
  _assert_user_error(proc, '--workdir', 'no checkpoint')
  assert not os.listdir(tmp_path)


# -- the same rules in-process (no subprocess): every config file passes them -----------------

@pytest.mark.parametrize('path', ['configs/synthetic.py', 'configs/full_model.py',
                                  'configs/ablation/a8_pconv_sd.py'])
def test_shipped_configs_validate(path):
  config_validation.validate_config(load_config(path), mode='train', num_devices=1,
                                    num_processes=1)


def test_error_format_is_one_line_with_indented_details():
  error = UserError('2 error(s) in the raw dataset', '/data/x', 'fix the files below',
                    details='ERROR a\nERROR b')
  assert format_error(error) == ('error: 2 error(s) in the raw dataset (/data/x): fix the '
                                 'files below\n  ERROR a\n  ERROR b')
  multi = UserError('first line\nsecond line')
  assert multi.line() == 'first line' and multi.details == 'second line'
