"""NUAA-SIRST builder on dummy_data/ (mixed image modes and sizes, _pixels0 masks, .xml files
beside them, both the BasicIRSTD and the ACM lists)."""
from tfds_builders import builder_testing
from tfds_builders.nuaa_sirst import nuaa_sirst_dataset_builder


class NuaaSirstTest(builder_testing.DatasetBuilderTestCase):
  DATASET_CLASS = nuaa_sirst_dataset_builder.Builder
  # img_idx/train_NUAA-SIRST.txt holds 4 ids (1 carved as validation), test 4;
  # idx_427: train.txt 4, the official val.txt 2, test.txt 2.
  SPLITS = {'train': 3, 'validation': 1, 'test': 4}
  CONFIG_SPLITS = {'basicirstd_val0': {'train': 4, 'test': 4},
                   'acm': {'train': 4, 'validation': 2, 'test': 2}}


if __name__ == '__main__':
  import unittest
  unittest.main()
