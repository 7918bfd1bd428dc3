"""The pixel ops of the batched augmentation, each pixel-for-pixel equal to Pillow's, and the
RandAugment pool.

Every op is pixel-for-pixel equal to Pillow's, for all magnitudes the pool uses (checked
against PIL itself in tests/test_tensor_augment.py, at 16x16, 32x32 and 64x64): flip, the
reflect-padded crop, auto_contrast, brightness, color, contrast, equalize, identity,
posterize, rotate, sharpness, shear_x, shear_y, solarize, translate_x, translate_y and
cutout; so RandAugmentMC with given draws equals augment.RandAugmentMC fed the same draws.
No op needs a tolerance. This holds because Pillow's arithmetic is reproduced, not just
its formulas:

- enhance (brightness, color, contrast, sharpness) is Image.blend(degenerate, image, f):
  float32 `deg + f * (img - deg)`, truncated (not rounded), clipped when extrapolating;
  f is the magnitude rounded to float32. Color's degenerate is PIL's "L":
  (19595 R + 38470 G + 7471 B + 0x8000) >> 16; contrast's is int(mean(L) + 0.5); sharpness's
  is the SMOOTH filter: PIL's float32 sum with a +0.5 offset, truncated, which equals the
  integer (2 S + 13) // 26 of the weighted sum S; the one-pixel border is the input's.
- auto_contrast / equalize build the per-channel lookup tables of PIL.ImageOps (equalize:
  step = (count - count of the top value) // 255, entries clipped to 255 by Image.point).
- rotate / shear / translate reproduce Pillow's nearest-neighbour affine transform, which
  works in 16.16 fixed point (whenever the mapped corners stay within 32768 pixels, so at
  any practical size): each coefficient is rounded to floor(c * 65536 + 0.5), the offset
  includes the half-pixel shift (c + a/2 + b/2), and the source pixel is the integer
  coordinate >> 16; black outside. Floor of the float coordinate differs from PIL at exact
  ties (shear 0.12 at row 12, say). For integer translations PIL's scaling path is an exact
  shift, the same as here.
  rotate builds PIL's matrix (cos/sin of -angle rounded to 15 decimals, about (w/2, h/2));
  for integer angles from a table computed with Python's math as PIL does.
- magnitudes come from tables made with augment._float_parameter / _int_parameter, so
  they equal the reference's doubles (a float64 division on the GPU may be a reciprocal
  multiplication, which is why no division by a scalar is done on the device).
"""
import math

import torch

from dataset import augment as _ref

_N_OPS = len(_ref.FIXMATCH_POOL)


# ---------------------------------------------------------------- helpers

_TABLES = {}


def _table(key, make, dtype, device):
    """A constant tensor computed on the host by make(), cached per device."""
    if (key, str(device)) not in _TABLES:
        _TABLES[key, str(device)] = torch.as_tensor(make(), dtype=dtype).to(device)
    return _TABLES[key, str(device)]


def _col(t, dims=4):
    """(N,) -> (N, 1, ...) of `dims` dimensions, for per-sample parameters."""
    return t.view(-1, *(1,) * (dims - 1))


def _grid(h, w, device):
    """(rows (h, 1), cols (1, w)): the pixel coordinates of an HxW image, int64, cached per device."""
    return (_table(('rows', h), lambda: torch.arange(h).view(h, 1), torch.int64, device),
            _table(('cols', w), lambda: torch.arange(w).view(1, w), torch.int64, device))


def _gather_pixels(x, index):
    """x (N, C, H, W), index (N, H', W') of flat positions y * W + x -> (N, C, H', W')."""
    n, c = x.shape[:2]
    flat = index.reshape(n, 1, -1).expand(n, c, -1)
    return x.reshape(n, c, -1).gather(2, flat).view(n, c, *index.shape[1:])


def _apply_lut(x, lut):
    """Per sample and channel lookup: x (N, C, H, W) uint8, lut (N, C, 256) -> uint8."""
    n, c = x.shape[:2]
    return lut.to(torch.uint8).expand(n, c, 256).gather(2, x.reshape(n, c, -1).long()).view_as(x)


def _histogram(x):
    """(N, C, 256) int64 per-channel histograms of a uint8 batch (scatter_add_, not bincount: on
    CUDA bincount reads its range back)."""
    n, c = x.shape[:2]
    one = _table('one', lambda: 1, torch.int64, x.device)
    pixels = x.reshape(n, c, -1).long()
    return torch.zeros(n, c, 256, dtype=torch.long, device=x.device).scatter_add_(2, pixels, one.expand_as(pixels))


def _channel_range(x):
    """(lo, hi): the per-channel minimum and maximum of a batch of 0..255 values, (N, C) int64 each.
    Reduced in int32: torch.compile's CPU code for the minimum of uint8 values (torch 2.14) gives 0
    where it is not."""
    lo, hi = x.reshape(*x.shape[:2], -1).int().aminmax(dim=2)
    return lo.long(), hi.long()


def _grayscale(x):
    """PIL's RGB -> "L": (R*19595 + G*38470 + B*7471 + 0x8000) >> 16, as (N, 1, H, W) int32."""
    r, g, b = x.int().unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(1)


def _blend(degenerate, image, factor):
    """PIL Image.blend(degenerate, image, factor): float32 deg + f * (img - deg), truncated,
    clipped to 0..255 (PIL only clips when extrapolating; inside [0, 1] it cannot leave it).
    `factor` (N,) per sample of `image` (N, ...); factor 1 gives `image` exactly."""
    f = _col(factor.to(torch.float32), image.dim())
    deg = degenerate.to(torch.float32)
    diff = image.to(torch.float32) - deg       # exact: small integers
    return (deg + f * diff).clamp(0, 255).to(torch.uint8)   # two roundings, as PIL; no FMA


# ---------------------------------------------------------------- magnitudes

def float_parameter(v, max_v):
    """float(v) * max_v / 10 for an integer tensor v in 0..10 (float64, as augment.py)."""
    make = lambda: [_ref._float_parameter(i, max_v) for i in range(11)]   # noqa: E731
    return _table(('float', max_v), make, torch.float64, v.device)[v.long()]


def int_parameter(v, max_v):
    """int(v * max_v / 10) for an integer tensor v in 0..10 (int64, as augment.py)."""
    make = lambda: [_ref._int_parameter(i, max_v) for i in range(11)]     # noqa: E731
    return _table(('int', max_v), make, torch.int64, v.device)[v.long()]


# ---------------------------------------------------------------- colour ops

def identity(x):
    return x.clone()


def auto_contrast_lut(lo, hi):
    """PIL.ImageOps.autocontrast's (cutoff 0) per-channel table from the channels' range (lo, hi)
    (N, C): lut[i] = clip(int(i*scale + offset)), scale = 255 / (hi - lo), offset = -lo * scale;
    identity where hi == lo. (N, C, 256) float64."""
    scales = _table('scale', lambda: [1.0] + [255.0 / d for d in range(1, 256)], torch.float64, lo.device)
    scale = scales[hi - lo].unsqueeze(-1)
    offset = (-lo).double().unsqueeze(-1) * scale
    i = _table('values_double', lambda: range(256), torch.float64, lo.device)
    lut = (i * scale + offset).trunc().clamp(0, 255)
    return torch.where((hi > lo).unsqueeze(-1), lut, i)


def auto_contrast(x):
    """PIL.ImageOps.autocontrast (cutoff 0) per channel (auto_contrast_lut)."""
    return _apply_lut(x, auto_contrast_lut(*_channel_range(x)))


def equalize_lut(hist, lo, hi, total: int):
    """PIL.ImageOps.equalize's per-channel table from the histograms (N, C, 256) of images of
    `total` pixels and their range (lo, hi) (N, C): step = (total - count of the top value) // 255,
    lut[i] = (step // 2 + pixels below i) // step, clipped to 255; identity when a channel has one
    value or step == 0. (N, C, 256) int64."""
    step = (total - hist.gather(2, hi.unsqueeze(-1))) // 255            # (N, C, 1)
    below = hist.cumsum(2) - hist
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    keep = (hi == lo).unsqueeze(-1) | (step == 0)
    return torch.where(keep, _table('values', lambda: range(256), torch.int64, hist.device), lut)


def equalize(x):
    """PIL.ImageOps.equalize per channel (equalize_lut)."""
    return _apply_lut(x, equalize_lut(_histogram(x), *_channel_range(x), x.shape[2] * x.shape[3]))


def brightness(x, factor):
    """ImageEnhance.Brightness: blend with black."""
    return _blend(torch.zeros_like(x), x, factor)


def color(x, factor):
    """ImageEnhance.Color: blend with the grayscale image."""
    return _blend(_grayscale(x).expand_as(x), x, factor)


def gray_mean(gray):
    """int(mean + 0.5) of each greyscale image (N, 1, H, W), exactly, in integers: (N,) int64."""
    n = gray[0].numel()
    s = gray.long().sum(dim=(1, 2, 3))
    return (2 * s + n) // (2 * n)            # = int(s / n + 0.5)


def contrast(x, factor):
    """ImageEnhance.Contrast: blend with a constant int(mean of the grayscale + 0.5)."""
    return _blend(_col(gray_mean(_grayscale(x))).expand_as(x), x, factor)


def _smooth(x):
    """PIL's ImageFilter.SMOOTH, kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, border pixels copied.

    PIL sums in float32 with the kernel float32(1/13), float32(5/13) and a +0.5 offset, then
    truncates: floor(S / 13 + 0.5) for the integer weighted sum S. S / 13 + 0.5 is never
    closer than 1/26 to an integer, far beyond float32's error, so the exact integer
    (2 S + 13) // 26 is the same value. Of x's dtype (uint8, or int32 in RandAugmentMC's pass)."""
    s = x.to(torch.int32)
    rows = s[:, :, :-2] + s[:, :, 1:-1] + s[:, :, 2:]
    total = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:] + 4 * s[:, :, 1:-1, 1:-1]
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = ((2 * total + 13) // 26).to(torch.uint8)
    return out


def sharpness(x, factor):
    """ImageEnhance.Sharpness: blend with the SMOOTH-filtered image."""
    return _blend(_smooth(x), x, factor)


def posterize_mask(bits):
    """The bit mask that keeps the top `bits` (0..8) bits of a byte, int64."""
    return (0xFF << (8 - bits.long())) & 0xFF


def posterize(x, bits):
    """Keep the top `bits` bits of each value (PIL.ImageOps.posterize)."""
    return x & _col(posterize_mask(bits).to(torch.uint8))


def solarize(x, threshold):
    """Values >= threshold become 255 - value (PIL.ImageOps.solarize); 256 changes nothing."""
    return torch.where(x.to(torch.int16) >= _col(threshold.to(torch.int16)), 255 - x, x)


# ---------------------------------------------------------------- geometric ops

def fixed_point(matrix):
    """PIL's 16.16 fixed-point form of affine coefficients (a, b, c, d, e, f), (N, 6) float64 ->
    (N, 6) int64: each rounded to floor(v * 65536 + 0.5), the offsets c and f with the half-pixel
    shift (c + a/2 + b/2, f + d/2 + e/2) folded in."""
    a, b, c, d, e, f = matrix.to(torch.float64).unbind(1)
    shifted = torch.stack([a, b, c + a * 0.5 + b * 0.5, d, e, f + d * 0.5 + e * 0.5], 1)
    return torch.floor(shifted * 65536.0 + 0.5).long()


def affine_fixed(x, coefficients):
    """Nearest-neighbour affine transform with fixed_point() coefficients (N, 6) int64: output
    pixel (i, j) reads input ((C + B i + A j) >> 16, (F + E i + D j) >> 16); black outside.
    Both source coordinates at once, in twelve operations whatever N."""
    n, _, h, w = x.shape
    m = coefficients.unflatten(1, (2, 3, 1, 1))                 # (N, 2, 3, 1, 1): (a b c), (d e f)
    rows, cols = _grid(h, w, x.device)
    source = (m[:, :, 2] + m[:, :, 1] * rows + m[:, :, 0] * cols) >> 16    # (N, 2, H, W): x, y
    per_coordinate = lambda key, values: _table(key, lambda: torch.tensor(values).view(1, 2, 1, 1),  # noqa: E731
                                                torch.int64, x.device)
    clamped = source.clamp(per_coordinate('zero2', [0, 0]), per_coordinate(('last', w, h), [w - 1, h - 1]))
    inside = (clamped == source).all(1, keepdim=True)                      # (N, 1, H, W)
    return torch.where(inside, _gather_pixels(x, (clamped * per_coordinate(('stride', w), [1, w])).sum(1)), 0)


def affine(x, matrix):
    """PIL img.transform(size, AFFINE, (a, b, c, d, e, f), NEAREST) per sample, matrix (N, 6)
    float64: output pixel (i, j) reads input (a j + b i + c, d j + e i + f) after the
    half-pixel shift, in PIL's 16.16 fixed point; black outside the input."""
    return affine_fixed(x, fixed_point(matrix))


def _pil_cos_sin(angle):
    a = -math.radians(angle % 360.0)
    return round(math.cos(a), 15), round(math.sin(a), 15)


def _cos_sin(degrees):
    """PIL's round(cos(-radians(deg % 360)), 15) and the sin likewise, float64 (N,) each:
    exactly Python's values for integer degrees (table), torch's float64 otherwise."""
    table = _table('cos_sin', lambda: [_pil_cos_sin(k) for k in range(360)], torch.float64, degrees.device)
    deg = degrees.to(torch.float64)
    integral = deg == deg.round()
    cs = table[deg.round().long().remainder(360)]
    rad = -(deg.remainder(360.0) * (math.pi / 180.0))
    approx = torch.stack([rad.cos(), rad.sin()], 1).round(decimals=15)
    cs = torch.where(integral.unsqueeze(1), cs, approx)
    return cs[:, 0], cs[:, 1]


def rotate_matrix(degrees, height, width, exact=False):
    """Image.rotate(degrees)'s matrix: counter-clockwise about (w/2, h/2), (N, 6) float64. `exact`:
    the cosines and sines of any angle Python's (a plan's continuous angles, on the host)."""
    if exact:
        cos, sin = torch.tensor([_pil_cos_sin(float(d)) for d in degrees], dtype=torch.float64).view(-1, 2).unbind(1)
    else:
        cos, sin = _cos_sin(degrees)
    cx, cy = width / 2, height / 2
    c = (cos * -cx + sin * -cy) + cx          # Image.rotate's transform(-centre) + centre
    f = (-sin * -cx + cos * -cy) + cy
    return torch.stack([cos, sin, c, -sin, cos, f], 1)


def _matrix(values, entry):
    """The identity affine matrix with `entry` ('a'..'f') set to `values`, (N, 6) float64."""
    m = torch.zeros(len(values), 6, dtype=torch.float64, device=values.device)
    m[:, 0] = m[:, 4] = 1
    m[:, 'abcdef'.index(entry)] = values.to(torch.float64)
    return m


def shear_x_matrix(s, height, width):
    """(1, s, 0, 0, 1, 0): output (i, j) reads (j + s i, i)."""
    return _matrix(s, 'b')


def shear_y_matrix(s, height, width):
    """(1, 0, 0, s, 1, 0)."""
    return _matrix(s, 'd')


def translate_x_matrix(pixels, height, width):
    """(1, 0, px, 0, 1, 0): content moves left by px."""
    return _matrix(pixels, 'c')


def translate_y_matrix(pixels, height, width):
    """(1, 0, 0, 0, 1, px): content moves up by px."""
    return _matrix(pixels, 'f')


# the geometric ops of the pool: their affine matrices, so a slot transforms them all at once
MATRICES = {'rotate': rotate_matrix, 'shear_x': shear_x_matrix, 'shear_y': shear_y_matrix,
            'translate_x': translate_x_matrix, 'translate_y': translate_y_matrix}


def rotate(x, degrees):
    """PIL img.rotate(degrees): counter-clockwise about (w/2, h/2), nearest, black fill."""
    return affine(x, rotate_matrix(degrees, *x.shape[2:]))


def shear_x(x, s):
    """img.transform(size, AFFINE, (1, s, 0, 0, 1, 0))."""
    return affine(x, shear_x_matrix(s, *x.shape[2:]))


def shear_y(x, s):
    """img.transform(size, AFFINE, (1, 0, 0, s, 1, 0))."""
    return affine(x, shear_y_matrix(s, *x.shape[2:]))


def translate_x(x, pixels):
    """img.transform(size, AFFINE, (1, 0, px, 0, 1, 0))."""
    return affine(x, translate_x_matrix(pixels, *x.shape[2:]))


def translate_y(x, pixels):
    """img.transform(size, AFFINE, (1, 0, 0, 0, 1, px))."""
    return affine(x, translate_y_matrix(pixels, *x.shape[2:]))


def cutout(x, x0, y0, x1, y1, out=None, fill=None):
    """Grey 127 (or the RGB `fill`) over the inclusive rectangle [x0..x1] x [y0..y1] (PIL rectangle),
    clipped; the result goes into `out` when given (RandAugmentMC writes its views in place)."""
    h, w = x.shape[2:]
    rows, cols = _grid(h, w, x.device)
    box = ((cols >= _col(x0, 3)) & (cols <= _col(x1, 3)) & (rows >= _col(y0, 3)) & (rows <= _col(y1, 3)))
    colour = _table('grey', lambda: 127, torch.uint8, x.device) if fill is None else \
        _table(('fill', tuple(fill)), lambda: torch.tensor(fill).view(1, 3, 1, 1), torch.uint8, x.device)
    return torch.where(box.unsqueeze(1), colour, x, out=out)


def cutout_box(cx, cy, v, height, width):
    """augment.cutout_abs's rectangle from a centre (cx, cy) in pixels (float64 tensors):
    x0 = int(max(0, cx - v/2)), x1 = int(min(w, x0 + v)), likewise y; int64 each."""
    x0 = (cx - v / 2.).clamp(min=0).trunc().long()
    y0 = (cy - v / 2.).clamp(min=0).trunc().long()
    return x0, y0, (x0 + v).clamp(max=width), (y0 + v).clamp(max=height)


# ---------------------------------------------------------------- the pool

def _signed(t, sign):
    return t * sign.to(t.dtype)


# name -> (op, parameter(v, sign, max_v, bias, height, width) or None); the order, max_v and
# bias are those of augment.FIXMATCH_POOL.
_PARAMS = {
    'auto_contrast': (auto_contrast, None),
    'brightness': (brightness, lambda v, s, m, b, h, w: float_parameter(v, m) + b),
    'color': (color, lambda v, s, m, b, h, w: float_parameter(v, m) + b),
    'contrast': (contrast, lambda v, s, m, b, h, w: float_parameter(v, m) + b),
    'equalize': (equalize, None),
    'identity': (identity, None),
    'posterize': (posterize, lambda v, s, m, b, h, w: int_parameter(v, m) + b),
    'rotate': (rotate, lambda v, s, m, b, h, w: _signed(int_parameter(v, m) + b, s)),
    'sharpness': (sharpness, lambda v, s, m, b, h, w: float_parameter(v, m) + b),
    'shear_x': (shear_x, lambda v, s, m, b, h, w: _signed(float_parameter(v, m) + b, s)),
    'shear_y': (shear_y, lambda v, s, m, b, h, w: _signed(float_parameter(v, m) + b, s)),
    'solarize': (solarize, lambda v, s, m, b, h, w: 256 - (int_parameter(v, m) + b)),
    'translate_x': (translate_x,
                    lambda v, s, m, b, h, w: (_signed(float_parameter(v, m) + b, s) * w).trunc()),
    'translate_y': (translate_y,
                    lambda v, s, m, b, h, w: (_signed(float_parameter(v, m) + b, s) * h).trunc()),
}

# (name, op, parameter function, max_v, bias), in augment.FIXMATCH_POOL's order.
POOL = [(fn.__name__, _PARAMS[fn.__name__][0], _PARAMS[fn.__name__][1], max_v, bias)
        for fn, max_v, bias in _ref.FIXMATCH_POOL]
SIGNED = ('rotate', 'shear_x', 'shear_y', 'translate_x', 'translate_y')


def op_parameter(index, v, sign, height, width):
    """Pool op `index`'s parameter at integer magnitudes v (N,) and signs (N,) of +-1 (the
    reference's random sign replaced by `sign`); None for the ops without one."""
    name, op, param, max_v, bias = POOL[index]
    return None if param is None else param(v, sign, max_v, bias, height, width)


def apply_op(index, images, v, sign):
    """Pool op `index` at integer magnitudes v (N,) and signs (N,) of +-1, as the reference
    op(img, v, max_v, bias) with its random sign replaced by `sign`."""
    parameter = op_parameter(index, v, sign, *images.shape[2:])
    op = POOL[index][1]
    return op(images) if parameter is None else op(images, parameter)


def send(host, like):
    """A host tensor on the device of `like`, from pinned memory when that is a GPU, so that the
    copy is queued without waiting for the GPU."""
    if like.is_cuda:
        host = host.pin_memory()
    return host.to(like.device, non_blocking=True)
