"""CCL's labeled contrastive view on the tensor path, pixel for pixel equal to dataset.augment's
`contrastive` (torchvision's RandomResizedCrop, flip, ColorJitter, RandomGrayscale on PIL images,
then Pillow's Gaussian blur):

- the resized crop is Pillow's two-pass bilinear resample (Resample.c): per output pixel the
  coefficients of its source pixels in 22-bit fixed point, rounded to uint8 after each pass;
- the colour jitter is Pillow's ImageEnhance blends (ops.py) and torchvision's hue shift, which
  goes through Pillow's RGB -> HSV -> RGB conversions (Convert.c), emulated here in the float32
  and float64 arithmetic the C code uses (checked on every one of the 2^24 colours in the tests);
- the blur is Pillow's Gaussian blur: three passes of an extended box filter per direction
  (BoxBlur.c) in 24-bit fixed point, with the box radius Pillow derives from the drawn sigma.

Every draw (crop, flip, whether and in which order the jitter acts, its factors, grey, blur and
sigma) comes from the host generator, with the distribution of torchvision's transforms, and is
sent to the device in two copies; as in RandAugmentMC, each adjustment runs on the images that
draw it, grouped on the host.
"""
import math
from typing import NamedTuple

import numpy as np
import torch

from dataset.tensor_augment.ops import _col, _grayscale, _table, brightness, color, contrast, send

SCALE, RATIO = (0.2, 1.0), (3 / 4, 4 / 3)   # RandomResizedCrop(scale=(0.2, 1.0)), default ratio
ATTEMPTS = 10                               # RandomResizedCrop.get_params tries 10 boxes
JITTER, GREY, BLUR = 0.8, 0.2, 0.5          # RandomApply / RandomGrayscale probabilities
STRENGTH, HUE = 0.4, 0.1                    # ColorJitter(0.4, 0.4, 0.4, 0.1)
SIGMA = (0.1, 2.0)                          # augment.GaussianBlur's sigma range
PASSES = 3                                  # Pillow's Gaussian blur: three box passes
RESAMPLE_BITS, BOX_BITS = 22, 24            # Pillow's fixed-point precisions


# ---------------------------------------------------------------- the resized crop

def _bilinear_coefficients(in_size, out_size):
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for a bilinear resample of `in_size`
    pixels (a crop starting at 0) to `out_size`: (out_size, in_size) integer coefficients."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    table = np.zeros((out_size, in_size), dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = [max(0.0, 1.0 - abs((x + xmin - center + 0.5) / filterscale)) for x in range(xmax)]
        total = sum(weights)   # Pillow sums in this order too
        for x, w in enumerate(weights):
            k = w / total if total != 0.0 else w
            table[xx, xmin + x] = int(0.5 + k * (1 << RESAMPLE_BITS))
    return table


def _coefficient_table(size):
    """(size + 1, size, size) float64: entry [w] holds the coefficients for a crop of width w,
    over source positions 0..size-1 relative to the crop (zero beyond it)."""
    table = np.zeros((size + 1, size, size), dtype=np.float64)
    for w in range(1, size + 1):
        table[w, :, :w] = _bilinear_coefficients(w, size)
    return table


def _resample_matrices(start, length, size, device):
    """(N, size, size) float64: row o holds the coefficients of output pixel o over the source
    pixels of the image's row (or column) for a crop [start, start + length)."""
    table = _table(('bilinear', size), lambda: _coefficient_table(size), torch.float64, device)
    offset = torch.arange(size, device=device) - start.view(-1, 1)          # (N, size)
    inside = (offset >= 0).to(torch.float64).unsqueeze(1)
    index = offset.clamp(0, size - 1).unsqueeze(1).expand(-1, size, -1)
    return table[length].gather(2, index) * inside


def _fixed_point_round(total, bits):
    """Pillow's clip8((sum + 2^(bits-1)) >> bits) of an exact float64 sum."""
    return torch.floor((total + (1 << (bits - 1))) / (1 << bits)).clamp(0, 255)


def resized_crop(images, top, left, height, width):
    """Crop (top, left, height, width) of each image, resized bilinearly to the image's size as
    Pillow does it: the horizontal pass, rounded to uint8, then the vertical one. Both are
    matrix products of exact integers in float64 (every partial sum is below 2^53)."""
    n, c, h, w = images.shape
    across = _resample_matrices(left, width, w, images.device)      # (N, W_out, W)
    down = _resample_matrices(top, height, h, images.device)        # (N, H_out, H)
    rows = _fixed_point_round(torch.einsum('nchw,nxw->nchx', images.to(torch.float64), across), RESAMPLE_BITS)
    return _fixed_point_round(torch.einsum('nchx,nyh->ncyx', rows, down), RESAMPLE_BITS).to(torch.uint8)


# ---------------------------------------------------------------- the hue shift

def _round_half_away(x):
    """C's round() of a non-negative float64 (torch.round rounds half to even)."""
    floor = torch.floor(x)
    return floor + (x - floor >= 0.5).to(x.dtype)


def rgb_to_hsv(x):
    """Pillow's RGB -> HSV (Convert.c rgb2hsv_row) of uint8 (N, 3, H, W): float32 where the C code
    computes in float, float64 where it computes in double."""
    r, g, b = x.to(torch.int32).unbind(1)
    maxc = torch.maximum(r, torch.maximum(g, b))
    minc = torch.minimum(r, torch.minimum(g, b))
    grey = maxc == minc
    cr = (maxc - minc).to(torch.float32)
    s = cr / maxc.to(torch.float32)
    rc, gc, bc = ((maxc - channel).to(torch.float32) / cr for channel in (r, g, b))
    h = torch.where(r == maxc, bc - gc,
                    torch.where(g == maxc, ((2.0 + rc.double()) - bc.double()).float(),
                                ((4.0 + gc.double()) - rc.double()).float()))
    h = torch.fmod(h.double() / 6.0 + 1.0, 1.0).float()
    uh = (h.double() * 255.0).trunc().clamp(0, 255)
    us = (s.double() * 255.0).trunc().clamp(0, 255)
    zero = torch.zeros_like(uh)
    return torch.stack([torch.where(grey, zero, uh), torch.where(grey, zero, us), maxc.double()], 1).to(torch.uint8)


_CASES = ((0, 3, 1), (2, 0, 1), (1, 0, 3), (1, 2, 0), (3, 1, 0), (0, 1, 2))  # (v, p, q, t) per sector


def hsv_to_rgb(x):
    """Pillow's HSV -> RGB (Convert.c hsv2rgb) of uint8 (N, 3, H, W)."""
    h, s, v = x.to(torch.float64).unbind(1)
    sector = torch.floor(h * 6.0 / 255.0)
    f = (h * 6.0 / 255.0 - sector).float()
    fs = (s / 255.0).float()
    p = _round_half_away(v * (1.0 - fs.double()))
    q = _round_half_away(v * (1.0 - (fs * f).double()))
    t = _round_half_away(v * (1.0 - fs.double() * (1.0 - f.double())))
    values = torch.stack([v, p.clamp(0, 255), q.clamp(0, 255), t.clamp(0, 255)], 1)
    cases = _table('hsv sectors', lambda: _CASES, torch.int64, x.device)
    index = cases[sector.long() % 6].permute(0, 3, 1, 2)                 # (N, 3, H, W)
    rgb = values.gather(1, index)
    return torch.where((s == 0).unsqueeze(1), v.unsqueeze(1), rgb).to(torch.uint8)


def hue(x, shift):
    """torchvision's adjust_hue on a PIL image: to HSV, add `shift` (N,) (hue_shift's) to the hue
    modulo 256, back to RGB."""
    hsv = rgb_to_hsv(x)
    shifted = (hsv[:, :1].to(torch.int64) + _col(shift.to(torch.int64))) % 256
    return hsv_to_rgb(torch.cat([shifted.to(torch.uint8), hsv[:, 1:]], 1))


# ---------------------------------------------------------------- the blur

def box_blur_parameters(sigma):
    """Pillow's box filter of GaussianBlur(sigma), per image: (integer radius, ww, fw) of its
    ImagingHorizontalBoxBlur, from the radius _gaussian_blur_radius gives, in the C code's
    float32 / float64 arithmetic. sigma: float64 array."""
    f32, f64 = np.float32, np.float64
    radius = np.asarray(sigma, dtype=f64).astype(f32)           # the C function takes floats
    sigma2 = (radius * radius) / f32(PASSES)
    box_length = np.sqrt(f64(12.0) * sigma2.astype(f64) + 1.0).astype(f32)
    whole = np.floor((box_length.astype(f64) - 1.0) / 2.0).astype(f32)
    fraction = (f32(2) * whole + f32(1)) * (whole * (whole + f32(1)) - f32(3) * sigma2)
    fraction = fraction / (f32(6) * (sigma2 - (whole + f32(1)) * (whole + f32(1))))
    box_radius = whole + fraction
    integer = box_radius.astype(np.int64)
    ww = (f32(1 << BOX_BITS) / (box_radius * f32(2) + f32(1))).astype(np.int64)
    fw = ((1 << BOX_BITS) - (integer * 2 + 1) * ww) // 2
    return integer, ww, fw


MAX_RADIUS = int(box_blur_parameters([SIGMA[1]])[0][0])   # 1: the taps reach 2 pixels each side


def box_weights(integer, ww, fw):
    """(N, R + 2) int64 weights of one box pass by distance 0..R+1 from the pixel (R = MAX_RADIUS):
    ww within the radius, fw on the pixels just beyond it, 0 farther."""
    distance = np.arange(MAX_RADIUS + 2)
    weights = np.where(distance <= integer[:, None], ww[:, None], np.where(distance == integer[:, None] + 1,
                                                                          fw[:, None], 0))
    return torch.from_numpy(weights)


def _box_pass(x, weights):
    """One horizontal box pass of float64 (N, C, H, W) integers, edge pixels repeated beyond the
    border: exact, every sum of products stays below 2^32."""
    reach, w = MAX_RADIUS + 1, x.shape[-1]
    padded = torch.cat([x[..., :1].expand(*x.shape[:-1], reach), x, x[..., -1:].expand(*x.shape[:-1], reach)], -1)
    total = x * _col(weights[:, 0])
    for distance in range(1, reach + 1):
        total += (padded[..., reach - distance:reach - distance + w] +
                  padded[..., reach + distance:reach + distance + w]) * _col(weights[:, distance])
    return torch.floor((total + (1 << (BOX_BITS - 1))) / (1 << BOX_BITS))


def gaussian_blur(x, weights):
    """Pillow's GaussianBlur with each image's box weights: PASSES horizontal box passes, then
    PASSES vertical ones, each rounded to uint8."""
    x, weights = x.to(torch.float64), weights.to(torch.float64)
    for _ in range(PASSES):
        x = _box_pass(x, weights)
    x = x.transpose(2, 3)
    for _ in range(PASSES):
        x = _box_pass(x, weights)
    return x.transpose(2, 3).to(torch.uint8)


# ---------------------------------------------------------------- the view

class ContrastiveDraws(NamedTuple):
    """The random draws of N contrastive views (host tensors)."""
    box: torch.Tensor       # (N, 4) int64: top, left, height, width of the crop
    flip: torch.Tensor      # (N,) bool
    jitter: torch.Tensor    # (N,) bool: the colour jitter acts
    order: torch.Tensor     # (N, 4) int64: the order of brightness, contrast, saturation, hue
    factors: torch.Tensor   # (N, 4) float64: their factors (hue's in -0.1..0.1)
    grey: torch.Tensor      # (N,) bool
    blur: torch.Tensor      # (N,) bool
    sigma: torch.Tensor     # (N,) float64


def _uniform(shape, low, high, generator):
    """torch's uniform_(low, high) in float32 (as torchvision draws each factor), as float64."""
    return (torch.rand(shape, generator=generator) * (high - low) + low).double()


def draw_crop(n_images, size, generator):
    """(N, 4) boxes as RandomResizedCrop.get_params draws them on a square image: up to ten
    (area, log aspect ratio) pairs, the first whose rounded sides fit; else the whole image."""
    area = size * size
    target = area * _uniform((n_images, ATTEMPTS), *SCALE, generator)
    aspect = torch.exp(_uniform((n_images, ATTEMPTS), math.log(RATIO[0]), math.log(RATIO[1]), generator).float())
    width = torch.from_numpy(np.round(np.sqrt(target.numpy() * aspect.double().numpy()))).long()
    height = torch.from_numpy(np.round(np.sqrt(target.numpy() / aspect.double().numpy()))).long()
    fits = (width > 0) & (width <= size) & (height > 0) & (height <= size)
    first = torch.where(fits.any(1), fits.long().argmax(1), -1)
    chosen = lambda sides: torch.where(first >= 0, sides.gather(1, first.clamp(min=0).view(-1, 1))[:, 0], size)  # noqa
    height, width = chosen(height), chosen(width)
    offsets = torch.rand((n_images, 2), generator=generator, dtype=torch.float64)
    top = (offsets[:, 0] * (size - height + 1)).long()
    left = (offsets[:, 1] * (size - width + 1)).long()
    return torch.stack([top, left, height, width], 1)


def draw(n_images, size, generator) -> ContrastiveDraws:
    """The draws of N views of size x size images, in the transforms' order."""
    box = draw_crop(n_images, size, generator)
    flip = torch.rand(n_images, generator=generator) < 0.5
    jitter = torch.rand(n_images, generator=generator) <= JITTER
    order = torch.rand((n_images, 4), generator=generator).argsort(1)
    factors = torch.cat([_uniform((n_images, 3), 1 - STRENGTH, 1 + STRENGTH, generator),
                         _uniform((n_images, 1), -HUE, HUE, generator)], 1)
    grey = torch.rand(n_images, generator=generator) < GREY
    blur = torch.rand(n_images, generator=generator) <= BLUR
    sigma = torch.rand(n_images, generator=generator, dtype=torch.float64) * (SIGMA[1] - SIGMA[0]) + SIGMA[0]
    return ContrastiveDraws(box, flip, jitter, order, factors, grey, blur, sigma)


def hue_shift(factor):
    """np.int32(hue_factor * 255).astype(np.uint8), torchvision's shift of the hue byte."""
    return torch.trunc(factor * 255).long() % 256


ADJUSTMENTS = (brightness, contrast, color, hue)   # ColorJitter's order: fn_idx 0..3


def jitter_plan(jitter, order):
    """The jittered images grouped by the adjustment they get in each slot, on the host: (indices,
    counts), 16 groups in the order slot 0 brightness, slot 0 contrast, ..., slot 3 hue."""
    jittered = torch.nonzero(jitter).view(-1)
    indices, counts = [], []
    for slot in range(4):
        adjustment = order[jittered, slot]
        indices.append(jittered[adjustment.argsort(stable=True)])
        counts += torch.bincount(adjustment, minlength=4).tolist()
    return torch.cat(indices), counts


def color_jitter(x, factors, indices, counts):
    """ColorJitter on the groups of jitter_plan, slot after slot; factors (N, 4) with the hue's as
    hue_shift gives it."""
    x = x.clone()
    for number, group in enumerate(indices.split(counts)):
        if len(group):
            adjustment = number % 4
            x[group] = ADJUSTMENTS[adjustment](x[group], factors[group, adjustment])
    return x


def apply(images, draws: ContrastiveDraws):
    """The contrastive views of uint8 (N, 3, H, W) images with the given draws, on their device."""
    n = len(images)
    blurred = torch.nonzero(draws.blur).view(-1)
    weights = box_weights(*box_blur_parameters(draws.sigma[blurred].numpy()))
    indices, counts = jitter_plan(draws.jitter, draws.order)
    whole = send(torch.cat([draws.box.flatten(), draws.flip.long(), draws.grey.long(), indices, blurred,
                            weights.flatten()]), images)
    factors = send(torch.cat([draws.factors[:, :3], hue_shift(draws.factors[:, 3:]).double()], 1), images)
    box, flip, grey, indices, blurred, weights = whole.split([4 * n, n, n, len(indices), len(blurred),
                                                              weights.numel()])
    x = resized_crop(images, *box.view(n, 4).unbind(1))
    x = torch.where(_col(flip.bool()), x.flip(-1), x)
    x = color_jitter(x, factors, indices, counts)
    x = torch.where(_col(grey.bool()), _grayscale(x).to(torch.uint8).expand_as(x), x)
    if len(blurred):
        x[blurred] = gaussian_blur(x[blurred], weights.view(len(blurred), -1))
    return x
