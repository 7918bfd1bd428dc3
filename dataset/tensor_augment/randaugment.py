"""RandAugmentMC on a batch: its random draws, the plan they make on the host, and one pass on the
device whose operations and shapes do not depend on the draws.

Random draws are made on the host (a CPU generator), and so is everything that depends only on
them (`RandAugmentMC.plan`): per sample and slot, the parameters of three stages, each of which is
the identity for a sample that did not draw one of its ops:

1. geometric: rotate, shear and translate as one nearest-neighbour affine transform (identity
   coefficients otherwise);
2. lookup table: posterize, solarize, brightness, contrast, auto_contrast and equalize as one
   per-channel table of 256 entries (the identity table otherwise);
3. pixel blend: color and sharpness, Pillow's blend with the greyscale or the smoothed image
   (factor 1, which gives the image itself, otherwise).

A sample runs one op per slot (or none), so the three stages in turn apply exactly that op. The
device runs the same operations on tensors of the same shapes at every step, whatever was drawn:
it never reports back to the host, nothing waits, and a step can be captured as a CUDA graph. It
computes every stage for every sample, which costs arithmetic (cheap on a GPU) instead of
operations (each one a kernel launch); the same draws give the same pixels on every device.
"""
import functools
from typing import NamedTuple

import torch

from dataset import augment as _ref
from dataset.augment import CUTOUT
from dataset.tensor_augment.ops import (MATRICES, POOL, _N_OPS, _blend, _apply_lut, _channel_range, _col, _grayscale,
                                        _histogram, _smooth, _table, affine_fixed, auto_contrast_lut, cutout,
                                        cutout_box, equalize_lut, fixed_point, gray_mean, op_parameter, posterize_mask,
                                        rotate_matrix, send)

_NAMES = [p[0] for p in POOL]
IDENTITY_AFFINE = (65536, 0, 32768, 0, 65536, 32768)   # fixed_point() of the identity matrix
# The columns of one slot in a plan (int64; the two factors are float64 bit patterns):
AFFINE = slice(0, 6)     # fixed-point affine coefficients (stage 1)
POSTERIZE_MASK = 6       # stage 2: posterize's bit mask (255: none)
SOLARIZE_AT = 7          # solarize's threshold (256: none)
FLAGS = slice(8, 12)     # 0/1: blend with the mean grey (contrast), auto_contrast, equalize, blend with grey (color)
FACTORS = slice(12, 14)  # float64: the blend factors of the table (brightness, contrast) and pixels (color, sharpness)
SLOT_COLUMNS, CUTOUT_COLUMNS = 14, 4


@functools.lru_cache(maxsize=None)
def _parameter_table(height, width):
    """The parameter of every (pool op, magnitude 0..10, sign < 0 or > 0), computed once per image
    size with the ops' own parameter functions: (14, 11, 2, 6) float64, the magnitude in column 0,
    or a geometric op's fixed-point affine coefficients (all exact in float64)."""
    rows = torch.zeros(_N_OPS, 11, 2, 6, dtype=torch.float64)
    v, sign = torch.arange(11).repeat(2), torch.tensor([-1] * 11 + [1] * 11)
    for index, (name, _, param, _, _) in enumerate(POOL):
        if param is None:
            continue
        value = op_parameter(index, v, sign, height, width)
        if name in MATRICES:
            rows[index] = fixed_point(MATRICES[name](value, height, width)).double().view(2, 11, 6).transpose(0, 1)
        else:
            rows[index, :, :, 0] = value.double().view(2, 11).t()
    return rows


def _is(op, applied, *names):
    """(N,) bool: the sample applied one of the pool ops `names` in this slot."""
    return applied & torch.isin(op, torch.tensor([_NAMES.index(name) for name in names]))


def slot_plan(draws, slot, height, width) -> torch.Tensor:
    """The host side of one RandAugmentMC slot, from the draws alone: (N, SLOT_COLUMNS) int64, each
    sample's parameters of the three stages (the identity's where it drew no op of a stage)."""
    op, applied = draws.op[:, slot], draws.apply[:, slot]
    value = _parameter_table(height, width)[op, draws.magnitude[:, slot], (draws.sign[:, slot] > 0).long()]
    magnitude = value[:, 0]
    geometric = _is(op, applied, *MATRICES)
    affine = torch.where(geometric.unsqueeze(1), value.long(), torch.tensor(IDENTITY_AFFINE))
    mask = torch.where(_is(op, applied, 'posterize'), posterize_mask(magnitude.clamp(0, 8)), 255)
    threshold = torch.where(_is(op, applied, 'solarize'), magnitude.long(), 256)
    flags = torch.stack([_is(op, applied, 'contrast'), _is(op, applied, 'auto_contrast'),
                         _is(op, applied, 'equalize'), _is(op, applied, 'color')], 1).long()
    factors = torch.stack([torch.where(_is(op, applied, 'brightness', 'contrast'), magnitude, 1.0),
                           torch.where(_is(op, applied, 'color', 'sharpness'), magnitude, 1.0)], 1)
    return torch.cat([affine, mask.unsqueeze(1), threshold.unsqueeze(1), flags, factors.view(torch.int64)], 1)


def run_slot(x, plan):
    """One slot on the device: x (N, 3, H, W) uint8, plan (N, SLOT_COLUMNS) int64 on its device."""
    x = affine_fixed(x, plan[:, AFFINE])                                   # 1. geometric
    flags = plan[:, FLAGS] != 0
    contrast, auto_contrast, equalize, color = (_col(f, 3) for f in flags.unbind(1))
    factors = plan[:, FACTORS].view(torch.float64)
    wide = x.int()  # (one widening for the range, the greyscale and the smoothing)
    lo, hi = _channel_range(wide)                                           # 2. the lookup table
    gray = _grayscale(wide)
    lut = _table('values', lambda: range(256), torch.int64, x.device) & plan[:, POSTERIZE_MASK:POSTERIZE_MASK + 1]
    lut = torch.where(lut >= plan[:, SOLARIZE_AT:SOLARIZE_AT + 1], 255 - lut, lut)
    lut = _blend((gray_mean(gray) * contrast.view(-1)).unsqueeze(1), lut, factors[:, 0]).unsqueeze(1)
    lut = torch.where(auto_contrast, auto_contrast_lut(lo, hi), lut)
    lut = torch.where(equalize, equalize_lut(_histogram(x), lo, hi, x.shape[2] * x.shape[3]), lut)
    y = _apply_lut(x, lut)
    degenerate = torch.where(color.unsqueeze(-1), gray, _smooth(wide))      # 3. the pixel blend
    return _blend(degenerate, y, factors[:, 1])


def cutout_plan(draws, cutout, height, width) -> torch.Tensor:
    """augment.cutout_abs's grey square of side `cutout` at each drawn centre: (N, 4) int64, the
    inclusive box x0, y0, x1, y1."""
    cx, cy = draws.centre[:, 0] * width, draws.centre[:, 1] * height     # np.random.uniform(0, w)
    return torch.stack(cutout_box(cx, cy, cutout, height, width), 1)


class Draws(NamedTuple):
    """RandAugmentMC's random draws for N images and n slots."""
    op: torch.Tensor        # (N, n) int64, pool index, uniform over the 14 ops
    magnitude: torch.Tensor  # (N, n) int64, uniform in 1..m-1
    apply: torch.Tensor     # (N, n) bool, each with probability 1/2
    sign: torch.Tensor      # (N, n) int64, -1 with probability 1/2 (used by signed ops only)
    centre: torch.Tensor    # (N, 2) float64, cutout centre (x, y) as a fraction of (W, H)


class SlotAugment:
    """What RandAugmentMC and USB's RandAugment share: n slots of the three device stages (run_slot)
    from a plan of SLOT_COLUMNS per slot, then a cutout (in `fill`; None: grey 127). A subclass
    draws (`draw`) and plans (`plan`)."""
    fill = None

    @property
    def plan_columns(self) -> int:
        return self.n * SLOT_COLUMNS + CUTOUT_COLUMNS

    def run(self, images, plan, out=None):
        """The augmentation of `plan` (on the images' device) on images (N, 3, H, W) uint8: the same
        operations, on tensors of the same shapes, whatever the draws; the result goes into `out`
        when given."""
        for slot in range(self.n):
            images = run_slot(images, plan[:, slot * SLOT_COLUMNS:(slot + 1) * SLOT_COLUMNS])
        return cutout(images, *plan[:, self.n * SLOT_COLUMNS:].unbind(1), out=out, fill=self.fill)

    def apply(self, images, draws):
        """The augmentation with given draws; images (N, 3, H, W) uint8 on any device."""
        return self.run(images, send(self.plan(draws, *images.shape[2:]), images))

    def __call__(self, images, generator):
        return self.apply(images, self.draw(len(images), generator))

    def __repr__(self):
        return f'{type(self).__name__}(n={self.n}, m={self.m})'


class RandAugmentMC(SlotAugment):
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

    def plan(self, draws: Draws, height, width) -> torch.Tensor:
        """Everything the device needs of the draws, on the host: (N, plan_columns) int64, the
        slots' columns (slot_plan) then the cutout box."""
        draws = Draws(*(t.cpu() for t in draws))
        return torch.cat([slot_plan(draws, slot, height, width) for slot in range(self.n)]
                         + [cutout_plan(draws, self.cutout, height, width)], 1)


# ---------------------------------------------------------------- USB's RandAugment

_USB_NAMES = [name for name, _, _ in _ref.USB_POOL]
_USB_LOW = torch.tensor([low for _, low, _ in _ref.USB_POOL], dtype=torch.float64)
_USB_SPAN = torch.tensor([float(high - low) for _, low, high in _ref.USB_POOL], dtype=torch.float64)


class USBDraws(NamedTuple):
    """USB's RandAugment draws for N images and n slots."""
    op: torch.Tensor       # (N, n) int64, index into augment.USB_POOL, uniform
    value: torch.Tensor    # (N, n) float64, uniform in the op's range
    cutout: torch.Tensor   # (N,) float64, the cutout's side as a fraction of the width, uniform in [0, 0.5)
    corner: torch.Tensor   # (N, 2) float64, uniform in [0, 1): numpy's uniform(w) is w + (1 - w) u


def usb_slot_plan(op, value, height, width) -> torch.Tensor:
    """The columns of slot_plan for USB's ops, every one applied, at continuous values."""
    is_op = lambda *names: torch.isin(op, torch.tensor([_USB_NAMES.index(n) for n in names]))  # noqa: E731
    affine = torch.tensor(IDENTITY_AFFINE).repeat(len(op), 1)
    for name in MATRICES:
        chosen = is_op(name)
        if chosen.any():
            if name == 'rotate':
                matrix = rotate_matrix(value[chosen], height, width, exact=True)
            else:
                scale = width if name == 'translate_x' else height if name == 'translate_y' else 1
                matrix = MATRICES[name](value[chosen] * scale, height, width)
            affine[chosen] = fixed_point(matrix)
    mask = torch.where(is_op('posterize'), posterize_mask(value.trunc().clamp(min=1)), 255)
    threshold = torch.where(is_op('solarize'), value.ceil().long(), 256)
    flags = torch.stack([is_op('contrast'), is_op('auto_contrast'), is_op('equalize'), is_op('color')], 1).long()
    factors = torch.stack([torch.where(is_op('brightness', 'contrast'), value, 1.0),
                           torch.where(is_op('color', 'sharpness'), value, 1.0)], 1)
    return torch.cat([affine, mask.unsqueeze(1), threshold.unsqueeze(1), flags, factors.view(torch.int64)], 1)


def usb_cutout_plan(draws: USBDraws, height, width) -> torch.Tensor:
    """augment.usb_cutout's rectangle, inclusive (x0, y0, x1, y1) int64 (empty, x1 < x0, for a side of 0)."""
    side = draws.cutout * width
    cx, cy = width + (1 - width) * draws.corner[:, 0], height + (1 - height) * draws.corner[:, 1]
    x0, y0 = (cx - side / 2.).clamp(min=0).trunc(), (cy - side / 2.).clamp(min=0).trunc()
    x1, y1 = (x0 + side).clamp(max=width).trunc(), (y0 + side).clamp(max=height).trunc()
    box = torch.stack([x0, y0, x1, y1], 1).long()
    return torch.where((side > 0).unsqueeze(1), box, torch.tensor([1, 1, 0, 0]))


class RandAugmentUSB(SlotAugment):
    """Batched augment.RandAugmentUSB: per sample and slot an op uniform over USB's pool at a value
    uniform in its range, always applied; then a cutout of a random side in USB's colour. Its plan
    has RandAugmentMC's slot columns, so the device runs the same three stages (run_slot)."""

    fill = _ref.USB_CUTOUT_FILL

    def __init__(self, n=3, m=5):
        self.n, self.m = n, m

    def draw(self, n_images, generator) -> USBDraws:
        device = generator.device
        op = torch.randint(0, len(_USB_NAMES), (n_images, self.n), generator=generator, device=device)
        u = torch.rand((n_images, self.n), generator=generator, device=device, dtype=torch.float64)
        cutout = torch.rand(n_images, generator=generator, device=device, dtype=torch.float64) * 0.5
        corner = torch.rand((n_images, 2), generator=generator, device=device, dtype=torch.float64)
        return USBDraws(op, _USB_LOW.to(device)[op] + _USB_SPAN.to(device)[op] * u, cutout, corner)

    def plan(self, draws: USBDraws, height, width) -> torch.Tensor:
        draws = USBDraws(*(t.cpu() for t in draws))
        return torch.cat([usb_slot_plan(draws.op[:, slot], draws.value[:, slot], height, width)
                          for slot in range(self.n)] + [usb_cutout_plan(draws, height, width)], 1)
