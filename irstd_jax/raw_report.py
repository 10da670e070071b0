"""The whole-folder check: every listed example decoded and checked, with per-split totals.

`scan(layout)` is what the validator reports and what dataset_splits builds from: the paired
entries (irstd_jax.raw_entries), every problem (irstd_jax.raw_issues), per-split totals, the
official split sizes checked against the registry, duplicate images within and across
splits, and each image's leakage fingerprint (irstd_jax.leakage).
"""
from __future__ import annotations

import collections
import dataclasses

from irstd_jax import dataset_registry
from irstd_jax import leakage
from irstd_jax.raw_data import load_sample
from irstd_jax.raw_entries import Entry, collect
from irstd_jax.raw_issues import HasIssues, Issue, error, format_issues, warning
from irstd_jax.raw_layout import LISTED_SPLITS, Layout


@dataclasses.dataclass
class SplitStats:
  images: int = 0
  targets: int = 0
  area: int = 0
  empty_masks: int = 0
  non_binary_masks: int = 0
  sizes: collections.Counter = dataclasses.field(default_factory=collections.Counter)


@dataclasses.dataclass
class Report(HasIssues):
  """The result of `scan`: the layout, the paired entries, every issue, per-split totals."""
  layout: Layout
  entries: dict[str, list[Entry]]
  issues: list[Issue]
  stats: dict[str, SplitStats]
  # Of every decoded entry: what the leakage checks compare (irstd_jax.leakage).
  fingerprints: dict[Entry, leakage.Fingerprint] = dataclasses.field(default_factory=dict)
  decoded: bool = True  # False: names and pairing only (no file was opened)

  def format_totals(self) -> list[str]:
    """The layout and one line of totals per split."""
    lines = [self.layout.describe(), '']
    for split, s in self.stats.items():
      sizes = ', '.join(f'{w}x{h}: {n}' for (h, w), n in s.sizes.most_common(4))
      more = ', ...' if len(s.sizes) > 4 else ''
      lines.append(f'{split}: {s.images} images, {s.targets} targets, {s.area} target pixels, '
                   f'{s.empty_masks} empty masks, {s.non_binary_masks} non-binary masks'
                   + (f'; sizes (WxH) {sizes}{more}' if sizes else ''))
    return lines

  def format(self, max_per_code: int = 20) -> str:
    """The human-readable report the validator prints."""
    return '\n'.join(self.format_totals()
                     + format_issues(self.issues, max_per_code, decoded=self.decoded))


def scan(layout: Layout, *, decode: bool = True, dataset: str | None = None,
         split: str | None = None, mask_threshold: int | None = None) -> Report:
  """Pairs, decodes and checks every listed example of a layout.

  Args:
    layout: from find_layout.
    decode: False checks only names and pairing (no file is opened).
    dataset: a key of dataset_registry.DATASETS. Its official split sizes are checked (a
      difference is a warning), and for an official benchmark split an image duplicated
      across the splits is a warning rather than an error (the published lists are kept as
      they are).
    split: which of the dataset's named splits the layout holds ('' or None: the default);
      chooses the official sizes. An official validation list counts towards train.
    mask_threshold: see load_sample.

  Returns:
    The Report. Beyond collect's and load_sample's issues, an image whose pixels equal one
    in the other split is an error (duplicate_across_splits; a warning for an official
    split) and within one split a warning (duplicate_within_split).
  """
  spec = dataset_registry.DATASETS.get(dataset) if dataset else None
  leak = warning if spec and spec.official else error
  counts = spec.split(split).counts if spec else None
  entries, issues = collect(layout)
  stats = {name: SplitStats() for name in layout.splits}
  fingerprints = {}
  seen = {}  # image hash -> (split, entry)
  for split in layout.splits:  # pylint: disable=redefined-argument-from-local
    st = stats[split]
    if not decode:
      st.images = len(entries[split])
      continue
    for entry in entries[split]:
      sample, sample_issues = load_sample(entry, mask_threshold=mask_threshold)
      issues += sample_issues
      if sample is None:
        continue
      st.images += 1
      st.targets += sample.num_targets
      st.area += sample.target_area
      st.empty_masks += sample.num_targets == 0
      st.non_binary_masks += sample.stray_pixels > 0
      st.sizes[sample.image.shape[:2]] += 1
      fingerprints[entry] = leakage.Fingerprint(sample.image_hash,
                                                leakage.thumbnail(sample.image))
      if sample.image_hash in seen:
        other_split, other = seen[sample.image_hash]
        if other.image == entry.image:
          continue  # one file listed in both splits: already an id_in_two_splits error
        if other_split == split:
          issues.append(warning('duplicate_within_split', entry.image,
                                 f'same pixels as {other.image.name} ({split})'))
        else:
          issues.append(leak('duplicate_across_splits', entry.image,
                             f'same pixels as {other.image} in the {other_split} split '
                             '(test images leak into training)'))
      else:
        seen[sample.image_hash] = (split, entry)
  if counts:
    got = {'train': len(entries['train']) + len(entries.get('validation', [])),
           'test': len(entries['test'])}
    for name, expected in zip(LISTED_SPLITS, counts):
      if got[name] != expected:
        what = 'train + validation' if name == 'train' and layout.validation else name
        issues.append(warning('count_mismatch', getattr(layout, name).list_file or layout.root,
                               f'{got[name]} {what} examples, the official split has '
                               f'{expected}'))
  return Report(layout, entries, issues, stats, fingerprints, decoded=decode)
