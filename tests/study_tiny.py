"""A study small enough for a test: two losses sharing one warm-up, tiny synthetic data.

Used by tests/test_study.py as `--config=tests/study_tiny.py`.
"""
import ml_collections

from irstd_jax import study as study_lib


def get_config(cell=None):
  study = ml_collections.ConfigDict()
  study.dataset = 'synthetic'
  study.budget = ml_collections.ConfigDict()
  study.budget.model = ml_collections.ConfigDict(dict(widths=(4, 8, 8, 16, 16),
                                                      channel_reduction=4))
  study.budget.data = ml_collections.ConfigDict(dict(crop_size=32, resize_range=(24, 48)))
  study.budget.data.synthetic = ml_collections.ConfigDict(dict(
      image_size=32, num_train=12, num_val=4, num_test=4))
  study.budget.train = ml_collections.ConfigDict(dict(
      num_epochs=3, warm_epochs=1, eval_every_epochs=1, checkpoint_every_steps=2,
      log_every_steps=1, batch_size=4))
  study.budget.eval = ml_collections.ConfigDict(dict(batch_size=4, pdfa_sweep=False))
  study.configurations = ml_collections.ConfigDict()
  for name, row in (('sls', 'a0_mshnet_sls'), ('l1', 'a1_diff_loss')):
    spec = ml_collections.ConfigDict()
    spec.row, spec.seeds, spec.priority, spec.label = row, 1, 0, name
    spec.overrides = ml_collections.ConfigDict()
    study.configurations[name] = spec
  study.collapse = ml_collections.ConfigDict(dict(max_iou=0.05, min_positive_fraction=0.1))
  study.protocols = ('basicirstd', 'mshnet')
  if cell is None:
    return study
  return study_lib.cell_config(study, *study_lib.parse_cell(cell))
