"""Pieces of the training loop that every method shares: seeding, the data order, the
optimizer groups, the learning-rate schedule and the weight EMA (SPEC section 5)."""
import math
import random
from copy import deepcopy

import numpy as np
import torch

from utils.errors import UserError


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


class PassBatches(torch.utils.data.Sampler):
    """Endless batches of (index, augmentation seed) over a dataset of `n` items.

    Each pass over the data is a fresh permutation whose last partial batch is dropped (the
    original's RandomSampler with drop_last=True, restarted every pass). A pass's order and
    per-sample augmentation seeds are a pure function of (seed, stream, pass), so the data a
    step sees depends on nothing but the step: `start` (batches already consumed) resumes
    exactly, whatever the number of loader workers.
    """

    def __init__(self, n: int, batch_size: int, seed: int, stream: int, start: int = 0, what: str = 'dataset',
                 rank: int = 0, world_size: int = 1):
        if n // world_size < batch_size:
            raise UserError(f'the {what} has {n} images, fewer than one batch of {batch_size} per process; '
                            f'lower --batch-size (or --mu) or enlarge the split')
        self.n, self.batch_size, self.seed, self.stream, self.start = n, batch_size, seed, stream, start
        self.rank, self.world_size = rank, world_size
        self.per_pass = n // world_size // batch_size

    def __iter__(self):
        epoch, batch = divmod(self.start, self.per_pass)
        while True:
            rng = np.random.default_rng([self.seed, self.stream, epoch])
            # under several processes each takes every world_size-th item of the pass (as
            # DistributedSampler), so the processes see disjoint samples with distinct seeds
            share = slice(self.rank, self.n - self.n % self.world_size, self.world_size)
            order = rng.permutation(self.n)[share]
            seeds = rng.integers(0, 2 ** 31 - 1, size=self.n)[share]
            for b in range(batch, self.per_pass):
                window = slice(b * self.batch_size, (b + 1) * self.batch_size)
                yield list(zip(order[window].tolist(), seeds[window].tolist()))
            epoch, batch = epoch + 1, 0

    def __len__(self):  # endless; DataLoader only needs this for its progress hints
        return 2 ** 62


def param_groups(model: torch.nn.Module, weight_decay: float, on_all: bool = False):
    """Weight decay on every parameter except those whose name contains 'bias' or 'bn' (on all of
    them with `on_all`, as DASO's optimizer)."""
    no_decay = () if on_all else ('bias', 'bn')
    decay = [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)]
    rest = [p for n, p in model.named_parameters() if any(k in n for k in no_decay)]
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': rest, 'weight_decay': 0.0}]


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
