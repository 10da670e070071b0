"""Any IRSTD folder of images, masks and split lists: a user's own dataset needs no code.

The layout is detected as for the named datasets (raw_layout.find_layout); a config may force
it or name the folders and lists. From Python, `tfds_sources.load_split('irstd_folder',
split, manual_dir=FOLDER)` gives each folder its own config, so two folders never share a
build:

    python -m irstd_jax.validate_dataset FOLDER
    python -m irstd_jax.tfds_sources irstd_folder --manual_dir=FOLDER
"""
from tfds_builders import base


class Builder(base.IrstdBuilder):
  """A user's IRSTD folder from the manual directory (registry entry irstd_folder)."""
