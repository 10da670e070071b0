"""The one exception type for mistakes a user can fix, and the one line it becomes.

A `UserError` is bad input (a config field, a flag, a file, a folder): `main.py` prints it as

    error: <what> (<file or field>): <how to fix>

and exits with status 2, without a traceback. Anything else that escapes is a bug in
irstd_jax and keeps its traceback. Modules raise a UserError (or a subclass, e.g.
raw_issues.RawDataError, checkpointing.CheckpointMismatchError) only before they have
created anything, or after removing what they created, so an error leaves nothing behind.
"""
from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
  """Bad input that the user can fix; `str()` is `<what> (<where>): <fix>`.

  Args:
    what: what is wrong, e.g. "batch size 0 is not positive".
    where: the file, folder, flag or config field at fault, e.g. "train.batch_size".
    fix: how to fix it, e.g. "set --config.train.batch_size to 1 or more".
    details: further lines (a list of bad files, a folder tree to create), printed below
      the one-line message.
  """

  def __init__(self, what: str, where: str = '', fix: str = '', details: str = ''):
    super().__init__(what)
    if '\n' in what and not details:  # a multi-line message: its first line is the summary
      what, details = what.split('\n', 1)
    self.what, self.where, self.fix, self.details = what, where, fix, details

  def line(self) -> str:
    """The one-line message, without the details."""
    text = self.what + (f' ({self.where})' if self.where else '')
    return text + (f': {self.fix}' if self.fix else '')

  def __str__(self) -> str:
    return self.line() + (f'\n{self.details}' if self.details else '')


def format_error(error: UserError) -> str:
  """What main.py prints to stderr: `error: ...` plus indented details."""
  text = f'error: {error.line()}'
  if error.details:
    text += '\n' + '\n'.join('  ' + line if line and not line.startswith(' ') else line
                             for line in error.details.splitlines())
  return text
