"""Preemption: SIGTERM and SIGINT (Ctrl-C) while train.py runs, from reading the data to the end.

During a training step the first signal asks the loop to stop at the step's end; anywhere else it
stops the process at once; a second signal always does (README, "Preemption and failures").
"""
import signal
import sys
from contextlib import contextmanager

from utils import distributed


class StopNow(BaseException):
    """A signal outside a training step (see StopSignal). Not an Exception, so that no
    `except Exception` on the way swallows it."""


class StopSignal:
    """SIGTERM or SIGINT (a preemption, Ctrl-C) while `train` runs.

    During a training step (its batch, forward, backward, update), the first signal asks the loop
    to stop at the step's end: it does the epoch's end work if the step ends an epoch, saves and
    returns. Several processes agree on it every AGREE_EVERY steps (one small all-reduce that waits
    for the GPUs, so not at every step). Anywhere else (loading the checkpoint, the process's first
    step, which may hang making its first batch and has nothing to save, evaluating, writing a
    checkpoint, anything stuck there) it stops the process at once with exit status 128 + the
    signal's number, leaving every checkpoint as it was. A second signal ends the process at
    once, whatever it is doing (the default action).
    """
    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    AGREE_EVERY = 10

    def __enter__(self):
        self.name, self.deferring = None, False
        self.previous = [signal.signal(sig, self._handle) for sig in self.SIGNALS]
        return self

    def __exit__(self, kind, error, traceback):
        for sig, handler in zip(self.SIGNALS, self.previous):
            signal.signal(sig, handler)
        if isinstance(error, StopNow):
            print(f'stopped by {self.name} outside a training step; the checkpoints are as they were. Continue '
                  f'with the same command and --resume auto', file=sys.stderr, flush=True)
            raise SystemExit(128 + signal.Signals[self.name])

    def _handle(self, signum, frame):
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)  # a second signal ends the process at once
        self.name = signal.Signals(signum).name
        if not self.deferring:
            raise StopNow

    @contextmanager
    def deferred(self, defer: bool):
        """In this block (a training step), if `defer`, a first signal only asks the loop to stop."""
        self.deferring = defer
        try:
            yield
        finally:
            self.deferring = False

    def requested(self, step: int, device) -> bool:
        if distributed.world_size() > 1 and step % self.AGREE_EVERY:
            return False
        return distributed.any_process(self.name is not None, device)
