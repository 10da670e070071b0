"""SIRST-UAVB builder on dummy_data/ (synthetic jpg images and jpg masks, train.txt / val.txt)."""
from tfds_builders import builder_testing
from tfds_builders.sirst_uavb import sirst_uavb_dataset_builder


class SirstUavbTest(builder_testing.DatasetBuilderTestCase):
  DATASET_CLASS = sirst_uavb_dataset_builder.Builder
  # train.txt holds 5 ids: 1 goes to validation at 10% (at least one); val.txt, the test
  # split, holds 2.
  SPLITS = {'train': 4, 'validation': 1, 'test': 2}
  CONFIG_SPLITS = {'val0': {'train': 5, 'test': 2}}


if __name__ == '__main__':
  import unittest
  unittest.main()
