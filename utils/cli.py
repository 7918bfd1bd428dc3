"""The command lines' shared parser: a bad argument is one line."""
import argparse
import os
import sys
import tempfile
from pathlib import Path


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """'(default: X)' after a help text, unless X is None or False or the text already says it."""

    def _get_help_string(self, action):
        if action.default in (None, False) or 'default' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


def phase(prog: str, text: str) -> None:
    """Say on stderr what a long command starts doing now ('<prog>: <text> ...'), so that slow can be
    told from stuck; stdout keeps the command's results."""
    print(f'{prog}: {text} ...', file=sys.stderr, flush=True)


def unwritable(flag: str, path, folder: bool = True):
    """Why `flag`'s `path` (a folder to create or fill, or with folder=False a file to write; `flag`
    '' for a positional argument) cannot be written, in one line naming what to do; None when it
    can. Checked before any work."""
    given, path = f'{flag} {path}' if flag else str(path), Path(path).absolute()
    if path.exists() and path.is_dir() != folder:
        return f'{given} is a {"file" if folder else "folder"}; choose a {"folder" if folder else "file"}'
    existing = next(p for p in (path, *path.parents) if p.exists())  # (itself, or the folder it goes in)
    writable = os.access(existing, os.W_OK | os.X_OK) if existing.is_dir() else \
        existing == path and os.access(path, os.W_OK)
    if not writable:
        return (f'cannot write to {given} ({existing} is not writable); choose a writable '
                f'{"directory" if folder else "place"}')
    return None


def writable_config_dir(variable: str, name: str) -> None:
    """Where a library keeps its configuration and cache (`variable`, e.g. MPLCONFIGDIR) when it is
    not set and the default, $XDG_CONFIG_HOME/<name> or ~/.config/<name>, cannot be written (a
    read-only or missing HOME): a folder of this user's in the temporary directory, so the library
    neither warns nor rebuilds its cache in a new place every time. (Its cache, $XDG_CACHE_HOME/<name>
    or ~/.cache/<name>, is checked too.)"""
    if os.environ.get(variable):
        return
    home = Path(os.environ.get('HOME') or '/nonexistent')
    defaults = (Path(os.environ.get('XDG_CONFIG_HOME') or home / '.config', name),
                Path(os.environ.get('XDG_CACHE_HOME') or home / '.cache', name))
    if all(unwritable(variable, default) is None for default in defaults):
        return
    folder = Path(tempfile.gettempdir(), f'{name}-{os.getuid() if hasattr(os, "getuid") else "user"}')
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return  # (the library says what it does)
    os.environ[variable] = str(folder)
