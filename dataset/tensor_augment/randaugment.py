"""RandAugmentMC on a batch: its random draws and the plan of each slot.

Random draws are made on the host (a CPU generator), and so is everything that depends only on
them; per slot, the samples that drew each op are transformed together (the five geometric ops
as one affine transform), so no Python loop runs over images and the device is never asked
for a value: nothing waits for the GPU. The same draws give the same pixels on every device.
"""
import functools
from typing import NamedTuple

import torch

from dataset.augment import CUTOUT
from dataset.tensor_augment.ops import (MATRICES, POOL, _N_OPS, affine_fixed, cutout, cutout_box, fixed_point,
                                        op_parameter, send)


_IDENTITY = [p[0] for p in POOL].index('identity')
_AFFINE, _SKIPPED = _N_OPS, _N_OPS + 1     # slot groups after the pool's own indices


@functools.lru_cache(maxsize=None)
def _plan_tables(height, width):
    """For slot_plan, computed once per image size with the ops' own parameter functions:
    the group of each pool op, (14,) int64, and the parameter row of every (op, magnitude 0..10,
    sign < 0 or > 0), (14, 11, 2, 6) float64: the magnitude in column 0, or the fixed-point
    affine coefficients of a geometric op."""
    groups, rows = [], torch.zeros(_N_OPS, 11, 2, 6, dtype=torch.float64)
    v, sign = torch.arange(11).repeat(2), torch.tensor([-1] * 11 + [1] * 11)
    for index, (name, _, param, _, _) in enumerate(POOL):
        groups.append(_AFFINE if name in MATRICES else index)
        if param is None:
            continue
        value = op_parameter(index, v, sign, height, width)
        if name in MATRICES:
            coefficients = fixed_point(MATRICES[name](value, height, width)).double()
            rows[index] = coefficients.view(2, 11, 6).transpose(0, 1)
        else:
            rows[index, :, :, 0] = value.double().view(2, 11).t()
    return torch.tensor(groups), rows


def slot_plan(draws, slot, height, width):
    """The host side of one RandAugmentMC slot, computed from the draws (on the host) alone.

    Every sample belongs to one group: the pool op it drew (0..13), the geometric ops together
    (_AFFINE: one transform with per-sample coefficients), or _SKIPPED (its coin said no).
    Returns (order, counts, parameters): the samples group after group, the size of each group,
    and each sample's parameter in that order as (N, 6) float64, the magnitude in column 0 or
    the fixed-point affine coefficients (all exact in float64)."""
    op, v, sign = draws.op[:, slot], draws.magnitude[:, slot], draws.sign[:, slot]
    group_of_op, rows = _plan_tables(height, width)
    group = torch.where(draws.apply[:, slot], group_of_op[op], _SKIPPED)
    order = torch.argsort(group, stable=True)
    parameters = rows[op, v, (sign > 0).long()]
    return order, torch.bincount(group, minlength=_SKIPPED + 1).tolist(), parameters[order]


def apply_group(group, images, parameters):
    """Run one slot_plan group on its images with their (N, 6) parameters, on the device."""
    if group == _AFFINE:
        return affine_fixed(images, parameters.long())
    op, param = POOL[group][1:3]
    return op(images) if param is None else op(images, parameters[:, 0])


class Draws(NamedTuple):
    """RandAugmentMC's random draws for N images and n slots."""
    op: torch.Tensor        # (N, n) int64, pool index, uniform over the 14 ops
    magnitude: torch.Tensor  # (N, n) int64, uniform in 1..m-1
    apply: torch.Tensor     # (N, n) bool, each with probability 1/2
    sign: torch.Tensor      # (N, n) int64, -1 with probability 1/2 (used by signed ops only)
    centre: torch.Tensor    # (N, 2) float64, cutout centre (x, y) as a fraction of (W, H)


class RandAugmentMC:
    """Batched augment.RandAugmentMC: per sample and slot, an op uniform over the pool, a
    magnitude in 1..m-1, applied with probability 1/2 (signed ops negated with probability
    1/2); slots in order; then the cutout, always."""

    def __init__(self, n=2, m=10, cutout=CUTOUT):
        assert n >= 1 and 1 <= m <= 10
        self.n = n
        self.m = m
        self.cutout = cutout

    def draw(self, n_images, generator) -> Draws:
        device = generator.device
        shape = (n_images, self.n)
        op = torch.randint(0, _N_OPS, shape, generator=generator, device=device)
        magnitude = torch.randint(1, self.m, shape, generator=generator, device=device)
        apply = torch.rand(shape, generator=generator, device=device) < 0.5
        sign = torch.where(torch.rand(shape, generator=generator, device=device) < 0.5, -1, 1)
        centre = torch.rand((n_images, 2), generator=generator, device=device, dtype=torch.float64)
        return Draws(op, magnitude, apply, sign, centre)

    def apply(self, images, draws: Draws):
        """The augmentation with given draws; images (N, 3, H, W) uint8 on any device.

        Everything that depends only on the draws (groups, magnitudes, affine coefficients,
        cutout boxes) is computed on the host and sent in one copy per slot, so the device never
        has to report back: nothing here waits for the GPU, and a slot costs the same number of
        kernel launches (a few hundred at most) whatever the batch size."""
        draws = Draws(*(t.cpu() for t in draws))
        h, w = images.shape[2:]
        out = images.clone()
        for slot in range(self.n):
            order, counts, parameters = slot_plan(draws, slot, h, w)
            packed = send(torch.cat([order.double().unsqueeze(1), parameters], 1), images)
            groups = zip(packed[:, 0].long().split(counts), packed[:, 1:].split(counts))
            for group, (idx, group_parameters) in enumerate(groups):
                if len(idx) and group not in (_IDENTITY, _SKIPPED):
                    out[idx] = apply_group(group, out[idx], group_parameters)
        cx, cy = draws.centre[:, 0] * w, draws.centre[:, 1] * h     # np.random.uniform(0, w)
        box = send(torch.stack(cutout_box(cx, cy, self.cutout, h, w)), images)
        return cutout(out, *box)

    def __call__(self, images, generator):
        return self.apply(images, self.draw(len(images), generator))

    def __repr__(self):
        return f'{type(self).__name__}(n={self.n}, m={self.m})'
