"""Imported first by every command (train.py, tools.*, dataset.prepare_imagenet127): a Ctrl-C that
comes before the command handles signals itself (while Python still imports torch, say) ends it
with one line instead of a traceback, and exit status 130 as an interrupted shell command."""
import sys

_previous = sys.excepthook


def _one_line(kind, value, traceback):
    if issubclass(kind, KeyboardInterrupt):
        print('stopped by Ctrl-C', file=sys.stderr)
        sys.exit(130)
    _previous(kind, value, traceback)


sys.excepthook = _one_line
