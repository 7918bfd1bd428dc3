"""Checkpoints: written to a temporary file, flushed to disk and renamed over the old one, so a
crash mid-write never replaces a good checkpoint with a broken one; read back with a fall-back
to the previous one."""
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import torch

from utils.errors import UserError

CHECKPOINT, PREVIOUS, BEST = 'checkpoint.pt', 'checkpoint.prev.pt', 'best.pt'


def write_error(e: BaseException):
    """The OSError behind a failed write: torch.save reports a full disk as a RuntimeError
    ('unexpected pos') raised while handling the OSError; None for any other error."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or e.__context__
    return e


def interruption(e: BaseException):
    """The signal's stop (StopNow, KeyboardInterrupt: no Exception) behind an error, or None: a signal
    that comes while torch.save writes makes its zip writer fail as well ('unexpected pos'), and that
    RuntimeError would hide the stop."""
    while e is not None and isinstance(e, Exception):
        e = e.__cause__ or e.__context__
    return e


@contextmanager
def signals_held():
    """SIGTERM and SIGINT that come during the block are handled after it (by the main thread's
    handlers, which are Python's: a mask would not hold them in a process with other threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came = []
    previous = {sig: signal.signal(sig, lambda signum, frame: came.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in came:
            signal.raise_signal(signum)


def save_checkpoint(state: dict, path: Path, keep_previous: bool = False) -> None:
    """Write to a temporary file, flush it to disk, then rename it over `path`; with
    `keep_previous` the checkpoint it replaces becomes checkpoint.prev.pt. A failed or
    interrupted write (disk full, a signal, ...) leaves every existing checkpoint as it was and
    no temporary file."""
    tmp = path.with_name(path.name + '.tmp')
    try:
        with open(tmp, 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        with signals_held():  # both renames or neither
            if keep_previous and path.exists():
                os.replace(path, path.with_name(PREVIOUS))
            os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        stop = interruption(e)
        if stop is not None and stop is not e:  # (torch.save's writer fails again while a signal stops it)
            raise stop.with_traceback(None) from None
        cause = write_error(e)
        if cause is None:
            raise
        raise UserError(f'cannot write checkpoint {path} ({cause.strerror or cause}); the previous checkpoints '
                        f'are intact; free space or choose another --out, then resume') from None


KEYS = ('model', 'ema', 'optimizer', 'scheduler', 'method', 'rng', 'history', 'step', 'meter', 'args')  # of a run's


def load_checkpoint(path: Path) -> dict:
    """The checkpoint of a train.py run in `path`; a UserError saying why when the file is none."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # truncated, not a checkpoint, unreadable
        raise UserError(f'cannot read checkpoint {path} ({type(e).__name__})')
    if not isinstance(state, dict):
        raise UserError(f'cannot read checkpoint {path} (it holds a {type(state).__name__}, not a train.py checkpoint)')
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise UserError(f'cannot read checkpoint {path} (it lacks {", ".join(missing)}: not a checkpoint of this '
                        f'train.py)')
    return state


def latest_good_checkpoint(out: Path, warn=print):
    """--resume auto: the latest checkpoint in `out` that loads, falling back to the previous
    one when the latest is missing or corrupt; None when there is neither (a fresh start)."""
    candidates = [p for p in (out / CHECKPOINT, out / PREVIOUS) if p.is_file()]
    for i, path in enumerate(candidates):
        try:
            return load_checkpoint(path)
        except UserError as e:
            if i + 1 == len(candidates):
                raise UserError(f'{e}; no earlier checkpoint in {out} loads either; delete them to start afresh, '
                                f'or choose another --out')
            warn(f'warning: {e}; falling back to {candidates[i + 1]}')
    return None
