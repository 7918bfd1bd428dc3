"""Training batches made on the device (`--aug gpu`): the images of the split live there as one
uint8 tensor, and each step draws every view of its labeled and unlabeled batch at once with the
batched augmentation of dataset/tensor_augment, which equals the per-sample PIL path
(dataset/augment.py).

The order of the samples is the same as the PIL path's (dataset.sampler.PassBatches). Each batch's
random draws come from a host generator seeded with that batch's first sample seed, so a step's
views depend only on (--seed, step), on any device: resuming stays exact.

A step has two halves. On the host, `host_plan` turns the samples and the draws into one int64
tensor of a fixed layout: the positions and labels, where every pixel of each view's flip and crop
comes from, RandAugmentMC's plan of every strong view. It goes to the device in one copy, and
`views` makes the batch from it: one gather of every view's pixels straight from the split, the
RandAugmentMC stages on the strong views (written in place), one normalisation. The device part
runs the same operations on tensors of the same shapes at every step and never waits for the GPU,
so it can be captured as a CUDA graph (CCL's contrastive views, grouped by their draws, excepted).
"""
from typing import NamedTuple, Optional

import torch

from dataset import tensor_augment
from dataset.tensor_augment import (RandAugmentMC, RandAugmentUSB, contrastive, crop_padding, crop_source, draw_weak,
                                     send)
from dataset.tensor_augment.contrastive import ContrastiveDraws
from dataset.tensor_augment.ops import _table
from dataset.sampler import PassBatches

TENSOR_VIEW_KINDS = ('weak', 'strong', 'strong_usb', 'crop_flip', 'contrastive')  # drawn here: augment.VIEW_KINDS
STRONG = {'strong': 'randaugment', 'strong_usb': 'randaugment_usb'}  # a strong kind -> its plan part, in order


def strong_augmenters(cutout: int) -> dict:
    """The RandAugment of each strong kind, in STRONG's order."""
    return {'strong': RandAugmentMC(n=2, m=10, cutout=cutout), 'strong_usb': RandAugmentUSB(3, 5)}


def strong_rank(kind: str) -> int:
    """The order of a view kind among a step's flipped and cropped views: the plain ones first,
    then each strong kind in STRONG's order (each runs its RandAugment on its own tail)."""
    return list(STRONG).index(kind) + 1 if kind in STRONG else 0


def to_device(images, device) -> torch.Tensor:
    """(N, H, W, 3) uint8 array -> the same on `device`, one copy (ImageNet-127 at 64x64 is 15.7 GB);
    batches are gathered from it channels-first."""
    return torch.from_numpy(images).to(device)


def channels_first(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2).contiguous()


class Stream:
    """One side of a step (labeled or unlabeled): its rows of the split and their labels (on the
    host), the order its samples come in, the views the method wants of each, and the host
    generator of their draws."""

    def __init__(self, rows, labels, views, batch_size: int, stream: int, what: str, seed: int, start: int,
                 rank: int, world_size: int):
        unknown = set(views) - set(TENSOR_VIEW_KINDS)
        if unknown:
            raise ValueError(f'unknown view kind(s) {sorted(unknown)}; expected one of {", ".join(TENSOR_VIEW_KINDS)}')
        self.rows, self.labels = torch.as_tensor(rows).cpu(), torch.as_tensor(labels).cpu()
        self.sampler = iter(PassBatches(len(rows), batch_size, seed, stream, start, what, rank, world_size))
        self.batch_size, self.views = batch_size, views
        self.generator = torch.Generator()


class View(NamedTuple):
    side: int             # 0 labeled, 1 unlabeled
    number: int           # its place among the method's views of that side
    kind: str             # one of TENSOR_VIEW_KINDS


def _cat(parts) -> torch.Tensor:
    """torch.cat, or an empty int64 tensor for no parts."""
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


class Layout:
    """The parts of a step's host plan (name -> shape), in order; every step has the same."""

    def __init__(self, parts: dict):
        self.parts = parts
        self.sizes = [torch.Size(shape).numel() for shape in parts.values()]

    def pack(self, values: dict) -> torch.Tensor:
        return torch.cat([values[name].reshape(-1) for name in self.parts])

    def unpack(self, plan: torch.Tensor) -> dict:
        return {name: part.view(shape) for (name, shape), part in zip(self.parts.items(), plan.split(self.sizes))}


class DeviceBatches:
    """Endless (labeled batch, unlabeled batch) pairs, each (views, labels, positions) like the
    DataLoaders of the PIL path. The labels are `labels[row]`, or on the labeled side, when given,
    `labeled_targets[position]` (CReST+'s pseudo labels of the pool rows it adds).

    `planned` (--compile): each batch is its plan on the device, and views(batch) makes the pair
    (inside the compiled step), unless the views include contrastive ones, whose operations depend
    on the draws."""

    def __init__(self, images: torch.Tensor, labels, labeled_rows, unlabeled_rows, labeled_views, unlabeled_views,
                 batch_size: int, mu: int, seed: int, start: int, mean, std, flip: bool, cutout: int, rank: int = 0,
                 world_size: int = 1, labeled_targets=None, planned: bool = False):
        self.images, self.mean, self.std, self.flip = images, mean, std, flip
        common = dict(seed=seed, start=start, rank=rank, world_size=world_size)
        labels = torch.as_tensor(labels).cpu()
        labeled_rows, unlabeled_rows = torch.as_tensor(labeled_rows).cpu(), torch.as_tensor(unlabeled_rows).cpu()
        targets = labels[labeled_rows] if labeled_targets is None else labeled_targets
        self.sides = (Stream(labeled_rows, targets, labeled_views, batch_size, 0, 'labeled set', **common),
                      Stream(unlabeled_rows, labels[unlabeled_rows], unlabeled_views, batch_size * mu, 1,
                             'unlabeled pool', **common))
        self.augmenters = strong_augmenters(cutout)
        views = [View(side, number, kind) for side, stream in enumerate(self.sides)
                 for number, kind in enumerate(stream.views)]
        # the flipped and cropped views, the strong ones last (RandAugmentMC, then USB's RandAugment, run on that
        # tail), then the contrastive
        self.order = sorted((v for v in views if v.kind != 'contrastive'), key=lambda v: strong_rank(v.kind)) + \
            [v for v in views if v.kind == 'contrastive']
        self.layout = self._layout()
        self.planned = planned and 'contrastive' not in labeled_views + unlabeled_views
        if self.planned:  # (the compiled step reads the split where it is; CUDA graphs would copy an input)
            torch._dynamo.mark_static_address(images)

    def _layout(self) -> Layout:
        """The host plan's parts, shaped as the device uses them (broadcast over (N, 3, H, W))."""
        count = lambda kinds: sum(self.sides[v.side].batch_size for v in self.order if v.kind in kinds)  # noqa: E731
        padded, contrast = count(('weak', 'crop_flip', *STRONG)), count(('contrastive',))
        h, w = self.images.shape[1:3]
        samples = sum(stream.batch_size for stream in self.sides)
        parts = {'positions': (samples,), 'labels': (samples,), 'base': (padded, 1, 1, 1), 'rows': (padded, 1, h, 1),
                 'cols': (padded, 1, 1, w)}
        if self.zero_pad:
            parts.update(rows_inside=(padded, 1, h, 1), cols_inside=(padded, 1, 1, w))
        parts.update({STRONG[kind]: (count((kind,)), augmenter.plan_columns) for kind, augmenter in
                      self.augmenters.items()}, contrastive_rows=(contrast,))
        return Layout(parts)

    @property
    def zero_pad(self) -> bool:
        return any(view.kind == 'crop_flip' for view in self.order)

    def __iter__(self):
        return self

    def draw(self, keys) -> list:
        """Every view's draws, in the order the views are listed (each side: per view, the flip
        and crop, then its RandAugment's draws for a strong one; a contrastive view's own draws),
        from generators seeded with each batch's first sample seed: {view: draws}."""
        height, drawn = self.images.shape[1], {}
        for side, (stream, batch) in enumerate(zip(self.sides, keys)):
            stream.generator.manual_seed(batch[0][1])
            for number, kind in enumerate(stream.views):
                view = View(side, number, kind)
                if kind == 'contrastive':
                    drawn[view] = contrastive.draw(len(batch), height, stream.generator)
                    continue
                # 'crop_flip' (zero-padded crop, then flip) is drawn as a flip, then a zero-padded crop:
                # the same distribution (tensor_augment.flip_crop); it always flips at random
                weak = draw_weak(len(batch), height, stream.generator, self.flip or kind == 'crop_flip')
                augmenter = self.augmenters.get(kind)
                drawn[view] = (weak, augmenter.draw(len(batch), stream.generator) if augmenter else None)
        return drawn

    def host_plan(self):
        """The next step on the host: (its plan, one int64 tensor of self.layout; the contrastive views'
        draws, or None)."""
        keys = [next(stream.sampler) for stream in self.sides]
        positions = [torch.tensor([i for i, _ in batch]) for batch in keys]
        rows = [stream.rows[p] for stream, p in zip(self.sides, positions)]
        drawn = self.draw(keys)
        h, w = self.images.shape[1:3]
        padded = [v for v in self.order if v.kind != 'contrastive']
        flips, top, left = (_cat(parts) for parts in zip(*(drawn[v][0] for v in padded))) if padded else [_cat([])] * 3
        zero_pad = _cat([torch.full((self.sides[v.side].batch_size,), v.kind == 'crop_flip') for v in padded])
        source = crop_source(flips, top, left, crop_padding(h), h, w, zero_pad if self.zero_pad else None)
        values = {'positions': _cat(positions), 'labels': _cat([s.labels[p] for s, p in zip(self.sides, positions)]),
                  'base': _cat([rows[v.side] for v in padded]) * (h * w * 3), 'rows': source[0] * (w * 3),
                  'cols': source[1] * 3,
                  'contrastive_rows': _cat([rows[v.side] for v in self.order if v.kind == 'contrastive'])}
        for kind, augmenter in self.augmenters.items():
            strong = [drawn[v][1] for v in padded if v.kind == kind]  # (each a NamedTuple of the augmenter's draws)
            values[STRONG[kind]] = augmenter.plan(type(strong[0])(*map(torch.cat, zip(*strong))), h, w) if strong \
                else _cat([])
        if self.zero_pad:
            values.update(rows_inside=source[2].long(), cols_inside=source[3].long())
        contrast = [drawn[v] for v in self.order if v.kind == 'contrastive']
        return self.layout.pack(values), ContrastiveDraws(*map(torch.cat, zip(*contrast))) if contrast else None

    def make_views(self, plan: torch.Tensor, contrastive_draws: Optional[ContrastiveDraws] = None):
        """The batch of a host plan that is on the device: a fixed sequence of operations on tensors
        of fixed shapes (the contrastive views aside)."""
        part = self.layout.unpack(plan)
        images = render(self.images, part, self.augmenters, self.zero_pad)
        if contrastive_draws is not None:
            contrastive_images = contrastive.apply(channels_first(self.images[part['contrastive_rows']]),
                                                   contrastive_draws)
            images = torch.cat([images, contrastive_images])
        images = tensor_augment.normalize(images, self.mean, self.std)
        images = images.split([self.sides[v.side].batch_size for v in self.order])
        out = [[None] * len(stream.views) for stream in self.sides]
        for view, pixels in zip(self.order, images):
            out[view.side][view.number] = pixels
        sizes = [stream.batch_size for stream in self.sides]
        return tuple((tuple(out[side]), labels, positions) for side, (labels, positions) in
                     enumerate(zip(part['labels'].split(sizes), part['positions'].split(sizes))))

    def views(self, batch):
        """The (labeled batch, unlabeled batch) pair of a batch of this iterator."""
        return self.make_views(batch) if self.planned else batch

    def __next__(self):
        plan, contrastive_draws = self.host_plan()
        plan = send(plan, self.images)
        return plan if self.planned else self.make_views(plan, contrastive_draws)


def render(images: torch.Tensor, part: dict, augmenters, zero_pad: bool = False) -> torch.Tensor:
    """The flipped and cropped views of a plan's parts (`part`: Layout.unpack'd, on the device of
    `images`, the (N, H, W, 3) uint8 split), gathered in one take, the strong ones (the last rows:
    len(part[p]) for each plan part p of STRONG, in its order) then augmented in place by the
    augmenter of their kind (`augmenters`: strong_augmenters): uint8 (views, 3, H, W)."""
    channel = _table('channel', lambda: torch.arange(3).view(1, 3, 1, 1), torch.int64, images.device)
    index = (part['base'] + channel + part['rows']) + part['cols']
    views = images.view(-1).take(index)
    if zero_pad:
        views = torch.where((part['rows_inside'] & part['cols_inside']) != 0, views, 0)
    stop = len(views)
    for kind, augmenter in reversed(augmenters.items()):
        name = STRONG[kind]
        start = stop - len(part[name])
        if start < stop:
            augmenter.run(views[start:stop], part[name], out=views[start:stop])
        stop = start
    return views


class RowViews:
    """One view ('weak' or a strong kind of STRONG) of any rows of a split, its draws from a generator
    the caller holds, made by the same plan and device pass as a training batch's (render): for a
    method that draws images of its own (CoSSL's TFE batches). The rows' images go to the device with
    the plan."""

    def __init__(self, images, mean, std, flip: bool, cutout: int):
        self.images, self.mean, self.std, self.flip = images, mean, std, flip
        self.augmenters = strong_augmenters(cutout)

    def __call__(self, rows, kind: str, generator: torch.Generator, device) -> torch.Tensor:
        """The normalised views (len(rows), 3, H, W) on `device`, drawn as DeviceBatches.draw draws a
        view: the flip and crop, then its RandAugment's draws for a strong one."""
        if kind != 'weak' and kind not in STRONG:
            raise ValueError(f'RowViews makes weak or strong views ({", ".join(STRONG)}), not {kind!r}')
        n, (h, w) = len(rows), self.images.shape[1:3]
        flips, top, left = draw_weak(n, h, generator, self.flip)
        plans = {STRONG[strong]: augmenter.plan(augmenter.draw(n, generator), h, w) if strong == kind else _cat([])
                 for strong, augmenter in self.augmenters.items()}
        source_rows, source_cols = crop_source(flips, top, left, crop_padding(h), h, w)
        layout = Layout({'base': (n, 1, 1, 1), 'rows': (n, 1, h, 1), 'cols': (n, 1, 1, w),
                         **{part: tuple(p.shape) for part, p in plans.items()}})
        plan = layout.pack({'base': torch.arange(n) * (h * w * 3), 'rows': source_rows * (w * 3),
                            'cols': source_cols * 3, **plans})
        images = torch.as_tensor(self.images[rows])
        images, plan = send(images, torch.empty(0, device=device)), send(plan, torch.empty(0, device=device))
        return tensor_augment.normalize(render(images, layout.unpack(plan), self.augmenters), self.mean, self.std)


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
