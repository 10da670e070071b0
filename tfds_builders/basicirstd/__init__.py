"""TFDS builder folder: see README.md."""
