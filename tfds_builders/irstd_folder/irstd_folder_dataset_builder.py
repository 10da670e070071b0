"""Any IRSTD folder of images, masks and split lists: a user's own dataset needs no code.

The layout is detected as for the named datasets (raw_data.find_layout); a config may force
it or name the folders and lists. From Python, `tfds_sources.load_split('irstd_folder',
split, manual_dir=FOLDER)` gives each folder its own config, so two folders never share a
build:

    python -m irstd_jax.validate_dataset FOLDER
    python -m irstd_jax.tfds_sources irstd_folder --manual_dir=FOLDER
"""
import tensorflow_datasets as tfds

from irstd_jax import raw_data
from irstd_jax import tfds_sources


class Builder(tfds.core.GeneratorBasedBuilder):
  """A user's IRSTD folder from the manual directory: grey images, binary masks, targets."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: layouts of raw_data.find_layout, validation '
                            'carved from train by a hash of the id.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = raw_data.manual_instructions('irstd_folder')
  BUILDER_CONFIGS = tfds_sources.builder_configs()

  def __init__(self, *, file_format=None, **kwargs):
    # array_record: random access for tfds.data_source and grain, and no TensorFlow.
    super().__init__(file_format=file_format or 'array_record', **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds_sources.dataset_info(self, homepage=None)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    return tfds_sources.split_generators(self, dl_manager)

  def _generate_examples(self, entries):
    return tfds_sources.generate_examples(entries)
