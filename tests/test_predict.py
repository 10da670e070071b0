"""predict: tiling, bucketing, TTA, target lists and files, on fake and tiny real models."""
import csv
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import tiny_checkpoint
from irstd_jax import metrics
from irstd_jax import predict
from irstd_jax import predictor as predictor_lib
from irstd_jax import targets as targets_lib
from irstd_jax.errors import UserError


def _pointwise(batch):
  """A 'network' whose logit depends on its own pixel only (never exactly 0)."""
  return (batch.astype(np.float32) - 127.5) / 10.0


def _box_blur(batch):
  """A 3x3 mean with zero boundary: equivariant to every flip and transpose, and the
  zero padding to a bucket is just more zero boundary."""
  x = batch[..., 0].astype(np.float64)
  out = ndimage.uniform_filter(x, size=(1, 3, 3), mode='constant', cval=0.0)
  return ((out - 100.0) / 10.0).astype(np.float32)[..., None]


def _shift_right(batch):
  """Not equivariant: TTA must change its output."""
  x = batch.astype(np.float32)
  return (np.roll(x, 1, axis=2) - 100.0) / 10.0


def _image(rng, h, w):
  return rng.integers(0, 256, (h, w), dtype=np.uint8)


def test_bucket_and_tile_geometry():
  assert [predictor_lib.bucket(n) for n in (1, 32, 33, 100, 257, 1000, 1024, 1100)] == [
      32, 32, 64, 128, 320, 1024, 1024, 1120]
  for n, tile, overlap in ((1100, 512, 64), (2000, 512, 64), (513, 512, 32), (4000, 256, 16)):
    starts = predictor_lib.tile_starts(n, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == n
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # overlap >= o
  assert predictor_lib.tile_starts(300, 512, 64) == [0]


def test_the_eight_transforms_are_distinct_and_inverted():
  x = np.arange(12).reshape(3, 4)
  views = [predictor_lib.transform(x, k) for k in range(8)]
  assert len({v.tobytes() + bytes(v.shape) for v in views}) == 8
  for k, v in enumerate(views):
    np.testing.assert_array_equal(predictor_lib.inverse_transform(v, k), x)


def test_tiled_frames_stitch_to_the_whole_image_prediction():
  rng = np.random.default_rng(0)
  image = _image(rng, 1100, 1300)
  whole = predictor_lib.Predictor(_pointwise, batch_size=4, max_side=2048, tile_size=512)
  tiled = predictor_lib.Predictor(_pointwise, batch_size=4, max_side=1024, tile_size=512,
                            overlap=64)
  (_, l_whole), = whole.predict([('a', image)])
  (_, l_tiled), = tiled.predict([('a', image)])
  assert l_tiled.shape == image.shape
  np.testing.assert_array_equal(l_whole, _pointwise(image))  # one view: the logits as is
  np.testing.assert_allclose(l_tiled, l_whole, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(l_tiled > 0, l_whole > 0)
  assert set(tiled.shapes_run) == {(512, 512)}  # 3 x 3 tiles, one shape


def test_shapes_are_bucketed_and_batched_across_images():
  rng = np.random.default_rng(1)
  sizes = [(40, 40), (50, 60), (64, 33), (70, 90), (33, 45), (40, 64)]
  calls = []

  def fn(batch):
    calls.append(batch.shape)
    return _pointwise(batch)

  predictor = predictor_lib.Predictor(fn, batch_size=4)
  images = [(i, _image(rng, *s)) for i, s in enumerate(sizes)]
  out = dict(predictor.predict(images))
  assert sorted(out) == list(range(len(sizes)))
  for key, image in images:
    np.testing.assert_array_equal(out[key], _pointwise(image))  # cropped back exactly
  assert set(calls) == {(4, 64, 64, 1), (4, 96, 96, 1)}
  assert len(calls) == 3  # 5 images of one bucket in 2 calls, 1 of the other in 1


def test_tta_undoes_each_transform():
  rng = np.random.default_rng(2)
  images = [(0, _image(rng, 45, 70)), (1, _image(rng, 64, 64))]
  plain = dict(predictor_lib.Predictor(_box_blur).predict(images))
  tta = predictor_lib.Predictor(_box_blur, tta=True)
  averaged = dict(tta.predict(images))
  for k in plain:
    np.testing.assert_allclose(averaged[k], plain[k], rtol=1e-5, atol=1e-5)
  assert sum(tta.shapes_run.values()) == 4  # 16 views in batches of 4
  shifted = dict(predictor_lib.Predictor(_shift_right, tta=True).predict(images))
  unshifted = dict(predictor_lib.Predictor(_shift_right).predict(images))
  assert not np.allclose(shifted[0], unshifted[0])


def test_targets_agree_with_pd_and_fa():
  rng = np.random.default_rng(3)
  for _ in range(20):
    pred = ndimage.uniform_filter(rng.random((40, 40)), 3) > 0.62
    label = ndimage.uniform_filter(rng.random((40, 40)), 3) > 0.63
    targets = targets_lib.find_targets(pred, pred * 8.0 - 4.0, label)
    stats = metrics.image_stats(pred, label)
    status = [t.status for t in targets]
    assert status.count('TP') == stats.num_detected
    assert status.count('FN') == stats.num_targets - stats.num_detected
    assert sum(t.area for t in targets if t.status == 'FP') == stats.false_alarm_pixels
  # Same-sized false alarms stay false alarms.
  label = np.zeros((32, 32), bool)
  label[5:7, 5:7] = True
  pred = label.copy()
  pred[20:22, 3:5] = pred[12:14, 25:27] = True
  assert [t.status for t in targets_lib.find_targets(pred, pred * 1.0, label)] == ['TP', 'FP', 'FP']
  detections = targets_lib.find_targets(pred, pred * 3.0)
  assert [t.status for t in detections] == ['detection'] * 3
  assert [t.area for t in detections] == [4, 4, 4] and detections[0].peak_logit == 3.0


def _write_folder(root):
  """Mixed sizes and modes, one frame over 1024 px, labels for two images."""
  rng = np.random.default_rng(4)
  images, labels = root / 'images', root / 'labels'
  images.mkdir()
  labels.mkdir()
  sizes = {'a': (40, 56), 'b': (64, 33), 'c': (1040, 1100), 'd': (50, 50)}
  for name, (h, w) in sizes.items():
    image = rng.integers(0, 80, (h, w), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 2:h // 2 + 3, w // 3:w // 3 + 3] = 255
    image[mask > 0] = 255
    if name == 'd':  # an RGB file
      Image.fromarray(np.repeat(image[..., None], 3, 2)).save(images / f'{name}.png')
    else:
      Image.fromarray(image).save(images / f'{name}.png')
    if name in ('a', 'c'):
      suffix = '_pixels0' if name == 'c' else ''
      Image.fromarray(mask).save(labels / f'{name}{suffix}.png')
  (images / 'notes.txt').write_text('not an image')
  return sizes


def test_predict_mode_on_a_folder_of_mixed_sizes(tmp_path):
  sizes = _write_folder(tmp_path)
  config = tiny_checkpoint.tiny_config()
  tiny_checkpoint.save_checkpoint(config, tmp_path / 'run', step=5)
  out = tmp_path / 'out'
  summary = predict.run_predict(config, str(tmp_path / 'run'),
                                input_spec=str(tmp_path / 'images'), output=str(out),
                                labels_dir=str(tmp_path / 'labels'))
  assert summary['num_images'] == 4 and summary['step'] == 5 and not summary['problems']
  for name, size in sizes.items():
    for sub in ('masks', 'probabilities', 'overlays'):
      with Image.open(out / sub / f'{name}.png') as im:
        assert im.size == (size[1], size[0]), (sub, name)  # each image's own size
  with Image.open(out / 'masks' / 'c.png') as im:
    assert set(np.unique(np.asarray(im))) <= {0, 255}
  # Two bucket shapes for the small images, one tile shape for the big frame.
  assert summary['compiled_shapes'] == ['512x512', '64x64']
  with open(out / 'targets.csv') as f:
    rows = list(csv.DictReader(f))
  # Whatever the random model detects, targets.csv must agree with the masks it wrote (its
  # 8-connected components) and with the labels (one 3x3 target in each of a and c, so those
  # two images always have a TP or an FN row and `rows` is never empty).
  assert rows and list(rows[0]) == list(predict.TARGET_FIELDS)
  for name in sizes:
    statuses = [r['status'] for r in rows if r['image'] == name]
    with Image.open(out / 'masks' / f'{name}.png') as im:
      _, num_predicted = ndimage.label(np.asarray(im) > 0, structure=np.ones((3, 3)))
    if name in ('b', 'd'):  # no label: every predicted component is a plain detection
      assert statuses == ['detection'] * num_predicted, name
    else:
      assert statuses.count('TP') + statuses.count('FP') == num_predicted, name
      assert statuses.count('TP') + statuses.count('FN') == 1, name
      assert set(statuses) <= {'TP', 'FP', 'FN'}, name
  assert 'metrics' in summary and summary['metrics']['num_images'] == 2
  assert summary['metrics']['num_targets'] == 2
  assert json.loads((out / 'summary.json').read_text())['sizes']['c'] == [1040, 1100]


def test_targets_csv_on_a_model_with_known_detections(tmp_path):
  # _pointwise detects exactly the pixels above 127, so every status is known in advance.
  images, labels, out = tmp_path / 'images', tmp_path / 'labels', tmp_path / 'out'
  images.mkdir()
  labels.mkdir()
  a = np.full((40, 48), 20, np.uint8)
  a[10:13, 10:13] = 255  # labelled and bright: TP, area 9
  a[30:32, 40:42] = 255  # bright, not in the label: FP, area 4
  label = np.zeros_like(a)
  label[10:13, 10:13] = label[20:22, 25:27] = 255  # the second one is dark in a: FN, area 4
  Image.fromarray(a).save(images / 'a.png')
  Image.fromarray(label).save(labels / 'a.png')
  b = np.full((33, 35), 20, np.uint8)
  b[5:8, 5:7] = 200  # no label: a detection, area 6
  Image.fromarray(b).save(images / 'b.png')
  Image.fromarray(np.full((20, 20), 20, np.uint8)).save(images / 'e.png')  # nothing
  summary = predict.predict_files(predictor_lib.Predictor(_pointwise, batch_size=2),
                                  predict.find_images(str(images)), str(out),
                                  labels_dir=str(labels))
  with open(out / 'targets.csv') as f:
    rows = [(r['image'], r['status'], int(r['area']), float(r['centroid_row']),
             float(r['centroid_col'])) for r in csv.DictReader(f)]
  assert sorted(rows) == [('a', 'FN', 4, 20.5, 25.5), ('a', 'FP', 4, 30.5, 40.5),
                          ('a', 'TP', 9, 11.0, 11.0), ('b', 'detection', 6, 6.0, 5.5)]
  assert summary['targets'] == {'TP': 1, 'FP': 1, 'FN': 1, 'detection': 1}
  assert summary['metrics']['num_targets'] == 2 and summary['metrics']['pd'] == 0.5
  assert summary['metrics']['fa'] == 4 / (40 * 48)


def test_missing_inputs_are_errors(tmp_path):
  with pytest.raises(UserError, match="no images"):
    predict.find_images(str(tmp_path / '*.png'))
  (tmp_path / 'x.png').write_bytes(b'')
  assert predict.find_images(str(tmp_path / 'x.png')) == [tmp_path / 'x.png']
