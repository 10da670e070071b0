"""The raw-folder modules: layout detection (raw_layout), split lists (raw_entries), reading,
binarisation and target counts (raw_data), defects (raw_report), the validation carve
(dataset_splits.carve_validation).

Every folder is generated (tests/raw_folders.py) except the IRSTD-1k sample, read from
../shared/data beside the repository and skipped when it is absent.
"""
import pathlib

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from irstd_jax import dataset_splits
from irstd_jax import raw_data
from irstd_jax import raw_entries
from irstd_jax import raw_issues
from irstd_jax import raw_layout
from irstd_jax import raw_report
import raw_folders

def codes(issues, severity=None):
  return {i.code for i in issues if severity is None or i.severity == severity}


def scan(root, **kwargs):
  return raw_report.scan(raw_layout.find_layout(root, **kwargs))


# -- layouts ----------------------------------------------------------------------------------

@pytest.mark.parametrize('layout,expected_name', [
    ('irstd1k', 'irstd1k'), ('mshnet', 'mshnet'), ('basicirstd', 'basicirstd'),
    ('dnanet', 'dnanet'), ('sirst', 'dnanet'), ('uavb', 'uavb'), ('mmseg', 'mmseg')])
def test_every_layout_is_found_and_read_exactly(tmp_path, layout, expected_name):
  examples = raw_folders.write_folder(tmp_path, layout)
  report = scan(tmp_path)
  assert report.layout.name == expected_name
  assert not report.issues, report.format()
  assert [e.id for e in report.entries['train']] == [f'tr{i:03d}' for i in range(6)]
  assert sorted(e.id for e in report.entries['test']) == [f'te{i:03d}' for i in range(3)]
  for split in raw_layout.LISTED_SPLITS:
    for entry in report.entries[split]:
      sample, issues = raw_data.load_sample(entry)
      ex = examples[entry.id]
      assert not issues
      np.testing.assert_array_equal(sample.image[..., 0], ex.image)
      np.testing.assert_array_equal(sample.mask[..., 0], ex.mask)
      assert (sample.num_targets, sample.target_area) == (ex.num_targets, ex.area)
  assert report.stats['train'].targets == sum(examples[f'tr{i:03d}'].num_targets
                                              for i in range(6))


def test_forced_layout_must_match(tmp_path):
  raw_folders.write_folder(tmp_path, 'dnanet')
  assert raw_layout.find_layout(tmp_path, layout='dnanet').name == 'dnanet'
  with pytest.raises(raw_issues.RawDataError, match='no_layout.*restricted to layout mshnet'):
    raw_layout.find_layout(tmp_path, layout='mshnet')


def test_archive_top_folder_is_descended(tmp_path):
  raw_folders.write_folder(tmp_path / 'NUDT-SIRST', 'dnanet')
  layout = raw_layout.find_layout(tmp_path)
  assert layout.root == tmp_path / 'NUDT-SIRST'


def test_basicirstd_datasets_folder_picks_the_named_dataset(tmp_path):
  """BasicIRSTD keeps several datasets side by side under datasets/."""
  raw_folders.write_folder(tmp_path / 'NUAA-SIRST', 'basicirstd')
  raw_folders.write_folder(tmp_path / 'IRSTD-1K', 'basicirstd', train=['XDU1', 'XDU2'],
                           test=['XDU3'])
  layout = raw_layout.find_layout(tmp_path, dataset='irstd1k')
  assert layout.root == tmp_path / 'IRSTD-1K'
  assert layout.name == 'basicirstd'


def test_basicirstd_lists_named_like_the_dataset_come_first(tmp_path):
  raw_folders.write_folder(tmp_path, 'basicirstd')
  raw_folders.write_list(tmp_path / 'img_idx' / 'train_IRSTD-1K.txt', ['tr000'])
  raw_folders.write_list(tmp_path / 'img_idx' / 'test_IRSTD-1K.txt', ['te000'])
  layout = raw_layout.find_layout(tmp_path, dataset='irstd1k')
  assert layout.train.list_file.name == 'train_IRSTD-1K.txt'
  assert any('train_MyData.txt' in note for note in layout.notes)


def test_explicit_paths_override_detection(tmp_path):
  raw_folders.write_folder(tmp_path, 'dnanet')
  (tmp_path / 'images').rename(tmp_path / 'frames')
  (tmp_path / 'masks').rename(tmp_path / 'annotations')
  with pytest.raises(raw_issues.RawDataError, match='no image folder'):
    raw_layout.find_layout(tmp_path)
  layout = raw_layout.find_layout(tmp_path, images='frames', masks='annotations',
                                train_list='50_50/train.txt', test_list='50_50/test.txt')
  assert layout.name == 'custom'
  assert not raw_report.scan(layout).issues


def test_split_lists_crlf_bom_extensions_comments(tmp_path):
  path = tmp_path / 'train.txt'
  path.write_bytes(b'\xef\xbb\xbfa\r\nb.png\r\nimages/c.BMP\r\n\r\n# comment\r\nd.e\r\na\r\n')
  ids, issues = raw_entries.read_split_list(path)
  assert ids == ['a', 'b', 'c', 'd.e']
  assert codes(issues) == {'duplicate_id'}


@pytest.mark.parametrize('mode,ext', [(m, '.png') for m in ('RGB', 'L', 'RGBA', 'P', 'LA')]
                         + [(m, '.bmp') for m in ('RGB', 'L', 'P')])
def test_image_modes_and_formats_read_as_the_same_grey(tmp_path, mode, ext):
  grey = raw_folders.make_example('x').image
  raw_folders.save(tmp_path / f'x{ext}', grey, mode)
  image = raw_data.read_image(tmp_path / f'x{ext}')
  assert image.shape == grey.shape + (1,) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[..., 0], grey)


def _sensor_frame(bits=16):
  """A frame that uses the high bits: background near 3/4 of full scale, one hot target."""
  rng = np.random.default_rng(3)
  full = 2 ** bits - 1
  frame = (0.75 * full + rng.normal(0, 0.01 * full, (40, 48))).astype(np.uint16)
  frame[20:23, 30:33] = full - 5  # the target: the top of the range
  frame[0, 0] = 0  # a dead pixel
  return frame


@pytest.mark.parametrize('bits, ext', [(16, '.png'), (16, '.tif'), (14, '.png')])
def test_high_bit_depth_frames_are_stretched_by_their_percentiles(tmp_path, bits, ext):
  frame = _sensor_frame(bits)
  assert frame.max() >= 2 ** (bits - 1)  # the high bits are in use
  Image.fromarray(frame).save(tmp_path / f'x{ext}')
  got = raw_data.read_image(tmp_path / f'x{ext}')[..., 0]
  # Reference: the documented rule written out in numpy.
  lo, hi = np.percentile(frame.astype(np.float64), [1.0, 99.99])
  expected = np.rint(255 * np.clip((frame - lo) / (hi - lo), 0, 1)).astype(np.uint8)
  np.testing.assert_array_equal(got, expected)
  assert got[20:23, 30:33].min() >= 250  # the target stays the brightest
  background = np.ones(frame.shape, bool)
  background[20:23, 30:33] = background[0, 0] = False
  assert len(np.unique(got[background])) > 20  # the clutter keeps its contrast
  # Scaling or offsetting the sensor's range changes nothing (per-frame gain control).
  np.testing.assert_array_equal(raw_data.stretch_to_uint8(frame.astype(np.float64) * 3 + 7),
                                got)


def test_sixteen_bit_masks_keep_their_high_byte(tmp_path):
  mask = np.zeros((8, 8), np.uint16)
  mask[2:4, 2:4] = 65535
  Image.fromarray(mask).save(tmp_path / 'm.png')
  np.testing.assert_array_equal(raw_data.read_mask(tmp_path / 'm.png')[..., 0], mask // 257)


def test_constant_sixteen_bit_frame_is_black():
  np.testing.assert_array_equal(raw_data.stretch_to_uint8(np.full((4, 4), 4000, np.uint16)),
                                np.zeros((4, 4), np.uint8))


# -- masks and targets ------------------------------------------------------------------------

def test_binarise():
  mask, stray, values = raw_data.binarise(np.array([[0, 255, 64, 200]], np.uint8))
  np.testing.assert_array_equal(mask, [[0, 1, 0, 1]])
  assert (stray, values) == (2, (64, 200))
  # A {0, 1} mask is taken as it is; > 127 would empty it.
  mask, stray, _ = raw_data.binarise(np.array([[0, 1, 1]], np.uint8))
  np.testing.assert_array_equal(mask, [[0, 1, 1]])
  assert stray == 0


def test_targets_are_eight_connected_components():
  mask = np.zeros((6, 6), np.uint8)
  mask[0, 0] = mask[1, 1] = 1  # touch diagonally: one target
  mask[4, 4:6] = 1  # a second one
  assert raw_data.count_targets(mask) == (2, 4)
  assert raw_data.count_targets(mask[..., None]) == (2, 4)


def test_jpeg_masks_are_thresholded_and_their_ringing_reported(tmp_path):
  examples = raw_folders.write_folder(tmp_path, 'uavb', image_ext='.jpg', mask_ext='.jpg',
                                      size=(40, 36), image_mode='L')
  report = scan(tmp_path)
  assert codes(report.issues) == {'non_binary_mask'}
  assert not report.errors
  for entry in report.entries['train']:
    sample, _ = raw_data.load_sample(entry)
    np.testing.assert_array_equal(sample.mask[..., 0], examples[entry.id].mask)


# -- defects: each yields its named issue, naming the file ------------------------------------

@pytest.mark.parametrize('defect', sorted(raw_folders.DEFECTS))
def test_each_defect_yields_its_named_issue(tmp_path, defect):
  raw_folders.write_folder(tmp_path, 'dnanet')
  break_it, code, severity, where = raw_folders.DEFECTS[defect]
  break_it(tmp_path)
  report = scan(tmp_path)
  found = [i for i in report.issues if i.code == code]
  assert found, report.format()
  assert found[0].severity == severity
  assert any(i.path.endswith(where) for i in found), found
  assert bool(report.errors) == (severity == 'error')
  others = codes(report.errors) - {code}
  assert not others, report.format()


def test_errors_raise_with_every_file_named(tmp_path):
  raw_folders.write_folder(tmp_path, 'dnanet')
  raw_folders.corrupt(tmp_path / 'images' / 'tr003.png')
  raw_folders.resize(tmp_path / 'masks' / 'te001.png')
  report = scan(tmp_path)
  error = raw_issues.RawDataError.from_issues(report.issues, tmp_path)
  assert 'images/tr003.png' in str(error) and 'masks/te001.png' in str(error)
  assert {i.code for i in error.issues} == {'unreadable', 'size_mismatch'}


def test_no_layout(tmp_path):
  (tmp_path / 'notes.txt').write_text('hello')
  with pytest.raises(raw_issues.RawDataError, match=r'no_layout.*no image folder.*notes\.txt'):
    raw_layout.find_layout(tmp_path)
  with pytest.raises(raw_issues.RawDataError, match='does not exist'):
    raw_layout.find_layout(tmp_path / 'absent')


def test_quick_scan_opens_no_file(tmp_path):
  raw_folders.write_folder(tmp_path, 'dnanet')
  raw_folders.corrupt(tmp_path / 'images' / 'tr003.png')
  report = raw_report.scan(raw_layout.find_layout(tmp_path), decode=False)
  assert not report.issues
  assert report.stats['train'].images == 6


# -- validation carve -------------------------------------------------------------------------

def _entries(ids):
  return [raw_entries.Entry(i, pathlib.Path(i), pathlib.Path(i)) for i in ids]


def test_validation_carve_is_deterministic_and_order_free():
  entries = _entries(f'{i:06d}' for i in range(663))
  train, val = dataset_splits.carve_validation(entries, 0.1)
  assert (len(train), len(val)) == (597, 66)
  assert not {e.id for e in train} & {e.id for e in val}
  train2, val2 = dataset_splits.carve_validation(entries[::-1], 0.1)
  assert {e.id for e in val2} == {e.id for e in val}
  assert [e.id for e in train] == sorted(e.id for e in train)  # keeps the list order
  # A larger fraction holds out a superset: ranks do not depend on the fraction.
  _, val20 = dataset_splits.carve_validation(entries, 0.2)
  assert {e.id for e in val} <= {e.id for e in val20}


@pytest.mark.parametrize('n,fraction,n_val', [(0, 0.1, 0), (1, 0.1, 0), (2, 0.1, 1),
                                              (5, 0.1, 1), (663, 0.0, 0), (10, 0.5, 5),
                                              (3, 0.9, 2)])
def test_validation_carve_sizes(n, fraction, n_val):
  _, val = dataset_splits.carve_validation(_entries(str(i) for i in range(n)), fraction)
  assert len(val) == n_val


def test_validation_fraction_out_of_range():
  with pytest.raises(ValueError, match='fraction'):
    dataset_splits.carve_validation(_entries(['a', 'b']), 1.0)


# -- the real IRSTD-1k sample -----------------------------------------------------------------

@raw_folders.needs_irstd1k_sample
def test_irstd1k_sample_stray_pixel_reported_and_binarised(tmp_path):
  root = raw_folders.irstd1k_sample_folder(tmp_path)
  report = raw_report.scan(raw_layout.find_layout(root, dataset='irstd1k'))
  assert report.layout.name == 'irstd1k'
  assert not report.errors
  stray = [i for i in report.issues if i.code == 'non_binary_mask']
  assert len(stray) == 1 and '1 pixel(s)' in stray[0].detail and '[64]' in stray[0].detail
  assert stray[0].path.endswith('IRSTD1k_Label/XDU0.png')
  sample, _ = raw_data.load_sample(report.entries['train'][0])
  raw = np.asarray(Image.open(raw_folders.IRSTD1K_SAMPLE / 'IRSTD1k_Label' / 'XDU0.png'))
  assert raw[32, 509] == 64 and sample.mask[32, 509, 0] == 0
  assert set(np.unique(sample.mask)) == {0, 1}
  np.testing.assert_array_equal(sample.mask[..., 0], raw == 255)
  assert sample.image.shape == (512, 512, 1)
  _, n = ndimage.label(raw == 255, structure=np.ones((3, 3)))
  assert sample.num_targets == n
