"""A TensorFlow-free `DatasetBuilderTestCase` for the builders in this folder.

`tfds.testing.DatasetBuilderTestCase` derives from `tf.test.TestCase` and reads the built
splits with `as_dataset` (tf.data), so it cannot even be imported without TensorFlow, which
this project never installs. This class keeps its interface (DATASET_CLASS, SPLITS,
BUILDER_CONFIG_NAMES_TO_TEST, dummy_data/ beside the builder used as the manual directory)
and its checks (registered, info, build, per-split counts, no overlap between splits, reload),
reading back through `as_data_source` as the training code does, and adds the IRSTD feature
contract: grey uint8 [H, W, 1] image, {0, 1} mask of the same size, target count and area
consistent with the mask.
"""
from __future__ import annotations

import os
import tempfile
import unittest

import numpy as np
import tensorflow_datasets as tfds

from irstd_jax import raw_data


class DatasetBuilderTestCase(unittest.TestCase):
  """Subclass and set DATASET_CLASS and SPLITS ({split: expected number of examples})."""

  DATASET_CLASS = None
  SPLITS: dict[str, int] = {}
  BUILDER_CONFIG_NAMES_TO_TEST: list[str] | None = None  # None: every BUILDER_CONFIG
  # Per-config overrides of SPLITS, e.g. {'val0': {'train': 5, 'test': 2}}.
  CONFIG_SPLITS: dict[str, dict[str, int]] = {}

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    if cls.DATASET_CLASS is None:
      raise unittest.SkipTest('abstract base class')

  def setUp(self):
    super().setUp()
    self._tmp = tempfile.TemporaryDirectory()
    self.tmp_dir = self._tmp.name
    self.addCleanup(self._tmp.cleanup)

  @property
  def dummy_data(self):
    path = self.DATASET_CLASS.code_path.parent / 'dummy_data'
    if not path.exists():
      raise ValueError(f'Dummy data not found in: {path}')
    return path

  def _make_builder(self, config=None):
    return self.DATASET_CLASS(data_dir=self.tmp_dir, config=config)  # pylint: disable=not-callable

  def test_registered(self):
    self.assertIn(self.DATASET_CLASS.name, tfds.list_builders(with_community_datasets=False))

  def test_info(self):
    builder = self._make_builder()
    info = builder.info
    self.assertEqual(info.name, self.DATASET_CLASS.name)
    self.assertTrue(info.description, 'README.md beside the builder gives the description')
    self.assertIn('@', info.citation, 'CITATIONS.bib beside the builder gives the citation')
    self.assertEqual(set(info.features), {'image', 'mask', 'id', 'num_targets',
                                          'target_area'})
    self.assertTrue(self.DATASET_CLASS.MANUAL_DOWNLOAD_INSTRUCTIONS)
    self.assertEqual(info.file_format.value, 'array_record')

  def test_download_and_prepare_as_data_source(self):
    configs = self.BUILDER_CONFIG_NAMES_TO_TEST or [c.name for c in
                                                     self.DATASET_CLASS.BUILDER_CONFIGS]
    for config in configs:
      with self.subTest(config=config):
        self._check_config(config)

  def _check_config(self, config):
    expected = self.CONFIG_SPLITS.get(config, self.SPLITS)
    builder = self._make_builder(config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(self.dummy_data)))
    self.assertEqual({s: builder.info.splits[s].num_examples for s in builder.info.splits},
                     expected)
    ids = {}
    for split, n in expected.items():
      source = builder.as_data_source(split)
      self.assertLen(source, n)
      ids[split] = set()
      for i in range(len(source)):
        record = source[i]
        image, mask = record['image'], record['mask']
        self.assertEqual((image.dtype, mask.dtype), (np.uint8, np.uint8))
        self.assertEqual(image.ndim, 3)
        self.assertEqual(image.shape[-1], 1)
        self.assertEqual(mask.shape, image.shape)
        self.assertTrue(set(np.unique(mask)) <= {0, 1})
        self.assertEqual((int(record['num_targets']), int(record['target_area'])),
                         raw_data.count_targets(mask))
        ids[split].add(record['id'])
      self.assertLen(ids[split], n, f'duplicate ids in {split}')
    splits = sorted(ids)
    for a in splits:
      for b in splits:
        if a < b:
          self.assertFalse(ids[a] & ids[b], f'splits {a} and {b} overlap')
    reloaded = self._make_builder(config)
    self.assertTrue(reloaded.is_prepared())
    self.assertEqual({s: reloaded.info.splits[s].num_examples for s in reloaded.info.splits},
                     expected)

  def assertLen(self, container, expected, msg=None):  # pylint: disable=invalid-name
    self.assertEqual(len(container), expected, msg)
