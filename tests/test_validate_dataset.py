"""python -m irstd_jax.validate_dataset: report, exit status, the same messages as the builders."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from irstd_jax import raw_data
from irstd_jax import raw_issues
from irstd_jax import validate_dataset
import raw_folders

REPO = raw_folders.REPO


def run(capsys, *argv):
  status = validate_dataset.main([str(a) for a in argv])
  return status, capsys.readouterr().out


def test_clean_folder_passes_with_totals(tmp_path, capsys):
  examples = raw_folders.write_folder(tmp_path, 'dnanet')
  status, out = run(capsys, tmp_path)
  assert status == 0
  train_targets = sum(examples[f'tr{i:03d}'].num_targets for i in range(6))
  assert f'train: 6 images, {train_targets} targets' in out
  assert 'layout dnanet' in out and '0 error(s)' in out
  assert 'Built splits: train 5, validation 1' in out


@pytest.mark.parametrize('defect', [d for d, v in sorted(raw_folders.DEFECTS.items())
                                    if v[2] == 'error'])
def test_each_error_fails_and_names_the_file(tmp_path, capsys, defect):
  raw_folders.write_folder(tmp_path, 'dnanet')
  break_it, code, _, where = raw_folders.DEFECTS[defect]
  break_it(tmp_path)
  status, out = run(capsys, tmp_path)
  assert status == 1
  assert f'ERROR {code}: ' in out and where in out
  assert 'the builders will refuse this folder' in out


@pytest.mark.parametrize('defect', [d for d, v in sorted(raw_folders.DEFECTS.items())
                                    if v[2] == 'warning'])
def test_warnings_alone_pass(tmp_path, capsys, defect):
  raw_folders.write_folder(tmp_path, 'dnanet')
  break_it, code, _, where = raw_folders.DEFECTS[defect]
  break_it(tmp_path)
  status, out = run(capsys, tmp_path)
  assert status == 0
  assert f'WARNING {code}: ' in out and where in out


def test_stray_values_are_counted(tmp_path, capsys):
  raw_folders.write_folder(tmp_path, 'dnanet')
  path = tmp_path / 'masks' / 'tr000.png'
  grey = np.asarray(Image.open(path)).copy()
  grey[0, :3] = (64, 64, 128)
  Image.fromarray(grey).save(path)
  _, out = run(capsys, tmp_path)
  assert '3 pixel(s) neither 0 nor 255 (values [64, 128])' in out
  assert 'train: 6 images' in out and '1 non-binary masks' in out


def test_no_layout_prints_instructions_for_the_dataset(tmp_path, capsys):
  status, out = run(capsys, tmp_path, '--dataset', 'nudt_sirst')
  assert status == 1
  assert 'no_layout' in out
  assert 'github.com/YeRen123455/Infrared-Small-Target-Detection' in out
  assert '50_50/train.txt' in out


def test_forced_layout_and_explicit_lists(tmp_path, capsys):
  raw_folders.write_folder(tmp_path, 'mshnet')
  assert run(capsys, tmp_path, '--layout', 'dnanet')[0] == 1
  assert run(capsys, tmp_path, '--layout', 'mshnet')[0] == 0
  status, out = run(capsys, tmp_path, '--train-list', 'trainval.txt', '--test-list',
                    'test.txt')
  assert status == 0 and 'layout custom' in out


def test_official_count_mismatch_is_a_warning(tmp_path, capsys):
  raw_folders.write_folder(tmp_path, 'dnanet')
  status, out = run(capsys, tmp_path, '--dataset', 'nudt_sirst')
  assert status == 0
  assert '6 train examples, the official split has 663' in out


def test_cross_split_duplicates_are_kept_for_an_official_split(tmp_path, capsys):
  raw_folders.write_folder(tmp_path, 'dnanet')
  raw_folders.DEFECTS['duplicate_across_splits'][0](tmp_path)
  assert run(capsys, tmp_path)[0] == 1
  status, out = run(capsys, tmp_path, '--dataset', 'nudt_sirst')
  assert status == 0 and 'WARNING duplicate_across_splits: ' in out


def test_builder_and_validator_word_errors_alike(tmp_path):
  raw_folders.write_folder(tmp_path, 'dnanet')
  raw_folders.resize(tmp_path / 'masks' / 'tr002.png')
  report = validate_dataset.validate(str(tmp_path))
  error = raw_issues.RawDataError.from_issues(report.errors, report.layout.root)
  assert str(report.errors[0]) in report.format()
  assert str(report.errors[0]) in str(error)


def test_module_entry_point(tmp_path):
  raw_folders.write_folder(tmp_path, 'dnanet')
  (tmp_path / 'images' / 'tr000.png').unlink()
  result = subprocess.run([sys.executable, '-m', 'irstd_jax.validate_dataset', str(tmp_path),
                           '--quick'], cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 1, result.stderr
  assert 'ERROR missing_image' in result.stdout


@raw_folders.needs_irstd1k_sample
def test_irstd1k_sample_stray_pixel_reported(tmp_path, capsys):
  root = raw_folders.irstd1k_sample_folder(tmp_path)
  status, out = run(capsys, root, '--dataset', 'irstd1k')
  assert status == 0, out
  assert 'WARNING non_binary_mask: ' in out
  assert 'IRSTD1k_Label/XDU0.png: 1 pixel(s) neither 0 nor 255 (values [64])' in out
  assert 'train: 1 images, 1 targets' in out


def test_empty_train_or_test_split_is_an_error(tmp_path, capsys):
  for split in ('train', 'test'):
    root = tmp_path / split
    raw_folders.write_folder(root, 'mshnet', **{split: []})
    status, out = run(capsys, root)
    assert status == 1, out
    assert f'ERROR empty_split: ' in out and f'the {split} split has no examples' in out
    assert 'the builders will refuse this folder' in out


def test_quick_check_does_not_claim_the_builders_accept(tmp_path, capsys):
  raw_folders.write_folder(tmp_path, 'dnanet')
  raw_folders.corrupt(tmp_path / 'images' / 'tr001.png')
  status, out = run(capsys, tmp_path, '--quick')
  assert status == 0 and 'no file was opened' in out and 'builders accept' not in out
  status, out = run(capsys, tmp_path)
  assert status == 1 and 'ERROR unreadable' in out


def test_mask_below_the_threshold_is_an_error_unless_the_threshold_is_set(tmp_path, capsys):
  raw_folders.write_folder(tmp_path, 'dnanet')
  ex = raw_folders.make_example('tr002')
  raw_folders.save(tmp_path / 'masks' / 'tr002.png', ex.mask * 100, 'L')  # targets drawn as 100
  status, out = run(capsys, tmp_path)
  assert status == 1, out
  assert 'ERROR mask_below_threshold' in out and 'masks/tr002.png' in out and '[100]' in out
  status, out = run(capsys, tmp_path, '--mask-threshold', '50')
  assert status == 0, out
  plan = validate_dataset.validate(str(tmp_path), mask_threshold=50)
  entry = next(e for entries in plan.splits.values() for e in entries if e.id == 'tr002')
  sample, _ = raw_data.load_sample(entry, mask_threshold=50)
  np.testing.assert_array_equal(sample.mask[..., 0], ex.mask)
