"""Problems found in a raw dataset folder, and the one error that refuses the folder.

Every check of a raw folder (irstd_jax.raw_layout, raw_entries, raw_data, raw_report,
dataset_splits) words what it finds as an `Issue`; the validator prints them grouped
(`format_issues`) and the builders raise them as one `RawDataError`. Plain Python.
"""
from __future__ import annotations

import collections
import dataclasses
import pathlib
from typing import Sequence

from irstd_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Issue:
  """One problem with a raw folder. `path` names the file (or folder, or split list)."""
  severity: str  # 'error' (the builders refuse the data) or 'warning'
  code: str  # e.g. 'missing_mask', 'size_mismatch', 'non_binary_mask'
  path: str
  detail: str

  def __str__(self) -> str:
    return f'{self.severity.upper()} {self.code}: {self.path}: {self.detail}'


def error(code, path, detail):
  return Issue('error', code, str(path), detail)


def warning(code, path, detail):
  return Issue('warning', code, str(path), detail)


class HasIssues:
  """Splits a record's `issues` (a list of Issue) by severity: Report and Plan share it."""
  issues: list[Issue]

  @property
  def errors(self) -> list[Issue]:
    return [i for i in self.issues if i.severity == 'error']

  @property
  def warnings(self) -> list[Issue]:
    return [i for i in self.issues if i.severity == 'warning']


class RawDataError(UserError, ValueError):
  """The raw folder cannot be built. `issues` holds the errors; the message lists them."""

  def __init__(self, message: str, issues: Sequence[Issue] = ()):
    super().__init__(message)
    self.issues = tuple(issues)

  @classmethod
  def from_issues(cls, issues: Sequence[Issue], root: str | pathlib.Path = '',
                  limit: int = 20) -> 'RawDataError':
    errors = [i for i in issues if i.severity == 'error']
    lines = [str(i) for i in errors[:limit]]
    if len(errors) > limit:
      lines.append(f'... and {len(errors) - limit} more errors')
    error = cls(f'{len(errors)} error(s) in the raw dataset', errors)
    error.where = str(root or 'the raw folder')
    error.fix = (f'fix the files below; `python -m irstd_jax.validate_dataset '
                 f'{root or "RAW_DIR"}` prints the full report')
    error.details = '\n'.join(lines)
    return error



def format_issues(issues: Sequence[Issue], max_per_code: int = 20, *,
                  decoded: bool = True) -> list[str]:
  """Issues grouped by code (errors first), then the verdict line (`decoded` False: the
  files were not opened, so no verdict on their content)."""
  lines = []
  by_code = collections.defaultdict(list)
  for issue in issues:
    by_code[(issue.severity != 'error', issue.code)].append(issue)
  for (_, code), group in sorted(by_code.items()):
    lines.append('')
    lines.append(f'{group[0].severity.upper()} {code}: {len(group)}')
    lines += ['  ' + str(i) for i in group[:max_per_code]]
    if len(group) > max_per_code:
      lines.append(f'  ... and {len(group) - max_per_code} more')
  errors = sum(i.severity == 'error' for i in issues)
  if errors:
    verdict = 'the builders will refuse this folder.'
  elif not decoded:
    verdict = ('names and pairing are fine, but no file was opened (--quick): run without '
               '--quick before building.')
  else:
    verdict = 'the builders accept this folder.'
  lines.append('')
  lines.append(f'{errors} error(s), {len(issues) - errors} warning(s): ' + verdict)
  return lines
