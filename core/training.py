"""Pieces of the training loop that every method shares: seeding, the RNG states, the
optimizer groups, the learning-rate schedule and the weight EMA (SPEC section 5)."""
import math
import random
from copy import deepcopy

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states() -> dict:
    states = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def cosine_schedule(total_steps: int):
    """lr multiplier at step t: max(0, cos(7 pi t / (16 T))) (FixMatch's schedule, warmup 0)."""
    return lambda step: max(0.0, math.cos(math.pi * 7 / 16 * step / max(1, total_steps)))


def constant_schedule(step: int) -> float:
    """lr multiplier 1 at every step (DASO's recipe)."""
    return 1.0


class ModelEMA:
    """Exponential moving average of the weights (decay 0.999); buffers (BatchNorm statistics)
    are copied, not averaged, as FixMatch-pytorch's ModelEMA."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = False):
        self.model = deepcopy(model).eval()
        self.decay, self.warmup = decay, warmup
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """ema = decay * ema + (1 - decay) * weight, then buffers copied: three foreach operations.
        With warm-up (DASO's), the decay after step t (1-based) is min(1 - 1/t, decay)."""
        decay = min(1 - 1 / step, self.decay) if self.warmup else self.decay
        ema_params = list(self.model.parameters())
        torch._foreach_mul_(ema_params, decay)
        torch._foreach_add_(ema_params, list(model.parameters()), alpha=1 - decay)
        torch._foreach_copy_(list(self.model.buffers()), list(model.buffers()))
