"""tfds_sources.load_split: builds on first use, reads back without TensorFlow, refuses bad data
without leaving anything behind, and says what to put where when the raw files are missing.

The NUDT-SIRST tests read ../shared/data/NUDT-SIRST beside the repository and are skipped
when it is absent. The full build takes about 10 s on a 2-core CPU (measured), so it runs by
default; `test_nudt_sirst_subset` is the quick version.
"""
import dataclasses
import importlib.util
import os
import sys
import time

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from irstd_jax import dataset_registry
from irstd_jax import dataset_splits
from irstd_jax import raw_data
from irstd_jax import raw_entries
from irstd_jax import raw_issues
from irstd_jax import raw_layout
from irstd_jax import raw_report
from irstd_jax import tfds_sources
from irstd_jax.errors import UserError
import raw_folders

NUDT = raw_folders.SHARED_DATA / 'NUDT-SIRST'
needs_nudt = pytest.mark.skipif(
    not (NUDT / '50_50' / 'train.txt').exists(),
    reason=f'{NUDT} is absent (the shared data folder beside the repository)')


def files_under(path):
  return sorted(p for p in path.rglob('*') if p.is_file()) if path.exists() else []


def read_all(source):
  return [source[i] for i in range(len(source))]


def as_str(record_id):
  return record_id.decode() if isinstance(record_id, bytes) else record_id


# -- the manual directory is missing ----------------------------------------------------------

@pytest.mark.parametrize('name,page,tree_line', [
    ('irstd1k', 'github.com/RuiZhang97/ISNet', 'IRSTD1k_Label/XDU0.png'),
    ('nudt_sirst', 'github.com/YeRen123455/Infrared-Small-Target-Detection', '50_50/test.txt'),
    ('sirst_uavb', 'github.com/JN-Yang/PConv-SDloss-Data', 'val.txt')])
def test_missing_manual_dir_says_what_to_put_where(tmp_path, name, page, tree_line):
  with pytest.raises(tfds_sources.DatasetNotFoundError) as info:
    tfds_sources.load_split(name, 'train', data_dir=str(tmp_path))
  message = str(info.value)
  manual = tmp_path / 'downloads' / 'manual' / name
  assert isinstance(info.value, FileNotFoundError)
  assert f'Create the folder {manual}' in message and 'does not exist' in message
  assert page in message and tree_line in message
  assert f'python -m irstd_jax.validate_dataset {manual} --dataset {name}' in message
  assert files_under(tmp_path) == []


def test_empty_or_unrecognised_manual_dir(tmp_path):
  manual = tmp_path / 'raw'
  manual.mkdir()
  with pytest.raises(tfds_sources.DatasetNotFoundError, match='is empty'):
    tfds_sources.load_split('nudt_sirst', 'train', data_dir=str(tmp_path / 'tfds'),
                            manual_dir=str(manual))
  (manual / 'readme.txt').write_text('the data will come later')
  with pytest.raises(tfds_sources.DatasetNotFoundError,
                     match=r'no dataset recognised(.|\n)*readme\.txt(.|\n)*images/000001\.png'):
    tfds_sources.load_split('nudt_sirst', 'train', data_dir=str(tmp_path / 'tfds'),
                            manual_dir=str(manual))


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match='unknown split'):
    tfds_sources.load_split('nudt_sirst', 'val', data_dir=str(tmp_path))
  with pytest.raises(ValueError, match='unknown dataset'):
    tfds_sources.load_split('nuaa', 'train', data_dir=str(tmp_path))
  with pytest.raises(UserError, match='irstd_folder needs the raw folder'):
    tfds_sources.load_split('irstd_folder', 'train', data_dir=str(tmp_path))


# -- building from a generated folder ---------------------------------------------------------

def test_builds_on_first_use_and_reads_back(tmp_path):
  data_dir = tmp_path / 'tfds'
  manual = data_dir / 'downloads' / 'manual' / 'nudt_sirst'  # the default manual directory
  examples = raw_folders.write_folder(manual, 'dnanet', train=[f'{i:06d}' for i in range(1, 11)],
                                      test=[f'{i:06d}' for i in range(11, 15)], crlf=True)
  sources = {s: tfds_sources.load_split('nudt_sirst', s, data_dir=str(data_dir))
             for s in dataset_registry.SPLITS}
  assert {s: len(v) for s, v in sources.items()} == {'train': 9, 'validation': 1, 'test': 4}
  ids = {}
  for split, source in sources.items():
    records = read_all(source)
    ids[split] = {as_str(r['id']) for r in records}
    for r in records:
      ex = examples[as_str(r['id'])]
      assert r['image'].dtype == np.uint8 and r['image'].shape == (24, 20, 1)
      assert r['mask'].dtype == np.uint8 and r['mask'].shape == (24, 20, 1)
      np.testing.assert_array_equal(r['image'][..., 0], ex.image)
      np.testing.assert_array_equal(r['mask'][..., 0], ex.mask)
      assert (int(r['num_targets']), int(r['target_area'])) == (ex.num_targets, ex.area)
  assert ids['train'] | ids['validation'] == {f'{i:06d}' for i in range(1, 11)}
  assert not ids['train'] & ids['validation']
  assert ids['test'] == {f'{i:06d}' for i in range(11, 15)}
  # The second call reuses the build.
  built = files_under(data_dir / 'nudt_sirst')
  mtimes = [p.stat().st_mtime_ns for p in built]
  again = tfds_sources.load_split('nudt_sirst', 'validation', data_dir=str(data_dir))
  assert {as_str(r['id']) for r in read_all(again)} == ids['validation']
  assert [p.stat().st_mtime_ns for p in files_under(data_dir / 'nudt_sirst')] == mtimes
  assert any(p.name.startswith('nudt_sirst-train.array_record') for p in built)


def test_val_fraction_gives_its_own_config(tmp_path):
  manual = tmp_path / 'raw'
  raw_folders.write_folder(manual, 'mshnet', train=[f'a{i}' for i in range(10)])
  kwargs = dict(data_dir=str(tmp_path / 'tfds'), manual_dir=str(manual))
  val30 = tfds_sources.load_split('irstd1k', 'validation', val_fraction=0.3, **kwargs)
  assert len(val30) == 3
  assert (tmp_path / 'tfds' / 'irstd1k' / 'val30').is_dir()
  assert len(tfds_sources.load_split('irstd1k', 'train', val_fraction=0.0, **kwargs)) == 10
  with pytest.raises(UserError, match="no 'validation' split"):
    tfds_sources.load_split('irstd1k', 'validation', val_fraction=0.0, **kwargs)


def test_generic_folder_builder_keeps_folders_apart(tmp_path):
  a, b = tmp_path / 'site_a', tmp_path / 'site_b'
  raw_folders.write_folder(a, 'sirst', image_mode='P', mask_ext='.bmp')
  raw_folders.write_folder(b, 'mmseg', train=['x1', 'x2', 'x3'], test=['y1'], image_mode='RGBA')
  data_dir = str(tmp_path / 'tfds')
  test_a = tfds_sources.load_split('irstd_folder', 'test', data_dir=data_dir, manual_dir=str(a))
  test_b = tfds_sources.load_split('irstd_folder', 'test', data_dir=data_dir, manual_dir=str(b))
  assert {as_str(r['id']) for r in read_all(test_a)} == {'te000', 'te001', 'te002'}
  assert {as_str(r['id']) for r in read_all(test_b)} == {'y1'}
  configs = sorted(p.name for p in (tmp_path / 'tfds' / 'irstd_folder').iterdir()
                   if not p.name.startswith('.'))
  assert len(configs) == 2 and configs[0].startswith('site_a_') and configs[0].endswith('_val10')


def test_command_line_builds_and_prints_totals(tmp_path, capsys):
  manual = tmp_path / 'raw'
  examples = raw_folders.write_folder(manual, 'basicirstd')
  status = tfds_sources.main(['irstd1k', '--data_dir', str(tmp_path / 'tfds'), '--manual_dir',
                              str(manual)])
  out = capsys.readouterr().out
  assert status == 0
  test_targets = sum(examples[f'te{i:03d}'].num_targets for i in range(3))
  assert f'test: 3 images, {test_targets} targets' in out
  assert tfds_sources.main(['irstd1k', '--data_dir', str(tmp_path / 'tfds2'), '--manual_dir',
                            str(tmp_path / 'absent')]) == 1
  assert 'does not exist' in capsys.readouterr().err


def test_datasets_load_split_reaches_the_builders(tmp_path):
  """The config path the training code takes (configs/*.py -> datasets.load_split)."""
  from configs import nudt_sirst  # pylint: disable=g-import-not-at-top
  from irstd_jax import datasets  # pylint: disable=g-import-not-at-top
  manual = tmp_path / 'raw'
  raw_folders.write_folder(manual, 'dnanet')
  config = nudt_sirst.get_config()
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.manual_dir = str(manual)
  source = datasets.load_split(config.data, 'test')
  assert len(source) == 3 and source[0]['mask'].shape == (24, 20, 1)


@pytest.mark.skipif(importlib.util.find_spec('tensorflow') is not None,
                    reason='TensorFlow is installed here; the check needs a machine without it')
def test_builds_and_reads_without_tensorflow(tmp_path):
  manual = tmp_path / 'raw'
  raw_folders.write_folder(manual, 'irstd1k', image_mode='RGB')
  source = tfds_sources.load_split('irstd1k', 'test', data_dir=str(tmp_path / 'tfds'),
                                   manual_dir=str(manual))
  assert source[0]['image'].shape == (24, 20, 1)
  assert not [m for m in sys.modules if m.split('.')[0] == 'tensorflow']


# -- bad data: refused by name, nothing left behind -------------------------------------------

def test_corrupt_file_is_refused_and_leaves_no_partial_dataset(tmp_path):
  manual, data_dir = tmp_path / 'raw', tmp_path / 'tfds'
  raw_folders.write_folder(manual, 'dnanet')
  good = (manual / 'images' / 'tr003.png').read_bytes()
  raw_folders.corrupt(manual / 'images' / 'tr003.png')
  with pytest.raises(raw_issues.RawDataError, match=r'unreadable: .*images/tr003\.png') as info:
    tfds_sources.load_split('nudt_sirst', 'train', data_dir=str(data_dir),
                            manual_dir=str(manual))
  assert [i.code for i in info.value.issues] == ['unreadable']
  assert files_under(data_dir) == []
  assert not (data_dir / 'nudt_sirst').exists()
  # Fixed, it builds.
  (manual / 'images' / 'tr003.png').write_bytes(good)
  assert len(tfds_sources.load_split('nudt_sirst', 'test', data_dir=str(data_dir),
                                     manual_dir=str(manual))) == 3


def test_failure_while_writing_leaves_no_partial_dataset(tmp_path, monkeypatch):
  """With the up-front check skipped, the corrupt file is met while the splits are written."""
  manual, data_dir = tmp_path / 'raw', tmp_path / 'tfds'
  raw_folders.write_folder(manual, 'dnanet')
  raw_folders.corrupt(manual / 'masks' / 'te002.png')
  scan = raw_report.scan
  monkeypatch.setattr(raw_report, 'scan', lambda layout, **kw: scan(layout, decode=False, **kw))
  with pytest.raises(raw_issues.RawDataError, match=r'masks/te002\.png'):
    tfds_sources.load_split('nudt_sirst', 'train', data_dir=str(data_dir),
                            manual_dir=str(manual))
  assert files_under(data_dir) == []


@pytest.mark.parametrize('defect', [d for d, v in sorted(raw_folders.DEFECTS.items())
                                    if v[2] == 'error'])
def test_builder_refuses_each_error_with_the_validator_message(tmp_path, defect):
  manual, data_dir = tmp_path / 'raw', tmp_path / 'tfds'
  raw_folders.write_folder(manual, 'dnanet')
  break_it, code, _, where = raw_folders.DEFECTS[defect]
  break_it(manual)
  report = raw_report.scan(raw_layout.find_layout(manual))
  with pytest.raises(raw_issues.RawDataError) as info:
    tfds_sources.load_split('irstd_folder', 'train', data_dir=str(data_dir),
                            manual_dir=str(manual))
  assert code in {i.code for i in info.value.issues} and where in str(info.value)
  for issue in report.errors:
    assert str(issue) in str(info.value)
  assert files_under(data_dir) == []


def test_official_split_keeps_cross_split_duplicates_with_a_warning(tmp_path, capsys):
  """A published benchmark split is built as published; a user's own split is refused."""
  manual, data_dir = tmp_path / 'raw', tmp_path / 'tfds'
  raw_folders.write_folder(manual, 'dnanet')
  raw_folders.DEFECTS['duplicate_across_splits'][0](manual)
  assert len(tfds_sources.load_split('nudt_sirst', 'test', data_dir=str(data_dir),
                                     manual_dir=str(manual))) == 3
  report = raw_report.scan(raw_layout.find_layout(manual), dataset='nudt_sirst')
  assert [i.severity for i in report.issues if i.code == 'duplicate_across_splits'] == [
      'warning']


# -- real data --------------------------------------------------------------------------------

@raw_folders.needs_irstd1k_sample
def test_irstd1k_sample_stray_pixel_binarised_away(tmp_path):
  root = raw_folders.irstd1k_sample_folder(tmp_path)
  kwargs = dict(data_dir=str(tmp_path / 'tfds'), manual_dir=str(root))
  train = tfds_sources.load_split('irstd1k', 'train', **kwargs)
  assert len(train) == 1
  record = train[0]
  raw = np.asarray(Image.open(raw_folders.IRSTD1K_SAMPLE / 'IRSTD1k_Label' / 'XDU0.png'))
  assert as_str(record['id']) == 'XDU0'
  assert record['image'].shape == record['mask'].shape == (512, 512, 1)
  assert raw[32, 509] == 64 and record['mask'][32, 509, 0] == 0
  assert set(np.unique(record['mask'])) == {0, 1}
  np.testing.assert_array_equal(record['mask'][..., 0], raw == 255)
  _, n = ndimage.label(raw > 127, structure=np.ones((3, 3)))
  assert int(record['num_targets']) == n
  # One training image: no validation split can be carved.
  with pytest.raises(UserError, match="no 'validation' split"):
    tfds_sources.load_split('irstd1k', 'validation', **kwargs)
  assert len(tfds_sources.load_split('irstd1k', 'test', **kwargs)) == 1


def nudt_reference(ids):
  """Per-id (8-connected components, area, shape) straight from the raw NUDT masks."""
  out = {}
  for i in ids:
    raw = np.asarray(Image.open(NUDT / 'masks' / f'{i}.png').convert('L'))
    _, n = ndimage.label(raw > 127, structure=np.ones((3, 3)))
    out[i] = (n, int((raw > 127).sum()), raw.shape)
  return out


def check_nudt(sources, train_ids, test_ids):
  ids = {}
  reference = nudt_reference(train_ids + test_ids)
  totals = {}
  for split, source in sources.items():
    ids[split] = []
    targets = area = 0
    for i in range(len(source)):
      r = source[i]
      rid = as_str(r['id'])
      ids[split].append(rid)
      assert r['image'].shape == r['mask'].shape == (256, 256, 1)
      assert r['image'].dtype == r['mask'].dtype == np.uint8
      assert r['mask'].max() <= 1
      n, a, _ = reference[rid]
      assert (int(r['num_targets']), int(r['target_area'])) == (n, a), rid
      assert raw_data.count_targets(r['mask']) == (n, a)
      targets += n
      area += a
    totals[split] = (targets, area)
  assert sorted(ids['train'] + ids['validation']) == sorted(train_ids)
  assert sorted(ids['test']) == sorted(test_ids)
  return totals


@needs_nudt
def test_nudt_sirst_subset(tmp_path):
  """40 train + 40 test ids of the real data, linked into a DNANet layout."""
  train = raw_entries.read_split_list(NUDT / '50_50' / 'train.txt')[0][:40]
  test = raw_entries.read_split_list(NUDT / '50_50' / 'test.txt')[0][:40]
  manual = tmp_path / 'raw'
  for sub in ('images', 'masks'):
    (manual / sub).mkdir(parents=True)
    for i in train + test:
      os.symlink(NUDT / sub / f'{i}.png', manual / sub / f'{i}.png')
  raw_folders.write_list(manual / '50_50' / 'train.txt', train, crlf=True)
  raw_folders.write_list(manual / '50_50' / 'test.txt', test, crlf=True)
  sources = {s: tfds_sources.load_split('nudt_sirst', s, data_dir=str(tmp_path / 'tfds'),
                                        manual_dir=str(manual)) for s in dataset_registry.SPLITS}
  assert {s: len(v) for s, v in sources.items()} == {'train': 36, 'validation': 4, 'test': 40}
  check_nudt(sources, train, test)


@needs_nudt
def test_nudt_sirst_full_build(tmp_path):
  """The issue's acceptance check: 663 train (incl. validation) / 664 test, 256x256, binary
  masks, target counts equal to the raw masks' 8-connected components."""
  start = time.perf_counter()
  builder = tfds_sources.build('nudt_sirst', data_dir=str(tmp_path), manual_dir=str(NUDT))
  build_s = time.perf_counter() - start
  sources = {s: builder.as_data_source(s) for s in dataset_registry.SPLITS}
  assert {s: len(v) for s, v in sources.items()} == {'train': 597, 'validation': 66,
                                                     'test': 664}
  train = raw_entries.read_split_list(NUDT / '50_50' / 'train.txt')[0]
  test = raw_entries.read_split_list(NUDT / '50_50' / 'test.txt')[0]
  totals = check_nudt(sources, train, test)
  # Totals measured from the raw masks (docs/datasets.md); train + validation = the 663 ids.
  assert (totals['train'][0] + totals['validation'][0],
          totals['train'][1] + totals['validation'][1]) == (918, 29337)
  assert totals['test'] == (945, 28315)
  print(f'NUDT-SIRST build: {build_s:.1f} s; totals {totals}')


# -- builds that cannot go stale; real sensor frames ------------------------------------------

def test_changed_raw_folder_is_built_again_never_reused(tmp_path):
  raw = tmp_path / 'raw'
  raw_folders.write_folder(raw, 'mshnet', train=['a0', 'a1'], test=['b0'])
  kwargs = dict(data_dir=str(tmp_path / 'tfds'), manual_dir=str(raw), val_fraction=0.0)
  assert len(tfds_sources.load_split('irstd_folder', 'train', **kwargs)) == 2
  # The user fixes the folder: more training images. The old build must not be read.
  raw_folders.write_folder(raw, 'mshnet', train=[f'a{i}' for i in range(7)], test=['b0'])
  assert len(tfds_sources.load_split('irstd_folder', 'train', **kwargs)) == 7
  # An edit that keeps every name (a mask redrawn) changes the build too.
  before = tfds_sources._config_for(  # pylint: disable=protected-access
      'irstd_folder', raw, dataset_splits.Options(val_fraction=0.0)).name
  ex = raw_folders.make_example('b0')
  raw_folders.save(raw / 'masks' / 'b0.png', np.zeros_like(ex.mask), 'L')
  after = tfds_sources._config_for(  # pylint: disable=protected-access
      'irstd_folder', raw, dataset_splits.Options(val_fraction=0.0)).name
  assert before != after
  record = tfds_sources.load_split('irstd_folder', 'test', **kwargs)[0]
  assert int(record['num_targets']) == 0


def test_rebuild_remakes_a_build_once(tmp_path, monkeypatch):
  raw = tmp_path / 'raw'
  raw_folders.write_folder(raw, 'mshnet', train=['a0', 'a1', 'a2'], test=['b0'])
  kwargs = dict(data_dir=str(tmp_path / 'tfds'), manual_dir=str(raw))
  tfds_sources.load_split('irstd1k', 'train', **kwargs)
  info = next((tmp_path / 'tfds' / 'irstd1k' / 'val10').glob('*/dataset_info.json'))
  built_at = info.stat().st_mtime_ns
  monkeypatch.setattr(tfds_sources, '_REBUILT', set())
  for split in ('train', 'validation', 'test'):  # one rebuild serves the run's three splits
    tfds_sources.load_split('irstd1k', split, rebuild=True, **kwargs)
    if split == 'train':
      rebuilt_at = info.stat().st_mtime_ns
      assert rebuilt_at != built_at
  assert info.stat().st_mtime_ns == rebuilt_at


def test_sixteen_bit_frames_build_as_predict_reads_them(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  raw = tmp_path / 'raw'
  examples = raw_folders.write_folder(raw, 'mshnet', train=['a0', 'a1'], test=['b0'])
  rng = np.random.default_rng(0)
  for image_id, ex in examples.items():  # 16-bit frames using the high bits, 8-bit masks
    frame = 40000 + 90 * ex.image.astype(np.float64) + rng.normal(0, 50, ex.image.shape)
    assert frame.max() < 65536
    path = raw / 'images' / f'{image_id}.png'
    Image.fromarray(frame.astype(np.uint16)).save(path)
    with Image.open(path) as im:
      assert im.mode.startswith('I')
  source = tfds_sources.load_split('irstd_folder', 'test', data_dir=str(tmp_path / 'tfds'),
                                   manual_dir=str(raw), val_fraction=0.0)
  record = source[0]
  # predict decodes a file with raw_data.read_image: the builder stored exactly that.
  np.testing.assert_array_equal(record['image'], raw_data.read_image(raw / 'images' / 'b0.png'))
  assert record['image'][record['mask'][..., 0] > 0].min() > 200  # targets stay bright


def test_build_config_names_are_pinned(tmp_path):
  """A build lives in <data_dir>/<dataset>/<config name>/: a changed name silently rebuilds
  every existing dataset (a run's NUDT-SIRST build is nudt_sirst/val10)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfds_builders import base  # pylint: disable=g-import-not-at-top
  options = dataset_splits.Options
  assert base.config_name('nudt_sirst', options()) == 'val10'
  assert base.config_name('nudt_sirst', options(val_fraction=0.0)) == 'val0'
  assert base.config_name('nudt_sirst', options(val_fraction=0.125)) == 'val12p5'
  assert base.config_name('nudt_sirst', options(deduplicate='exact')) == 'val10_dedup_exact'
  assert base.config_name('nuaa_sirst', options()) == 'basicirstd_val10'
  assert base.config_name('nuaa_sirst', options(split_lists='acm')) == 'acm'
  assert base.config_name('nuaa_sirst', options(drop_size_mismatch=True, mask_threshold=50)) == (
      'basicirstd_val10_dropsize_mask50')
  builder = tfds_sources.builder_class('nudt_sirst')
  assert [c.name for c in builder.BUILDER_CONFIGS] == ['val10', 'val0']
  assert str(builder.VERSION) == '1.0.0'
  # The config a run's defaults resolve to is the predefined one, by name.
  config_for = tfds_sources._config_for  # pylint: disable=protected-access
  assert config_for('nudt_sirst', tmp_path, options()) == 'val10'
  # The builder config has exactly Options' fields (and defaults) beside TFDS's own.
  tfds_fields = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
  assert {(f.name, f.default) for f in dataclasses.fields(base.IrstdConfig)
          if f.name not in tfds_fields} == {(f.name, f.default)
                                            for f in dataclasses.fields(options)}
  made = base.make_config('nudt_sirst', options(mask_threshold=50))
  assert made.name == 'val10_mask50' and made.options() == options(split_lists='official',
                                                                   mask_threshold=50)
