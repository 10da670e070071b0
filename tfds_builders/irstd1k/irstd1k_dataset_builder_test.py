"""IRSTD-1k builder on dummy_data/ (synthetic, official layout, one stray 64 mask pixel)."""
from tfds_builders import builder_testing
from tfds_builders.irstd1k import irstd1k_dataset_builder


class Irstd1kTest(builder_testing.DatasetBuilderTestCase):
  DATASET_CLASS = irstd1k_dataset_builder.Builder
  # trainval.txt holds 5 ids: 1 goes to validation at 10% (at least one);
  # test.txt holds 2.
  SPLITS = {'train': 4, 'validation': 1, 'test': 2}
  CONFIG_SPLITS = {'val0': {'train': 5, 'test': 2}}


if __name__ == '__main__':
  import unittest
  unittest.main()
