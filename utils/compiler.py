"""What the code says to torch.compile without importing it: importing the compiler takes seconds,
which a run without --compile (or a mistyped flag) should not wait for."""
import functools

import torch


def eager(fn):
    """`fn`, run as it is (not traced) when a compiled step calls it: torch.compiler.disable, applied
    only while compiling. For host work inside a step (NumPy, host generators) and for loops that
    tracing would unroll into one huge graph."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if torch.compiler.is_compiling():
            return torch.compiler.disable(fn)(*args, **kwargs)
        return fn(*args, **kwargs)
    return run
