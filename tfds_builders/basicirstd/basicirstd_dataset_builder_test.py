"""BasicIRSTD-layout builder on dummy_data/ (a datasets/ folder holding MyData/ with
images/, masks/, img_idx/train_MyData.txt, img_idx/test_MyData.txt)."""
from tfds_builders import builder_testing
from tfds_builders.basicirstd import basicirstd_dataset_builder


class BasicIrstdTest(builder_testing.DatasetBuilderTestCase):
  DATASET_CLASS = basicirstd_dataset_builder.Builder
  # train_MyData.txt holds 5 ids (1 carved as validation); test_MyData.txt 2.
  SPLITS = {'train': 4, 'validation': 1, 'test': 2}
  CONFIG_SPLITS = {'val0': {'train': 5, 'test': 2}}


if __name__ == '__main__':
  import unittest
  unittest.main()
