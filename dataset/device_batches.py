"""Training batches made on the device (`--aug gpu`): the images of the split live there as one
uint8 tensor, a step gathers its rows and draws every view with the batched augmentation of
dataset/tensor_augment.py, which equals the per-sample PIL path (dataset/augment.py).

The order of the samples is the same as the PIL path's (utils.training.PassBatches), and each
batch's random draws come from a generator seeded with that batch's first sample seed, so a
step's views depend only on (--seed, step): resuming stays exact.
"""
import torch

from dataset import tensor_augment
from utils.training import PassBatches


def to_device(images, device) -> torch.Tensor:
    """(N, H, W, 3) uint8 array -> the same on `device`, one copy (ImageNet-127 at 64x64 is 15.7 GB);
    batches are turned channels-first after they are gathered."""
    return torch.from_numpy(images).to(device)


def channels_first(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2).contiguous()


class DeviceBatches:
    """Endless (views, labels, positions) batches, like the DataLoader of the PIL path."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, rows, views, batch_size: int, seed: int,
                 stream: int, start: int, mean, std, flip: bool, cutout: int, what: str, rank: int = 0,
                 world_size: int = 1):
        self.images, self.labels = images, labels
        self.rows = torch.as_tensor(rows, device=images.device)
        self.sampler = iter(PassBatches(len(rows), batch_size, seed, stream, start, what, rank, world_size))
        self.generator = torch.Generator(device=images.device)
        draw = {'weak': lambda x: tensor_augment.weak(x, self.generator, flip),
                'strong': lambda x: tensor_augment.strong(x, self.generator, flip, cutout)}
        self.views = [draw[kind] for kind in views]
        self.mean, self.std = mean, std

    def __iter__(self):
        return self

    def __next__(self):
        keys = next(self.sampler)
        positions = torch.tensor([i for i, _ in keys])
        if self.images.is_cuda:  # a pinned copy does not wait for the GPU
            positions = positions.pin_memory()
        positions = positions.to(self.images.device, non_blocking=True)
        self.generator.manual_seed(keys[0][1])
        rows = self.rows[positions]
        images = channels_first(self.images[rows])
        views = tuple(tensor_augment.normalize(view(images), self.mean, self.std) for view in self.views)
        return views, self.labels[rows], positions


class EvalBatches:
    """The test set in order, normalised on the device; iterable once per evaluation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, batch_size: int = 512):
        self.images, self.labels, self.mean, self.std, self.batch_size = images, labels, mean, std, batch_size

    def __iter__(self):
        for start in range(0, len(self.images), self.batch_size):
            batch = slice(start, start + self.batch_size)
            images = channels_first(self.images[batch])
            yield tensor_augment.normalize(images, self.mean, self.std), self.labels[batch], None
