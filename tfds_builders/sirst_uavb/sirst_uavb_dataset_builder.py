"""SIRST-UAVB (PConv + SD loss, AAAI 2025): about 3,000 real infrared images of UAVs and birds.

    python -m irstd_jax.tfds_sources sirst_uavb --manual_dir=PATH/TO/SIRST-UAVB
"""
import tensorflow_datasets as tfds

from irstd_jax import raw_data
from irstd_jax import tfds_sources


class Builder(tfds.core.GeneratorBasedBuilder):
  """SIRST-UAVB from the manual directory: grey images, binary masks, target counts."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: train.txt / val.txt (val.txt is the test split), '
                            'validation carved from train by a hash of the id.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = raw_data.manual_instructions('sirst_uavb')
  BUILDER_CONFIGS = tfds_sources.builder_configs()

  def __init__(self, *, file_format=None, **kwargs):
    # array_record: random access for tfds.data_source and grain, and no TensorFlow.
    super().__init__(file_format=file_format or 'array_record', **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds_sources.dataset_info(
        self, homepage='https://github.com/JN-Yang/PConv-SDloss-Data')

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    return tfds_sources.split_generators(self, dl_manager)

  def _generate_examples(self, entries):
    return tfds_sources.generate_examples(entries)
