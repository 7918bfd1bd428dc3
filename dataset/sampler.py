"""The order in which a run reads its data: endless passes of batches, each a pure function of
(seed, stream, pass), so that the data a step sees depends on nothing but the step."""
import numpy as np
import torch

from utils.errors import UserError


def check_fits_batch(what: str, n: int, batch_size: int, world_size: int = 1) -> None:
    """A pass over `n` items must hold at least one whole batch per process (drop_last)."""
    if n // world_size < batch_size:
        raise UserError(f'the {what} has {n} images, fewer than one batch of {batch_size} per process; '
                        f'lower --batch-size (or --mu) or enlarge the split')


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
        check_fits_batch(what, n, batch_size, world_size)
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
