"""Ctrl-C where a subprocess cannot time it: the final evaluation and predict mid-folder.

The signal is sent by the code under test's own collaborator (a wrapped evaluator, a fake
network) at a known point, so the behaviour is checked without sleeps or races. The
training-loop case runs main.py in a subprocess (tests/test_fault_tolerance.py).
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import tiny_checkpoint
from irstd_jax import evaluate
from irstd_jax import interrupts
from irstd_jax import predict
from irstd_jax import predictor as predictor_lib
from irstd_jax import train
from irstd_jax.errors import UserError
from test_train import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
# Training's record of its last checkpoint (irstd_jax/eval_outputs.py).
LAST_RESULTS = pathlib.Path('eval_test_basicirstd_last') / 'eval_results.json'


def _ctrl_c_to_self(stop):
  os.kill(os.getpid(), signal.SIGINT)
  deadline = time.monotonic() + 10
  while not stop.requested:  # the handler runs between bytecodes, almost at once
    assert time.monotonic() < deadline
    time.sleep(0.001)


def test_ctrl_c_during_the_final_evaluation_keeps_the_checkpoint(tmp_path, monkeypatch):
  config = tiny_config()
  config.train.eval_every_epochs = 0
  original = evaluate.Evaluator.evaluate

  def interrupted_evaluate(self, state, source, **kwargs):
    if kwargs.get('stop') is not None:  # the final evaluation passes the stop flag
      _ctrl_c_to_self(kwargs['stop'])
    return original(self, state, source, **kwargs)

  monkeypatch.setattr(evaluate.Evaluator, 'evaluate', interrupted_evaluate)
  # Python's default_int_handler, or SIG_IGN where pytest runs as a background job.
  handler_before = signal.getsignal(signal.SIGINT)
  with pytest.raises(interrupts.Interrupted) as info:
    train.train_and_evaluate(config, str(tmp_path))
  assert info.value.signum == signal.SIGINT and info.value.exit_code == 130
  assert info.value.step == 12 and 'during the final evaluation' in str(info.value)
  assert sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())[-1] == 12
  assert not (tmp_path / LAST_RESULTS).exists()
  # Handlers are restored: a Ctrl-C now does what it did before the run.
  assert signal.getsignal(signal.SIGINT) is handler_before
  monkeypatch.setattr(evaluate.Evaluator, 'evaluate', original)
  results = train.train_and_evaluate(config, str(tmp_path))  # evaluates, trains nothing
  assert results['step'] == 12
  assert json.loads((tmp_path / LAST_RESULTS).read_text())['step'] == 12


def test_ctrl_c_during_eval_mode_writes_nothing(tmp_path, monkeypatch):
  config = tiny_checkpoint.tiny_config()
  tiny_checkpoint.save_checkpoint(config, tmp_path / 'run', step=3)
  original = evaluate.Evaluator.evaluate

  def interrupted_evaluate(self, state, source, **kwargs):
    _ctrl_c_to_self(kwargs['stop'])
    return original(self, state, source, **kwargs)

  monkeypatch.setattr(evaluate.Evaluator, 'evaluate', interrupted_evaluate)
  with pytest.raises(interrupts.Interrupted, match='nothing written') as info:
    evaluate.run_eval(config, str(tmp_path / 'run'), output=str(tmp_path / 'out'))
  assert info.value.exit_code == 130
  assert not (tmp_path / 'out').exists()


def _frames(folder, count=4, size=(40, 48)):
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(count):
    image = rng.integers(0, 80, size, dtype=np.uint8)
    image[10:13, 20:23] = 250
    Image.fromarray(image).save(folder / f'f{i}.png')
  return sorted(folder.iterdir())


def test_ctrl_c_mid_folder_writes_what_finished(tmp_path):
  images = _frames(tmp_path / 'in')
  calls = []

  def network(batch):  # one image per call; Ctrl-C arrives during the second
    calls.append(1)
    if len(calls) == 2:
      _ctrl_c_to_self(interrupts.StopRequests._active)  # pylint: disable=protected-access
    return np.where(batch > 200, 5.0, -5.0).astype(np.float32)

  predictor = predictor_lib.Predictor(network, batch_size=1)
  out = tmp_path / 'out'
  with pytest.raises(interrupts.Interrupted) as info:
    predict.predict_files(predictor, images, str(out))
  assert info.value.exit_code == 130 and '2 of 4 images' in str(info.value)
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['interrupted'] == 'Ctrl-C (SIGINT)'
  assert summary['num_images'] == 2 and summary['not_predicted'] == 2
  done = sorted(summary['sizes'])
  assert sorted(p.stem for p in (out / 'masks').iterdir()) == done
  for sub in ('probabilities', 'overlays'):
    assert sorted(p.stem for p in (out / sub).iterdir()) == done
  rows = (out / 'targets.csv').read_text().splitlines()
  assert rows[0].startswith('image,') and {r.split(',')[0] for r in rows[1:]} == set(done)


def test_output_folder_with_files_is_refused_unless_overwrite(tmp_path):
  images = _frames(tmp_path / 'in', count=2)
  out = tmp_path / 'out'
  predictor = predictor_lib.Predictor(lambda b: np.where(b > 200, 5.0, -5.0), batch_size=2)
  predict.predict_files(predictor, images, str(out))
  stale = out / 'masks' / 'old_frame.png'
  stale.write_bytes(b'from an earlier run')
  mine = out / 'notes.txt'
  mine.write_text('the user\'s own file')
  with pytest.raises(UserError, match='not empty') as info:
    predict.predict_files(predictor, images[:1], str(out))
  assert info.value.where == '--output' and '--overwrite' in info.value.fix
  assert stale.exists()  # refused: nothing touched
  summary = predict.predict_files(predictor, images[:1], str(out), overwrite=True)
  assert not stale.exists() and mine.read_text() == 'the user\'s own file'
  assert sorted(p.name for p in (out / 'masks').iterdir()) == ['f0.png']
  assert summary['num_images'] == 1 and list(summary['sizes']) == ['f0']


def _predict_main(workdir, *args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  return subprocess.run(
      [sys.executable, 'main.py', '--config=configs/synthetic.py', f'--workdir={workdir}',
       '--mode=predict', '--config.model.widths=(4,8,8,16,16)',
       '--config.data.synthetic.image_size=32', '--config.eval.batch_size=4', *args],
      cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def test_predict_that_skips_every_input_fails_and_lists_why(tmp_path):
  config = tiny_checkpoint.tiny_config()
  tiny_checkpoint.save_checkpoint(config, tmp_path / 'run', step=3)
  inputs = tmp_path / 'in'
  inputs.mkdir()
  (inputs / 'notes.png').write_text('not an image')
  (inputs / 'empty.tif').write_bytes(b'')
  out = tmp_path / 'out'
  proc = _predict_main(tmp_path / 'run', f'--input={inputs}', f'--output={out}')
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  assert 'error: no image predicted: all 2 inputs were skipped' in proc.stderr
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['num_images'] == 0
  assert sorted(pathlib.Path(s['file']).name for s in summary['skipped']) == [
      'empty.tif', 'notes.png']
  assert all('cannot decode' in s['reason'] for s in summary['skipped'])
  # The same output again: refused (exit 2), the earlier summary untouched.
  again = _predict_main(tmp_path / 'run', f'--input={inputs}', f'--output={out}')
  assert again.returncode == 2 and 'not empty' in again.stderr and '--overwrite' in again.stderr
  assert json.loads((out / 'summary.json').read_text()) == summary


def test_predict_reads_sixteen_bit_frames_as_the_builders_do(tmp_path):
  from irstd_jax import raw_data  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'in'
  folder.mkdir()
  frame = np.full((40, 48), 52000, np.uint16)
  frame += np.random.default_rng(1).integers(0, 300, frame.shape).astype(np.uint16)
  frame[10:13, 20:23] = 65000  # a target in the high bits
  Image.fromarray(frame).save(folder / 'sensor.png')
  seen = []

  def network(batch):
    seen.append(batch.copy())
    return np.where(batch > 200, 5.0, -5.0).astype(np.float32)

  summary = predict.predict_files(predictor_lib.Predictor(network, batch_size=1),
                                  predict.find_images(str(folder)), str(tmp_path / 'out'))
  assert summary['num_images'] == 1 and not summary['skipped']
  np.testing.assert_array_equal(seen[0][0, :40, :48, 0],
                                raw_data.stretch_to_uint8(frame))
  mask = np.asarray(Image.open(tmp_path / 'out' / 'masks' / 'sensor.png'))
  assert mask[10:13, 20:23].all() and mask.sum() == 9 * 255
