"""SIRST3 builder on dummy_data/: NUAA-SIRST/ (BasicIRSTD lists), NUDT-SIRST/ (50_50, CRLF)
and IRSTD-1k/ (trainval.txt, test.txt) side by side."""
from tfds_builders import builder_testing
from tfds_builders.sirst3 import sirst3_dataset_builder


class Sirst3Test(builder_testing.DatasetBuilderTestCase):
  DATASET_CLASS = sirst3_dataset_builder.Builder
  # train lists: NUAA 2 + NUDT 2 + IRSTD-1k 3 = 7 (1 carved as validation);
  # test lists: 2 + 1 + 2 = 5.
  SPLITS = {'train': 6, 'validation': 1, 'test': 5}
  CONFIG_SPLITS = {'val0': {'train': 7, 'test': 5}}


if __name__ == '__main__':
  import unittest
  unittest.main()
