"""NUDT-SIRST builder on dummy_data/ (synthetic, DNANet layout, CRLF split lists)."""
from tfds_builders import builder_testing
from tfds_builders.nudt_sirst import nudt_sirst_dataset_builder


class NudtSirstTest(builder_testing.DatasetBuilderTestCase):
  DATASET_CLASS = nudt_sirst_dataset_builder.Builder
  # 50_50/train.txt holds 5 ids: 1 goes to validation at 10% (at least one);
  # 50_50/test.txt holds 2.
  SPLITS = {'train': 4, 'validation': 1, 'test': 2}
  CONFIG_SPLITS = {'val0': {'train': 5, 'test': 2}}


if __name__ == '__main__':
  import unittest
  unittest.main()
