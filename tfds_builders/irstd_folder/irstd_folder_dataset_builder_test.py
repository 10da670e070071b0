"""Generic folder builder on dummy_data/ (ACM/SIRST names, _pixels0 bmp masks, palette PNGs)."""
from tfds_builders import builder_testing
from tfds_builders.irstd_folder import irstd_folder_dataset_builder


class IrstdFolderTest(builder_testing.DatasetBuilderTestCase):
  DATASET_CLASS = irstd_folder_dataset_builder.Builder
  # idx_427/trainval.txt holds 5 ids: 1 goes to validation at 10% (at least one);
  # idx_427/test.txt holds 2.
  SPLITS = {'train': 4, 'validation': 1, 'test': 2}
  CONFIG_SPLITS = {'val0': {'train': 5, 'test': 2}}


if __name__ == '__main__':
  import unittest
  unittest.main()
