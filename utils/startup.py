"""Imported first by every command (train.py, tools.*, dataset.prepare_imagenet127), before anything
can go wrong:

- a Ctrl-C that comes before the command handles signals itself (while Python still imports torch,
  say) ends it with one line instead of a traceback, and exit status 130 as an interrupted shell
  command; a UserError that no command caught is its one line, exit status 2;
- a closed stdout or stderr (`>&-`) is /dev/null, so that no file the command opens takes its
  place (and no child process writes into that file);
- writing to stdout when it fails (a full disk, a closed pipe) is one UserError, OutputError, the
  first time, then stdout is /dev/null: the command says it in one line on stderr instead of a
  traceback, and a training run goes on (its lines are in log.txt; core/run_log.py). Writing to
  stderr when it fails is dropped: there is nowhere left to say it.
"""
import os
import sys

from utils.errors import OutputError, UserError


class _Stream:
    """sys.stdout or sys.stderr, whose failure to write is handled as above."""

    def __init__(self, stream, name: str, fd: int, raises: bool):
        self._stream, self._name, self._fd, self._raises = stream, name, fd, raises

    def _failed(self, error: OSError):
        self._stream = open(os.devnull, 'w')  # (what is still buffered for the stream is dropped with it)
        try:
            os.dup2(self._stream.fileno(), self._fd)
        except OSError:
            pass
        if self._raises:
            raise OutputError(f'cannot write to {self._name} ({error.strerror or error}); send it to a file with '
                              f'room, or to /dev/null') from None

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as e:
            self._failed(e)
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except OSError as e:
            self._failed(e)

    def __getattr__(self, name):  # (isatty, fileno, encoding, ...)
        return getattr(self._stream, name)


def _open_closed_streams() -> None:
    for fd, name in ((1, 'stdout'), (2, 'stderr')):
        if getattr(sys, name) is None:  # (Python found the descriptor closed)
            opened = os.open(os.devnull, os.O_WRONLY)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
            setattr(sys, name, open(fd, 'w', closefd=False))
    sys.stdout = _Stream(sys.stdout, 'stdout', 1, raises=True)
    sys.stderr = _Stream(sys.stderr, 'stderr', 2, raises=False)


_previous = sys.excepthook


def _one_line(kind, value, traceback):
    if issubclass(kind, KeyboardInterrupt):
        print('stopped by Ctrl-C', file=sys.stderr)
        sys.exit(130)
    if issubclass(kind, UserError):
        print(f'error: {value}', file=sys.stderr)
        sys.exit(2)
    _previous(kind, value, traceback)


_open_closed_streams()
sys.excepthook = _one_line
