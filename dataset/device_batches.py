"""Training batches made on the device (`--aug gpu`): the images of the split live there as one
uint8 tensor, and each step draws every view of its labeled and unlabeled batch at once with the
batched augmentation of dataset/tensor_augment.py, which equals the per-sample PIL path
(dataset/augment.py).

The order of the samples is the same as the PIL path's (dataset.sampler.PassBatches). Each batch's
random draws come from a host generator seeded with that batch's first sample seed, so a step's
views depend only on (--seed, step), on any device: resuming stays exact. A step costs a fixed
number of kernel launches (one gather, one flip-and-crop, one RandAugmentMC, one normalisation
for all its 1,664 images at the CIFAR recipe; CCL's contrastive views add one batched
tensor_augment.contrastive) and never waits for the GPU.
"""
from typing import NamedTuple, Optional

import torch

from dataset import tensor_augment
from dataset.tensor_augment import Draws, RandAugmentMC, contrastive, crop_padding, draw_weak, flip_crop, send
from dataset.tensor_augment.contrastive import ContrastiveDraws
from dataset.sampler import PassBatches

TENSOR_VIEW_KINDS = ('weak', 'strong', 'crop_flip', 'contrastive')  # the view kinds drawn here: augment.VIEW_KINDS


def to_device(images, device) -> torch.Tensor:
    """(N, H, W, 3) uint8 array -> the same on `device`, one copy (ImageNet-127 at 64x64 is 15.7 GB);
    batches are turned channels-first after they are gathered."""
    return torch.from_numpy(images).to(device)


def channels_first(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2).contiguous()


class Stream:
    """One side of a step (labeled or unlabeled): its rows of the split and their labels, the order
    its samples come in, the views the method wants of each, and the host generator of their draws."""

    def __init__(self, rows, labels, views, batch_size: int, stream: int, what: str, device, seed: int, start: int,
                 rank: int, world_size: int):
        unknown = set(views) - set(TENSOR_VIEW_KINDS)
        if unknown:
            raise ValueError(f'unknown view kind(s) {sorted(unknown)}; expected one of {", ".join(TENSOR_VIEW_KINDS)}')
        self.rows = torch.as_tensor(rows, device=device)
        self.labels = labels
        self.sampler = iter(PassBatches(len(rows), batch_size, seed, stream, start, what, rank, world_size))
        self.views = views
        self.generator = torch.Generator()


class View(NamedTuple):
    side: int             # 0 labeled, 1 unlabeled
    number: int           # its place among the method's views of that side
    weak: Optional[torch.Tensor]    # (4, N) flip, top, left, zero padding (a 'crop_flip' view); None for 'contrastive'
    strong: Optional[Draws] = None  # RandAugmentMC's draws, for a strong view
    contrastive: Optional[ContrastiveDraws] = None  # for a 'contrastive' view (CCL's)


class DeviceBatches:
    """Endless (labeled batch, unlabeled batch) pairs, each (views, labels, positions) like the
    DataLoaders of the PIL path. The labels are `labels[row]`, or on the labeled side, when given,
    `labeled_targets[position]` (CReST+'s pseudo labels of the pool rows it adds)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, labeled_rows, unlabeled_rows, labeled_views,
                 unlabeled_views, batch_size: int, mu: int, seed: int, start: int, mean, std, flip: bool,
                 cutout: int, rank: int = 0, world_size: int = 1, labeled_targets: Optional[torch.Tensor] = None):
        self.images, self.mean, self.std, self.flip = images, mean, std, flip
        common = dict(device=images.device, seed=seed, start=start, rank=rank, world_size=world_size)
        labeled_rows, unlabeled_rows = (torch.as_tensor(rows, device=images.device)
                                        for rows in (labeled_rows, unlabeled_rows))
        targets = labels[labeled_rows] if labeled_targets is None else labeled_targets
        self.sides = (Stream(labeled_rows, targets, labeled_views, batch_size, 0, 'labeled set', **common),
                      Stream(unlabeled_rows, labels[unlabeled_rows], unlabeled_views, batch_size * mu, 1,
                             'unlabeled pool', **common))
        self.randaugment = RandAugmentMC(n=2, m=10, cutout=cutout)

    def __iter__(self):
        return self

    def draw(self, keys) -> list:
        """Every view's draws, in the order the views are listed (each side: per view, the flip
        and crop, then RandAugmentMC's draws for a strong one; a contrastive view's own draws),
        from generators seeded with each batch's first sample seed."""
        height, views = self.images.shape[1], []
        for side, (stream, batch) in enumerate(zip(self.sides, keys)):
            stream.generator.manual_seed(batch[0][1])
            for number, kind in enumerate(stream.views):
                if kind == 'contrastive':
                    views.append(View(side, number, None, contrastive=contrastive.draw(len(batch), height,
                                                                                       stream.generator)))
                    continue
                # 'crop_flip' (zero-padded crop, then flip) is drawn as a flip, then a zero-padded crop:
                # the same distribution (tensor_augment.flip_crop); it always flips at random
                flips, top, left = draw_weak(len(batch), height, stream.generator, self.flip or kind == 'crop_flip')
                strong = self.randaugment.draw(len(batch), stream.generator) if kind == 'strong' else None
                zero_pad = torch.full_like(top, kind == 'crop_flip')
                views.append(View(side, number, torch.stack([flips.long(), top, left, zero_pad]), strong))
        return views

    def padded_views(self, views, rows) -> torch.Tensor:
        """The weak, crop_flip and strong views (in this order: the strong ones last), uint8."""
        weak = send(torch.cat([view.weak for view in views], 1), self.images)
        images = channels_first(self.images[torch.cat([rows[view.side] for view in views])])
        zero_pad = weak[3].bool() if any('crop_flip' in stream.views for stream in self.sides) else None
        images = flip_crop(images, weak[0].bool(), weak[1], weak[2], crop_padding(images.shape[2]), zero_pad)
        strong = [view.strong for view in views if view.strong is not None]
        if strong:
            tail = len(images) - sum(len(draws.op) for draws in strong)
            images[tail:] = self.randaugment.apply(images[tail:], Draws(*map(torch.cat, zip(*strong))))
        return images

    def contrastive_views(self, views, rows) -> torch.Tensor:
        """The contrastive views (CCL's), drawn from the images themselves, uint8."""
        images = channels_first(self.images[torch.cat([rows[view.side] for view in views])])
        return contrastive.apply(images, ContrastiveDraws(*map(torch.cat, zip(*(v.contrastive
                                                                                            for v in views)))))

    def __next__(self):
        keys = [next(stream.sampler) for stream in self.sides]
        positions = send(torch.tensor([i for batch in keys for i, _ in batch]), self.images)
        positions = positions.split([len(batch) for batch in keys])
        rows = [stream.rows[p] for stream, p in zip(self.sides, positions)]
        drawn = self.draw(keys)
        padded = sorted((view for view in drawn if view.weak is not None), key=lambda view: view.strong is not None)
        unpadded = [view for view in drawn if view.weak is None]   # the contrastive ones
        parts = ([self.padded_views(padded, rows)] if padded else []) + \
                ([self.contrastive_views(unpadded, rows)] if unpadded else [])
        views = padded + unpadded
        images = parts[0] if len(parts) == 1 else torch.cat(parts)
        images = tensor_augment.normalize(images, self.mean, self.std).split([len(rows[v.side]) for v in views])
        out = [[None] * len(stream.views) for stream in self.sides]
        for view, pixels in zip(views, images):
            out[view.side][view.number] = pixels
        return tuple((tuple(out[side]), stream.labels[p], p)
                     for side, (stream, p) in enumerate(zip(self.sides, positions)))


class EvalBatches:
    """Images in order, normalised on `device`, `batch_size` at a time (with their labels, or None);
    iterable once per evaluation. The images may live on the device or on the host (a uint8 array
    or tensor, each batch copied over when it is made); `rows`: only these rows, in this order."""

    def __init__(self, images, labels, mean, std, batch_size: int = 512, device=None, rows=None):
        self.images, self.labels, self.mean, self.std, self.batch_size = images, labels, mean, std, batch_size
        self.device = images.device if device is None else device
        self.rows = rows

    def __iter__(self):
        count = len(self.images) if self.rows is None else len(self.rows)
        for start in range(0, count, self.batch_size):
            batch = slice(start, start + self.batch_size)
            images = self.images[batch] if self.rows is None else self.images[self.rows[batch]]
            images = channels_first(torch.as_tensor(images).to(self.device))
            labels = None if self.labels is None else self.labels[batch]
            yield tensor_augment.normalize(images, self.mean, self.std), labels, None
