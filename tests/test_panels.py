"""tools/panels: which images it picks, the colours at known pixels, the files it writes."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tiny_checkpoint
from conftest import REPO
from irstd_jax import metrics
from irstd_jax import targets as targets_lib
from irstd_jax import synthetic
from irstd_jax.tools import panels

GREEN, RED, YELLOW = targets_lib.COLOURS['TP'], targets_lib.COLOURS['FP'], targets_lib.COLOURS['FN']


def _stats(iou, detected, fa):
  return {'iou': iou, 'detected': detected, 'false_alarm_pixels': fa, 'targets': 2}


def test_disagreement_is_the_sum_of_three_spreads():
  assert panels.disagreement([_stats(0.5, 2, 0), _stats(0.2, 1, 10)]) == pytest.approx(2.3)
  assert panels.disagreement([_stats(0.4, 1, 3), _stats(0.4, 1, 9)]) == 0.0
  # three runs: spread, not a sum of pairwise differences
  assert panels.disagreement([_stats(0.1, 0, 0), _stats(0.3, 1, 0),
                              _stats(0.6, 2, 0)]) == pytest.approx(2.5)


def test_selection_ranks_by_disagreement_ties_by_id_common_images_only():
  a = {'x': _stats(0.5, 1, 0), 'y': _stats(0.5, 2, 0), 'z': _stats(0.5, 1, 0),
       'w': _stats(0.5, 1, 0), 'only_a': _stats(0.0, 0, 0)}
  b = {'x': _stats(0.5, 1, 5), 'y': _stats(0.1, 0, 0), 'z': _stats(0.5, 1, 0),
       'w': _stats(0.5, 1, 5), 'only_b': _stats(1.0, 3, 0)}
  chosen = panels.select_images({'A': a, 'B': b}, 3)
  assert [i for i, _ in chosen] == ['y', 'w', 'x']  # y: 2 + 0.4; w, x: 1 (tie -> id)
  assert chosen[0][1] == pytest.approx(2.4)


def _scene():
  """A 32x32 label with two targets and a prediction with one hit and one false alarm."""
  label = np.zeros((32, 32), np.uint8)
  label[4:7, 4:7] = 1  # target 1: hit
  label[20, 20] = 1  # target 2: missed
  logits = np.full((32, 32), -5.0, np.float32)
  logits[4:6, 4:7] = 3.0  # centroid (4.5, 5) vs (5, 5): within 3 px -> TP
  logits[12:14, 25:27] = 2.0  # far from every target -> FP
  return label, logits


def test_prediction_cell_colours_at_known_pixels_agree_with_the_metric():
  label, logits = _scene()
  targets = targets_lib.find_targets(logits > 0, logits, label.astype(bool))
  cell = panels.prediction_cell(label.shape, targets)
  assert tuple(cell[4, 4]) == GREEN and tuple(cell[5, 6]) == GREEN
  assert tuple(cell[6, 5]) == (0, 0, 0)  # a label pixel of a detected target, not predicted
  assert tuple(cell[12, 25]) == RED and tuple(cell[13, 26]) == RED
  assert tuple(cell[20, 20]) == YELLOW
  assert tuple(cell[0, 0]) == (0, 0, 0) and tuple(cell[31, 31]) == (0, 0, 0)
  stats = metrics.image_stats(logits > 0, label)
  green = np.all(cell == GREEN, axis=-1)
  red = np.all(cell == RED, axis=-1)
  assert stats.num_detected == 1 and green.sum() == 6
  assert stats.false_alarm_pixels == red.sum() == 4
  assert tuple(panels.truth_cell(label)[20, 20]) == panels.GT_COLOUR


def test_inset_regions_cover_each_target_and_fall_back_to_false_alarms():
  label, logits = _scene()
  regions = panels.inset_regions(label, [], max_regions=2, min_side=16)
  assert regions == [(0, 0, 16, 16), (12, 12, 28, 28)]  # clipped at the border; centred
  for (y0, x0, y1, x1), (ty, tx) in zip(regions, [(5, 5), (20, 20)]):
    assert y0 <= ty < y1 and x0 <= tx < x1 and y1 - y0 == x1 - x0 == 16
  targets = targets_lib.find_targets(logits > 0, logits, np.zeros_like(label, bool))
  fallback = panels.inset_regions(np.zeros_like(label), [targets], max_regions=1)
  assert len(fallback) == 1  # the larger of the two (both 6 / 4 px): the 3x2 blob
  y0, x0, y1, x1 = fallback[0]
  assert y0 <= 4 < y1 and x0 <= 5 < x1


def test_compose_cell_magnifies_boxes_and_insets_the_region():
  label, logits = _scene()
  cell = panels.prediction_cell(label.shape, targets_lib.find_targets(logits > 0, logits,
                                                                  label.astype(bool)))
  region = (12, 12, 28, 28)  # around the missed target at (20, 20)
  big = panels.compose_cell(cell, [region], scale=4, inset_fraction=0.5)
  assert big.shape == (128, 128, 3)
  colour = panels.INSET_COLOURS[0]
  assert tuple(big[80, 111]) == colour and tuple(big[111, 80]) == colour  # the box's edges
  assert tuple(big[12 * 4 + 1, 25 * 4 + 1]) == RED  # the FP blob, magnified
  # The inset: the 16 px region magnified 4x (64 px), in the top-left corner (the
  # bottom-left and bottom-right corners would cover the region's box).
  inset = big[:64, :64]
  assert tuple(inset[0, 10]) == colour  # its border
  expected = np.repeat(np.repeat(cell[12:28, 12:28], 4, axis=0), 4, axis=1)
  np.testing.assert_array_equal(inset[2:-2, 2:-2], expected[2:-2, 2:-2])
  assert tuple(inset[8 * 4 + 1, 8 * 4 + 1]) == YELLOW  # (20, 20) is (8, 8) in the region


def _fake_rows():
  label, logits = _scene()
  image = (label * 200 + 30).astype(np.uint8)
  worse = np.where(logits > 2.5, -1.0, logits).astype(np.float32)  # loses the TP
  return [panels.Row('img_a', image, label, [logits, worse]),
          panels.Row('img_b', image, np.zeros_like(label), [logits, logits])]


def test_draw_writes_png_pdf_and_json_at_the_asked_resolution(tmp_path):
  out = str(tmp_path / 'sub' / 'panel')
  paths = panels.draw(_fake_rows(), ['good', 'worse'], out, dpi=100, width_in=4.0,
                      metadata={'split': 'test'})
  assert sorted(paths) == sorted([out + '.png', out + '.pdf', out + '.json'])
  assert sorted(os.listdir(tmp_path / 'sub')) == ['panel.json', 'panel.pdf', 'panel.png']
  png = np.asarray(Image.open(out + '.png').convert('RGB'))
  cell_in = 4.0 / 4  # 4 columns
  assert png.shape[1] == round((4.0 + 0.18) * 100)
  assert png.shape[0] == round((0.22 + 0.25 + 2 * cell_in) * 100)
  for colour in (GREEN, RED, YELLOW):
    assert np.all(png == colour, axis=-1).sum() > 20, colour
  with open(out + '.pdf', 'rb') as f:
    assert f.read(5) == b'%PDF-'
  meta = json.loads(open(out + '.json').read())
  assert meta['columns'] == ['Image', 'Ground truth', 'good', 'worse'] and meta['dpi'] == 100


def test_stored_per_image_is_read_only_when_it_matches_the_checkpoint(tmp_path):
  (tmp_path / 'checkpoints' / '7').mkdir(parents=True)
  folder = tmp_path / 'eval_test_basicirstd_last'
  folder.mkdir()
  with open(folder / 'per_image.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=['id', 'iou', 'targets', 'detected',
                                           'false_alarm_pixels', 'height', 'width'])
    writer.writeheader()
    writer.writerow({'id': 'a', 'iou': '0.5', 'targets': 2, 'detected': 1,
                     'false_alarm_pixels': 3, 'height': 32, 'width': 32})
  (folder / 'eval_results.json').write_text(json.dumps({'step': 7}))
  stats = panels.stored_per_image(str(tmp_path), split='test', protocol='basicirstd',
                                  checkpoint='last')
  assert stats == {'a': {'iou': 0.5, 'targets': 2.0, 'detected': 1.0,
                         'false_alarm_pixels': 3.0}}
  (tmp_path / 'checkpoints' / '9').mkdir()  # trained on: the stored numbers are stale
  assert panels.stored_per_image(str(tmp_path), split='test', protocol='basicirstd',
                                 checkpoint='last') is None
  # the training run's own per-image file, for the same step
  (tmp_path / 'eval_results.json').write_text(json.dumps({'step': 9}))
  (tmp_path / 'eval_per_image.json').write_text(json.dumps(
      [{'id': 'b', 'iou': 0.25, 'targets': 1, 'detected': 0, 'false_alarm_pixels': 0}]))
  assert panels.stored_per_image(str(tmp_path), split='test', protocol='basicirstd',
                                 checkpoint='last')['b']['iou'] == 0.25
  assert panels.stored_per_image(str(tmp_path), split='validation', protocol='basicirstd',
                                 checkpoint='last') is None


def _two_runs(tmp_path):
  config = tiny_checkpoint.tiny_config()
  other = tiny_checkpoint.tiny_config()
  other.seed = 1  # another initialisation: the two runs disagree
  tiny_checkpoint.save_checkpoint(config, tmp_path / 'a', step=3)
  tiny_checkpoint.save_checkpoint(other, tmp_path / 'b', step=5)
  return config


@pytest.mark.slow
def test_make_panels_chooses_where_the_runs_disagree_and_reports_it(tmp_path):
  config = _two_runs(tmp_path)
  runs = [panels.Run('A', str(tmp_path / 'a'), config),
          panels.Run('B', str(tmp_path / 'b'), config)]
  source = synthetic.SyntheticSource('test', 6, seed=config.seed,
                                     cfg=synthetic.SceneConfig(image_size=32))
  meta = panels.make_panels(runs, source, str(tmp_path / 'out' / 'p'), split='test', count=3,
                            dpi=60, width_in=3.0, log=lambda _: None)
  assert [r['step'] for r in meta['runs']] == [3, 5]
  # Recompute the choice from the per-image numbers of every image.
  per_run = {}
  for name in ('A', 'B'):
    per_run[name] = {}
  from irstd_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from irstd_jax import evaluate  # pylint: disable=g-import-not-at-top
  for run in runs:
    restored = checkpointing.restore_run(config, run.workdir)
    evaluator, state = evaluate.evaluator_for(config, restored), restored.state
    for image_id, logits, mask in evaluator.predictions(state, source):
      s = metrics.image_stats(logits > 0, mask)
      per_run[run.name][image_id] = {'iou': s.iou, 'detected': s.num_detected,
                                     'false_alarm_pixels': s.false_alarm_pixels}
  expected = panels.select_images(per_run, 3)
  assert [(i['id'], i['disagreement']) for i in meta['images']] == [
      (i, pytest.approx(s)) for i, s in expected]
  for image in meta['images']:  # the numbers written are the metric's
    for name in ('A', 'B'):
      assert image['per_run'][name]['detected'] == per_run[name][image['id']]['detected']
  assert sorted(os.listdir(tmp_path / 'out')) == ['p.json', 'p.pdf', 'p.png']

  with pytest.raises(ValueError, match=r"\['nope'\] not in the test split"):
    panels.make_panels(runs, source, str(tmp_path / 'out2' / 'p'), split='test',
                       image_ids=['nope'], log=lambda _: None)
  assert not (tmp_path / 'out2').exists()


def test_make_panels_selects_from_stored_evaluations_without_evaluating(tmp_path):
  config = _two_runs(tmp_path)
  ids = [f'synthetic_test_{i:05d}' for i in range(6)]
  detected = {'a': [1, 1, 0, 2, 1, 1], 'b': [1, 0, 0, 0, 1, 1]}  # 3: 2 apart, 1: 1 apart
  for run, step in (('a', 3), ('b', 5)):
    folder = tmp_path / run / 'eval_test_basicirstd_last'
    folder.mkdir()
    (folder / 'eval_results.json').write_text(json.dumps({'step': step}))
    with open(folder / 'per_image.csv', 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=['id', 'iou', 'targets', 'detected',
                                             'false_alarm_pixels'])
      writer.writeheader()
      for image_id, d in zip(ids, detected[run]):
        writer.writerow({'id': image_id, 'iou': 0.5, 'targets': 2, 'detected': d,
                         'false_alarm_pixels': 0})
  runs = [panels.Run('A', str(tmp_path / 'a'), config),
          panels.Run('B', str(tmp_path / 'b'), config)]
  source = synthetic.SyntheticSource('test', 6, seed=config.seed,
                                     cfg=synthetic.SceneConfig(image_size=32))
  lines = []
  meta = panels.make_panels(runs, source, str(tmp_path / 'out' / 'p'), split='test', count=2,
                            dpi=60, width_in=3.0, log=lines.append)
  assert [(i['id'], i['disagreement']) for i in meta['images']] == [
      ('synthetic_test_00003', 2.0), ('synthetic_test_00001', 1.0)]
  assert not any('evaluating' in line for line in lines)  # the stored numbers were used
  assert sorted(os.listdir(tmp_path / 'out')) == ['p.json', 'p.pdf', 'p.png']


TINY_FLAGS = ['--config=configs/synthetic.py', '--config.model.widths=(4,8,8,16,16)',
              '--config.data.synthetic.image_size=32', '--config.data.synthetic.num_test=6',
              '--config.eval.batch_size=4']


@pytest.mark.slow
def test_command_line_writes_the_panel_and_refuses_bad_input(tmp_path):
  _two_runs(tmp_path)
  cmd = [sys.executable, '-m', 'irstd_jax.tools.panels', *TINY_FLAGS,
         f'--run=A={tmp_path}/a', f'--run=B={tmp_path}/b', '--dpi=60', '--count=2']
  proc = subprocess.run([*cmd, f'--out={tmp_path}/out/p'], cwd=REPO, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'chosen (disagreement)' in proc.stdout
  assert len(json.loads((tmp_path / 'out' / 'p.json').read_text())['images']) == 2
  bad = subprocess.run([*cmd, '--images=synthetic_test_00000,nope', f'--out={tmp_path}/bad/p'],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
  assert bad.returncode == 2 and "['nope'] not in the test split" in bad.stderr
  assert not (tmp_path / 'bad').exists()
  missing = subprocess.run([*cmd[:-2], f'--run=C={tmp_path}/none', f'--out={tmp_path}/bad/p'],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
  assert missing.returncode == 2 and 'is not a directory' in missing.stderr


def test_insets_avoid_hiding_detections_when_a_corner_is_free():
  cell = np.zeros((32, 32, 3), np.uint8)
  region = [(12, 12, 20, 20)]  # central: no corner covers its box
  avoid = np.zeros((32, 32), bool)
  avoid[28:, :4] = True  # something in the bottom-left corner, the first choice
  big = panels.compose_cell(cell, region, scale=2, inset_fraction=0.25, avoid=avoid)
  colour = panels.INSET_COLOURS[0]
  assert tuple(big[63, 0]) == (0, 0, 0)  # bottom-left left alone
  assert tuple(big[63, 63]) == colour  # the inset went bottom-right
  plain = panels.compose_cell(cell, region, scale=2, inset_fraction=0.25)
  assert tuple(plain[63, 0]) == colour


def test_run_specs_name_workdir_and_optional_config(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)  # config paths are relative, as on the command line
  default = object()
  run = panels.parse_run(f'L2 (SLS)={tmp_path}', default)
  assert (run.name, run.workdir, run.config) == ('L2 (SLS)', str(tmp_path), default)
  own = panels.parse_run(f'A3={tmp_path}=configs/ablation/a3_gaussian_pinwheel.py:synthetic',
                         default)
  assert own.config.model.spatial_attention == 'gaussian_pinwheel'
  assert own.config.data.name == 'synthetic'
  for bad, message in ((f'{tmp_path}', 'expected NAME=WORKDIR'),
                       (f'A={tmp_path}/none', 'is not a directory')):
    with pytest.raises(ValueError, match=message):
      panels.parse_run(bad, default)
  assert panels.parse_image_ids(' a, b,,c ') == ['a', 'b', 'c']
  (tmp_path / 'ids.txt').write_text('x  # first\n\n# skip\ny\n')
  assert panels.parse_image_ids(f'@{tmp_path}/ids.txt') == ['x', 'y']
