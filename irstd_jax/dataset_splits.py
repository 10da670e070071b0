"""Which raw examples go into each built split of a dataset.

`plan(manual_dir, dataset, options)` is the one place that turns a manual directory into the
'train' / 'validation' / 'test' entry lists the TFDS builders write and the validator reports:

  1. the folder(s): one layout (raw_layout.find_layout), or one per part for a union (SIRST3);
  2. the split lists: the dataset's named split (registry `NamedSplit`, e.g. NUAA-SIRST's
     'basicirstd' or 'acm'), or those detected in the folder;
  3. every file decoded and checked (raw_report.scan), per part;
  4. leakage between splits (irstd_jax.leakage): training images equal or near-equal to a
     held-out (test, or official validation) image, over the whole union;
  5. on request, dropped: pairs whose mask has another size (`drop_size_mismatch`), and
     duplicates (`deduplicate`: 'exact' drops repeated frames within a split and training
     images equal to a held-out one; 'near' also near-duplicate training images);
  6. validation: the official validation list when the split has one, else carved from the
     (remaining) train list by `carve_validation`.

Plain numpy / Pillow (through irstd_jax.raw_*); no TFDS.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import pathlib
from typing import Sequence

from irstd_jax import dataset_registry
from irstd_jax import leakage
from irstd_jax import raw_layout
from irstd_jax import raw_report
from irstd_jax.raw_entries import Entry
from irstd_jax.raw_issues import HasIssues, Issue, RawDataError, format_issues

DEDUPLICATE = ('none', 'exact', 'near')


@dataclasses.dataclass(frozen=True)
class Options:
  """How to split a dataset. Every field is also a TFDS builder config field.

  Attributes:
    split_lists: a named split of the dataset ('' = its default), e.g. 'acm' for NUAA-SIRST.
    val_fraction: share of the train list carved as validation (unused when the named split
      has an official validation list).
    drop_size_mismatch: drop image/mask pairs of different sizes (warned) instead of refusing.
    deduplicate: 'none', 'exact' or 'near' (module docstring, step 5).
    subset: the <Name> of a BasicIRSTD folder (dataset 'basicirstd').
    layout, images, masks, train_list, test_list: raw_layout.find_layout overrides.
    mask_threshold: mask pixels > this are target (None: raw_data.load_sample's rule).
  """
  split_lists: str = ''
  val_fraction: float = dataset_registry.DEFAULT_VAL_FRACTION
  drop_size_mismatch: bool = False
  deduplicate: str = 'none'
  subset: str = ''
  layout: str | None = None
  images: str | None = None
  masks: str | None = None
  train_list: str | None = None
  test_list: str | None = None
  mask_threshold: int | None = None

  def check(self, dataset: str) -> None:
    """ValueError naming the field when an option does not fit `dataset`."""
    spec = dataset_registry.get(dataset)
    spec.split(self.split_lists)
    if not 0.0 <= self.val_fraction < 1.0:
      raise ValueError(f'val_fraction must be in [0, 1), got {self.val_fraction}')
    if self.deduplicate not in DEDUPLICATE:
      raise ValueError(f'deduplicate must be one of {DEDUPLICATE}, got {self.deduplicate!r}')
    if self.subset and dataset != 'basicirstd':
      raise ValueError(f'subset is for the basicirstd dataset, not {dataset}')


@dataclasses.dataclass
class Plan(HasIssues):
  """The entries of each built split, and everything found on the way."""
  splits: dict[str, list[Entry]]  # dataset_registry.SPLITS
  reports: dict[str, raw_report.Report]  # per part (the dataset's own name when one folder)
  leaks: list[leakage.Leak]
  issues: list[Issue]  # the reports' issues after drops, plus leakage and drops
  notes: list[str]  # which lists were used, what was dropped

  def sizes(self) -> dict[str, int]:
    return {s: len(e) for s, e in self.splits.items()}

  @property
  def layout(self) -> raw_layout.Layout:
    """The layout of the (first) folder."""
    return next(iter(self.reports.values())).layout

  def format(self, max_per_code: int = 20) -> str:
    """The validator's report: each folder's totals, every issue, leakage, what was used."""
    lines = []
    for report in self.reports.values():
      lines += report.format_totals() + ['']
    lines.append(self.format_leakage())
    lines += [''] + [f'  {n}' if i else n for i, n in enumerate(
        ['Splits built:'] + [n for n in self.notes if not n.startswith(tuple(self.reports))])]
    decoded = all(r.decoded for r in self.reports.values())
    return '\n'.join(lines + format_issues(self.issues, max_per_code, decoded=decoded))

  def format_leakage(self, limit: int = 10) -> str:
    """The validator's leakage section."""
    lines = ['Leakage between splits (each training image against the held-out images):']
    for kind, how in (('exact', 'equal pixels'),
                      ('near', f'near-duplicates, relative thumbnail distance <= '
                               f'{leakage.NEAR_THRESHOLD:g}')):
      found = [l for l in self.leaks if l.kind == kind]
      lines.append(f'  {len(found)} training images with {how}')
      for l in found[:limit]:
        lines.append(f'    {l.train.image} ~ {l.held_out.image} ({l.held_out_split}'
                     + (f', distance {l.distance:.3f})' if kind == 'near' else ')'))
      if len(found) > limit:
        lines.append(f'    ... and {len(found) - limit} more')
    return '\n'.join(lines)


def _subset_root(root: pathlib.Path, subset: str) -> tuple[pathlib.Path, str]:
  """BasicIRSTD's datasets/ folder: the <Name> sub-folder holding img_idx/train_<Name>.txt."""
  candidates = [d for d in [root] + sorted(p for p in root.iterdir() if p.is_dir())
                if list(d.glob('img_idx/train_*.txt'))]
  names = sorted({p.stem[len('train_'):] for d in candidates
                  for p in d.glob('img_idx/train_*.txt')})
  if not subset:
    if len(names) != 1:
      raise RawDataError.from_issues([Issue(
          'error', 'no_layout', str(root),
          'set data.subset to one of: '
          + (", ".join(names) or '(no img_idx/train_<Name>.txt found)'))], root)
    subset = names[0]
  for d in candidates:
    if (d / 'img_idx' / f'train_{subset}.txt').is_file():
      return d, subset
  raise RawDataError.from_issues([Issue(
      'error', 'no_layout', str(root / subset / 'img_idx' / f'train_{subset}.txt'),
      f'no such split list; subsets here: {", ".join(names) or "none"}')], root)


def find_layouts(manual_dir, dataset: str,
                 options: Options = Options()) -> dict[str, raw_layout.Layout]:
  """{part name: layout}: one entry named `dataset`, or one per part of a union.

  Raises:
    RawDataError: a folder or a split list is missing (the message names it and,
      for a named split, says which other named splits this folder has lists for).
  """
  spec = dataset_registry.get(dataset)
  root = pathlib.Path(manual_dir).expanduser()
  if spec.parts and root.is_dir() and not _has_own_images(root, dataset):
    return {part: _part_layout(root, part) for part in spec.parts}
  named = spec.split(options.split_lists)
  kwargs = dict(layout=options.layout, images=options.images, masks=options.masks,
                train_list=options.train_list or named.train,
                test_list=options.test_list or named.test, val_list=named.validation)
  if dataset == 'basicirstd':
    root, subset = _subset_root(root, options.subset)
    kwargs.update(train_list=f'img_idx/train_{subset}.txt', test_list=f'img_idx/test_{subset}.txt')
  try:
    return {dataset: raw_layout.find_layout(root, dataset=dataset, **kwargs)}
  except RawDataError as e:
    if len(spec.splits) < 2 or e.issues[0].code != 'no_layout':
      raise
    others = [s.name for s in spec.splits if s is not named and _lists_exist(root, dataset, s)]
    hint = (f'; this folder has the lists of data.split_lists={" / ".join(others)}' if others
            else '')
    raise RawDataError(f'{e} (data.split_lists={named.name}: {named.description}){hint}',
                                e.issues) from e


def _has_own_images(root, dataset):
  """A union's folder that is itself one dataset (BasicIRSTD's merged SIRST3 folder)."""
  try:
    raw_layout.find_layout(root, dataset=dataset)
    return True
  except RawDataError:
    return False


def _find_part(root: pathlib.Path, part: str) -> pathlib.Path | None:
  for d in sorted(p for p in root.iterdir() if p.is_dir()):
    if dataset_registry.names_dataset(d.name, part):
      return d
  return None


def _part_layout(root: pathlib.Path, part: str) -> raw_layout.Layout:
  folder = _find_part(root, part)
  if folder is None:
    spec = dataset_registry.get(part)
    raise RawDataError.from_issues([Issue(
        'error', 'no_layout', str(root / spec.title.split()[0]),
        f'no {spec.title} folder (looked for a sub-folder named like '
        f'{", ".join(spec.aliases)})')], root)
  return find_layouts(folder, part)[part]


def _lists_exist(root, dataset, named):
  try:
    raw_layout.find_layout(root, dataset=dataset, train_list=named.train, test_list=named.test,
                         val_list=named.validation)
    return True
  except RawDataError:
    return False


def plan(manual_dir, dataset: str, options: Options = Options(), *,
         decode: bool = True) -> Plan:
  """Finds, checks and splits the raw folder (module docstring). Never raises for bad files:
  they are `Plan.errors`; see `require`.

  Raises:
    RawDataError: no layout (or a named split's list) was found.
    ValueError: an option does not fit the dataset.
  """
  options.check(dataset)
  layouts = find_layouts(manual_dir, dataset, options)
  spec = dataset_registry.get(dataset)
  reports, issues, notes = {}, [], []
  pools = {split: [] for split in dataset_registry.SPLITS}
  fingerprints = {}
  for part, layout in layouts.items():
    # decode is passed only when False: a test swaps in scan(layout, decode=False, **kw).
    report = raw_report.scan(layout, dataset=part,
                           split=options.split_lists if part == dataset else None,
                           mask_threshold=options.mask_threshold,
                           **({} if decode else {'decode': False}))
    reports[part] = report
    fingerprints.update(report.fingerprints)
    notes.append(f'{part}: ' + layout.describe())
    part_issues = list(report.issues)
    mismatched = set()
    if options.drop_size_mismatch:
      mismatched = {i.path for i in part_issues if i.code == 'size_mismatch'}
      part_issues = [_as_dropped(i) if i.code == 'size_mismatch' else i for i in part_issues]
      notes += [f'dropped (mask of another size): {path}' for path in sorted(mismatched)]
    if options.deduplicate != 'none':
      # The duplicates are dropped below, so they no longer refuse a user's own split.
      part_issues = [i for i in part_issues if i.code != 'duplicate_across_splits']
    issues += part_issues
    for split in layout.splits:
      pools[split] += [e for e in report.entries[split] if str(e.mask) not in mismatched]
  if len(layouts) > 1:
    issues += _id_collisions(pools)
  held_out = [(s, e, fingerprints[e]) for s in ('validation', 'test') for e in pools[s]
              if e in fingerprints]
  leaks = leakage.find_leaks([(e, fingerprints[e]) for e in pools['train']
                              if e in fingerprints], held_out)
  for l in leaks:
    if l.kind == 'near':
      issues.append(Issue(
          'warning', 'near_duplicate_across_splits', str(l.train.image),
          f'nearly the same image as {l.held_out.image} in the {l.held_out_split} split '
          f'(relative thumbnail distance {l.distance:.3f} <= {leakage.NEAR_THRESHOLD:g})'))
  if options.deduplicate != 'none':
    drop = {l.train for l in leaks
            if leakage.KINDS.index(l.kind) <= leakage.KINDS.index(options.deduplicate)}
    for split in pools:
      repeats = {later for later, _ in leakage.repeated(pools[split], fingerprints)}
      leaking = (drop - repeats) if split == 'train' else set()
      kept = [e for e in pools[split] if e not in repeats and e not in leaking]
      if len(kept) != len(pools[split]):
        notes.append(f'deduplicate={options.deduplicate}: {split} {len(pools[split])} -> '
                     f'{len(kept)} ({len(repeats)} repeated frames, {len(leaking)} equal or '
                     'near a held-out image)')
      pools[split] = kept
  named = spec.split(options.split_lists)
  if any(layout.validation for layout in layouts.values()):
    splits = pools
    notes.append(f'validation: the official list ({named.name} split); val_fraction unused')
  else:
    train, validation = carve_validation(pools['train'], options.val_fraction)
    splits = {'train': train, 'validation': validation, 'test': pools['test']}
    notes.append(f'validation: {options.val_fraction:g} of the train list, carved by a hash '
                 'of the id')
  return Plan(splits, reports, leaks, issues, notes)


def carve_validation(entries: Sequence[Entry], fraction: float) -> tuple[list[Entry],
                                                                           list[Entry]]:
  """Splits the official train list into (train, validation), deterministically.

  The ids are ranked by SHA-256 of the id and the first round(fraction * n) go to validation
  (at least one when fraction > 0 and n >= 2; never all). The result depends only on the set
  of ids: not on their order, the machine or the numpy version. The test split is never used.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f'validation fraction must be in [0, 1), got {fraction}')
  n = len(entries)
  n_val = 0
  if fraction > 0 and n >= 2:
    n_val = min(n - 1, max(1, math.floor(fraction * n + 0.5)))
  ranked = sorted(entries, key=lambda e: hashlib.sha256(e.id.encode('utf-8')).hexdigest())
  val_ids = {e.id for e in ranked[:n_val]}
  return ([e for e in entries if e.id not in val_ids], [e for e in entries if e.id in val_ids])


def _as_dropped(issue: Issue) -> Issue:
  """A size_mismatch error, as the warning it becomes when such pairs are dropped."""
  return Issue('warning', 'dropped_size_mismatch', issue.path,
                        issue.detail.split(';')[0] + '; dropped (data.drop_size_mismatch)')


def _id_collisions(pools):
  seen, issues = {}, []
  for split, entries in pools.items():
    for e in entries:
      if e.id in seen and seen[e.id].image != e.image:
        issues.append(Issue('error', 'id_in_two_parts', str(e.image),
                                     f'id {e.id!r} is also {seen[e.id].image}'))
      seen.setdefault(e.id, e)
  return issues


def require(result: Plan, root='') -> Plan:
  """Returns the plan, or raises RawDataError listing its errors by file."""
  if result.errors:
    raise RawDataError.from_issues(result.errors, root)
  return result
