"""A run's per-epoch record, WORKDIR/history.json, that survives interruption exactly.

One entry per completed epoch: the training metrics averaged over the epoch's steps (loss,
pixel IoU, gradient norm, fraction of pixels predicted positive) and, for epochs that
validated, the validation results. A checkpoint can fall inside an epoch, so the epoch's
running sums are stored here under that checkpoint's step before the checkpoint is written:
a run resumed from any checkpoint writes exactly the entries an uninterrupted run writes.

    {"epochs": [{"epoch": 1, "step": 149, "steps": 149, "warmup": true,
                 "train": {"loss": ..., "iou": ..., "grad_norm": ..., "positive_fraction": ...},
                 "validation": null | {"iou": ..., "niou": ..., "pd": ..., "fa": ...,
                                       "positive_fraction": ...}}, ...],
     "partial": {"<step>": [the epoch's running sums: the leaves of its TrainMetrics]}}
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics

from irstd_jax import reporting

FILENAME = 'history.json'
VALIDATION_KEYS = ('iou', 'niou', 'pd', 'fa', 'positive_fraction', 'num_images',
                   'num_targets')
_PARTIALS_KEPT = 8  # more than any CheckpointManager here keeps


def read(workdir: str) -> list[dict]:
  """The epoch entries of the run in `workdir` ([] when it has none)."""
  path = os.path.join(workdir, FILENAME)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return json.load(f)['epochs']


class History:
  """Reads, extends and rewrites WORKDIR/history.json (process 0 writes)."""

  def __init__(self, workdir: str, metrics_cls: type[clu_metrics.Collection]):
    self.path = os.path.join(workdir, FILENAME)
    self.metrics_cls = metrics_cls
    self.writes = jax.process_index() == 0
    self.epochs: list[dict] = []
    self.partial: dict[str, list] = {}
    if os.path.exists(self.path):
      with open(self.path) as f:
        payload = json.load(f)
      self.epochs, self.partial = payload['epochs'], payload.get('partial', {})

  def _save(self) -> None:
    if self.writes:
      reporting.write_json(self.path, {'epochs': self.epochs, 'partial': self.partial},
                           indent=1)

  def resume(self, step: int) -> clu_metrics.Collection | None:
    """Forgets entries after `step` (a restored checkpoint's) and returns the running sums
    stored with that checkpoint: the epoch in progress, or an epoch whose end was not yet
    recorded. None when none were stored (step 0, a checkpoint at an epoch end without
    them); the caller drops sums of an epoch whose entry is already recorded."""
    self.epochs = [e for e in self.epochs if e['step'] <= step]
    if str(step) not in self.partial:
      return None
    template = self.metrics_cls.empty()
    leaves, treedef = jax.tree.flatten(template)
    stored = self.partial[str(step)]
    if len(stored) != len(leaves):  # another metrics layout: these sums do not apply
      return None
    return jax.tree.unflatten(treedef, [jnp.asarray(value, leaf.dtype)
                                        for value, leaf in zip(stored, leaves)])

  def checkpoint(self, step: int, epoch_metrics: clu_metrics.Collection | None) -> None:
    """Stores the running sums of the epoch in progress; call before saving `step`."""
    if epoch_metrics is None:
      return
    # Every leaf (Average totals and counts, clu's merge counter) as a Python number:
    # float32 -> float -> JSON is exact, so the resumed sums are bitwise the same.
    self.partial[str(step)] = [np.asarray(leaf).item()
                               for leaf in jax.tree.leaves(epoch_metrics)]
    for old in sorted(self.partial, key=int)[:-_PARTIALS_KEPT]:
      del self.partial[old]
    self._save()

  def end_epoch(self, *, epoch: int, step: int, warmup: bool,
                epoch_metrics: clu_metrics.Collection, validation: dict | None) -> dict:
    """Appends the entry of the epoch that ended at `step`; returns it."""
    computed = {k: float(v) for k, v in epoch_metrics.compute().items() if k != 'nonfinite'}
    entry = {'epoch': epoch, 'step': step, 'steps': int(epoch_metrics.loss.count),
             'warmup': warmup, 'train': computed,
             'validation': (None if validation is None else
                            {k: validation[k] for k in VALIDATION_KEYS if k in validation})}
    self.epochs = [e for e in self.epochs if e['epoch'] != epoch] + [entry]
    # The epoch's stored sums stay: an epoch's end is rarely a checkpoint step, so until the
    # next checkpoint is on disk the latest one is inside this epoch, and a run killed in
    # between resumes from it and needs them (`checkpoint` keeps the newest few).
    self._save()
    return entry
