"""The one exception type for problems with the user's input or data.

`train.py` catches it and prints `error: <message>` on one line, with no
traceback, then exits with status 2. Messages say what is wrong and what to do.
"""


class UserError(Exception):
    """Bad arguments, missing or corrupt files, impossible splits."""


class OutputError(UserError):
    """stdout cannot be written (a full disk, a closed pipe): utils/startup.py raises it once."""
