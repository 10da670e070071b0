"""NUDT-SIRST (DNANet, TIP 2023): 1,327 synthetic infrared images, 256x256, 663 / 664 (50_50).

    python -m irstd_jax.tfds_sources nudt_sirst --manual_dir=PATH/TO/NUDT-SIRST
"""
import tensorflow_datasets as tfds

from irstd_jax import raw_data
from irstd_jax import tfds_sources


class Builder(tfds.core.GeneratorBasedBuilder):
  """NUDT-SIRST from the manual directory: grey images, binary masks, target counts."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: official 50_50 train/test lists, validation '
                            'carved from train by a hash of the id.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = raw_data.manual_instructions('nudt_sirst')
  BUILDER_CONFIGS = tfds_sources.builder_configs()

  def __init__(self, *, file_format=None, **kwargs):
    # array_record: random access for tfds.data_source and grain, and no TensorFlow.
    super().__init__(file_format=file_format or 'array_record', **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds_sources.dataset_info(
        self, homepage='https://github.com/YeRen123455/Infrared-Small-Target-Detection')

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    return tfds_sources.split_generators(self, dl_manager)

  def _generate_examples(self, entries):
    return tfds_sources.generate_examples(entries)
