"""The command lines' shared parser: a bad argument is one line."""
import argparse
import sys


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
