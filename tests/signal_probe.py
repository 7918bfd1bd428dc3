"""train.py's main with one call made to misbehave, for the signal tests (tests/test_preemption.py):

    PROBE_STUCK=evaluate_sets:2 the 2nd evaluation hangs reading the FIFO PROBE_FIFO (anything stuck:
                             a data source, a GPU, a collective); also train_step:N, build_data:1
    PROBE_SIGNAL=6           the first process sends itself SIGTERM during its 6th training step
    PROBE_EVENTS=<file>      a line 'signal <name>' is appended to the file whenever train.py's
                             handler receives a signal (before it acts on it)
"""
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train  # noqa: E402


def misbehave_at(name, call, action):
    real, calls = getattr(train, name), []

    def probe(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            action()
        return real(*args, **kwargs)

    setattr(train, name, probe)


def hang():
    print('PROBE stuck', flush=True)
    with open(os.environ['PROBE_FIFO'], 'rb') as fifo:  # blocks until a writer comes, then reads forever
        fifo.read()


if 'PROBE_STUCK' in os.environ:
    name, call = os.environ['PROBE_STUCK'].split(':')
    misbehave_at(name, int(call), hang)
if 'PROBE_SIGNAL' in os.environ and os.environ.get('RANK', '0') == '0':
    misbehave_at('train_step', int(os.environ['PROBE_SIGNAL']), lambda: os.kill(os.getpid(), signal.SIGTERM))
if 'PROBE_EVENTS' in os.environ:
    from core.stopping import StopSignal
    handle = StopSignal._handle

    def announced(self, signum, frame):
        with open(os.environ['PROBE_EVENTS'], 'a') as events:
            events.write(f'signal {signal.Signals(signum).name}\n')
        return handle(self, signum, frame)

    StopSignal._handle = announced
sys.exit(train.main(sys.argv[1:]))
