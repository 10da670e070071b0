"""IRSTD-1k (ISNet, CVPR 2022): 1,001 real infrared images, 512x512, 800 trainval / 201 test.

    python -m irstd_jax.tfds_sources irstd1k --manual_dir=PATH/TO/IRSTD-1k
"""
import tensorflow_datasets as tfds

from irstd_jax import raw_data
from irstd_jax import tfds_sources


class Builder(tfds.core.GeneratorBasedBuilder):
  """IRSTD-1k from the manual directory: grey images, binary masks, target counts."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: official trainval/test lists, validation carved '
                            'from trainval by a hash of the id.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = raw_data.manual_instructions('irstd1k')
  BUILDER_CONFIGS = tfds_sources.builder_configs()

  def __init__(self, *, file_format=None, **kwargs):
    # array_record: random access for tfds.data_source and grain, and no TensorFlow.
    super().__init__(file_format=file_format or 'array_record', **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds_sources.dataset_info(self, homepage='https://github.com/RuiZhang97/ISNet')

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    return tfds_sources.split_generators(self, dl_manager)

  def _generate_examples(self, entries):
    return tfds_sources.generate_examples(entries)
