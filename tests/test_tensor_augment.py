"""Tests for dataset/tensor_augment/: each batched op equals PIL / dataset/augment.py pixel
for pixel, RandAugmentMC with given draws equals the reference fed the same draws, the draw
statistics, determinism, and normalize against torchvision."""
import random
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision import transforms

from dataset import augment as A
from dataset import tensor_augment as T

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2471, 0.2435, 0.2616)
NAMES = [fn.__name__ for fn, _, _ in A.FIXMATCH_POOL]
SIGNED = {'rotate', 'shear_x', 'shear_y', 'translate_x', 'translate_y'}


def batch(arrays):
    """HWC uint8 arrays -> (N, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def pil(t):
    return Image.fromarray(t.permute(1, 2, 0).numpy())


def arr(img):
    return np.asarray(img)


def sample_images(size, count=8, seed=0):
    """Images with varied statistics, so that every lookup table and blend is exercised:
    full range, narrow range, few values, constant, one flat channel, dark, bright, smooth;
    cycled (with fresh noise) when more than 8 are asked for."""
    rng = np.random.RandomState(seed + size)
    shape = (size, size, 3)
    yy, xx = np.mgrid[0:size, 0:size]
    smooth = np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // size], -1)

    def make(kind):
        if kind == 2:
            few = np.array([10, 20, 200, 201])[rng.randint(0, 4, shape)]
            few[: size // 2, :, 2] = 200             # a channel with a dominant top value
            return few
        if kind == 4:
            one_flat = rng.randint(0, 256, shape)
            one_flat[..., 1] = 60
            return one_flat
        if kind == 7:
            return np.clip(smooth + rng.randint(-8, 9, shape), 0, 255)
        return {0: lambda: rng.randint(0, 256, shape), 1: lambda: rng.randint(40, 91, shape),
                3: lambda: np.full(shape, 77), 5: lambda: rng.randint(0, 31, shape),
                6: lambda: rng.randint(200, 256, shape)}[kind]()

    return batch([make(k % 8).astype(np.uint8) for k in range(count)])


@contextmanager
def fixed_sign(sign):
    """The reference's _random_sign keeps the magnitude for sign +1, negates it for -1."""
    with mock.patch.object(random, 'random', lambda: 0.9 if sign > 0 else 0.1):
        yield


def reference_op(index, img, v, sign):
    fn, max_v, bias = A.FIXMATCH_POOL[index]
    with fixed_sign(sign):
        return arr(fn(img, v=v, max_v=max_v, bias=bias))


def assert_images_equal(out, ref, what):
    out = out.permute(1, 2, 0).numpy()
    bad = (out != ref).any(-1)
    assert not bad.any(), f'{what}: {bad.sum()} pixels differ, first at {np.argwhere(bad)[0]}'


# ---------------------------------------------------------------- pool and magnitudes

def test_pool_matches_reference():
    assert [p[0] for p in T.POOL] == NAMES
    assert [(p[3], p[4]) for p in T.POOL] == [(m, b) for _, m, b in A.FIXMATCH_POOL]
    assert set(T.SIGNED) == SIGNED
    for name, op, _, _, _ in T.POOL:
        assert op is getattr(T, name)


def test_magnitude_mapping():
    v = torch.arange(11)
    for _, max_v, _ in A.FIXMATCH_POOL:
        if max_v is None:
            continue
        assert T.float_parameter(v, max_v).tolist() == [A._float_parameter(i, max_v) for i in range(11)]
        assert T.int_parameter(v, max_v).tolist() == [A._int_parameter(i, max_v) for i in range(11)]
    assert T.float_parameter(v, 0.9).dtype == torch.float64
    assert T.int_parameter(torch.tensor([9]), 4).item() == 3      # int(3.6): truncated


# ---------------------------------------------------------------- every op, exactly PIL

@pytest.mark.parametrize('size, count', [(32, 8), (16, 4), (64, 4)])
@pytest.mark.parametrize('index', range(len(NAMES)), ids=NAMES)
def test_pool_op_equals_pil(index, size, count):
    """Every op at every magnitude 1..9 (and both signs), several magnitudes in one batch."""
    x = sample_images(size, count)
    before = x.clone()
    for sign in ([1, -1] if NAMES[index] in SIGNED else [1]):
        for shift in range(9):
            v = (torch.arange(count) + shift) % 9 + 1
            out = T.apply_op(index, x, v, torch.full((count,), sign))
            assert out.dtype == torch.uint8 and out.shape == x.shape
            for i in range(count):
                ref = reference_op(index, pil(x[i]), int(v[i]), sign)
                assert_images_equal(out[i], ref, f'{NAMES[index]} v={int(v[i])} sign={sign} image {i}')
    assert torch.equal(x, before)                     # ops do not modify their input


def test_enhance_outside_pool_range():
    """Factors 0, 1 and extrapolation (> 1, clipped) equal ImageEnhance too."""
    x = sample_images(32)
    ops = {'brightness': ImageEnhance.Brightness, 'color': ImageEnhance.Color,
           'contrast': ImageEnhance.Contrast, 'sharpness': ImageEnhance.Sharpness}
    for name, enhancer in ops.items():
        for f in (0.0, 1.0, 1.3, 1.9, 3.0):
            out = getattr(T, name)(x, torch.full((len(x),), f, dtype=torch.float64))
            for i in range(len(x)):
                assert_images_equal(out[i], arr(enhancer(pil(x[i])).enhance(f)), f'{name} {f} image {i}')


def test_posterize_solarize_all_parameters():
    x = sample_images(16)
    for bits in range(1, 9):
        out = T.posterize(x, torch.full((len(x),), bits))
        for i in range(len(x)):
            assert_images_equal(out[i], arr(ImageOps.posterize(pil(x[i]), bits)), f'posterize {bits}')
    for t in (0, 1, 128, 255, 256):
        out = T.solarize(x, torch.full((len(x),), t))
        for i in range(len(x)):
            assert_images_equal(out[i], arr(ImageOps.solarize(pil(x[i]), t)), f'solarize {t}')
    assert torch.equal(T.solarize(x, torch.full((len(x),), 256)), x)


@pytest.mark.parametrize('size', [(32, 32), (20, 31)])   # (H, W), square and not
def test_rotate_any_angle(size):
    """Angles outside the pool: multiples of 90 (PIL transposes), large and fractional ones."""
    h, w = size
    rng = np.random.RandomState(1)
    x = batch([rng.randint(0, 256, (h, w, 3)).astype(np.uint8) for _ in range(2)])
    for deg in (0, 90, 180, 270, -90, 45, 100, 359, 720, 7.5, -13.7, 33.3):
        out = T.rotate(x, torch.full((2,), deg, dtype=torch.float64))
        for i in range(2):
            assert_images_equal(out[i], arr(pil(x[i]).rotate(deg)), f'rotate {deg}')


def test_shear_translate_parameters_outside_pool():
    x = sample_images(32, 4)
    for s in (0.12, -0.5, 1.0, 0.333):
        sx = T.shear_x(x, torch.full((4,), s, dtype=torch.float64))
        sy = T.shear_y(x, torch.full((4,), s, dtype=torch.float64))
        for i in range(4):
            assert_images_equal(sx[i], arr(pil(x[i]).transform((32, 32), Image.AFFINE, (1, s, 0, 0, 1, 0))), 'x')
            assert_images_equal(sy[i], arr(pil(x[i]).transform((32, 32), Image.AFFINE, (1, 0, 0, s, 1, 0))), 'y')
    for px in (-40, -31, 0, 1, 31, 32):
        tx = T.translate_x(x, torch.full((4,), px))
        ty = T.translate_y(x, torch.full((4,), px))
        for i in range(4):
            assert_images_equal(tx[i], arr(pil(x[i]).transform((32, 32), Image.AFFINE, (1, 0, px, 0, 1, 0))), 'tx')
            assert_images_equal(ty[i], arr(pil(x[i]).transform((32, 32), Image.AFFINE, (1, 0, 0, 0, 1, px))), 'ty')


def test_affine_uses_pil_fixed_point():
    """The fixed-point rule matters: float floor(x + 0.5 + s (y + 0.5)) reads another pixel
    than PIL at exact ties (shear 0.12 at row 12), and the op follows PIL there."""
    x = sample_images(32, 1)
    out = T.shear_x(x, torch.tensor([0.12], dtype=torch.float64))[0].permute(1, 2, 0).numpy()
    ref = arr(pil(x[0]).transform((32, 32), Image.AFFINE, (1, 0.12, 0, 0, 1, 0)))
    col = int(np.floor(0 + 0.5 + 0.12 * 12.5))                   # 2 in float arithmetic
    assert col == 2 and (ref[12, 0] == arr(pil(x[0]))[12, 1]).all()   # PIL reads column 1
    assert (out == ref).all()


# ---------------------------------------------------------------- cutout

@pytest.mark.parametrize('size, v', [(32, 16), (64, 16), (16, 5), (32, 0)])
def test_cutout_equals_reference(size, v):
    x = sample_images(size)
    n = len(x)
    rng = np.random.RandomState(size + v)
    centres = rng.uniform(0, size, (n, 2))
    centres[:4] = [[0.0, 0.0], [size - 1e-9, size - 1e-9], [size / 2, 0.3], [v / 2, size - v / 2 - 0.5]]
    c = torch.from_numpy(centres)
    out = T.cutout(x, *T.cutout_box(c[:, 0], c[:, 1], v, size, size))
    for i in range(n):
        values = list(centres[i])
        with mock.patch.object(np.random, 'uniform', lambda lo, hi: values.pop(0)):
            ref = arr(A.cutout_abs(pil(x[i]), v))
        assert_images_equal(out[i], ref, f'cutout {centres[i]}')


def test_cutout_inclusive_rectangle():
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    out = T.cutout(x, torch.tensor([8, 23]), torch.tensor([2, 0]), torch.tensor([24, 32]), torch.tensor([18, 16]))
    assert (out[0, :, 2:19, 8:25] == 127).all() and (out[0] == 127).sum() == 3 * 17 * 17
    assert (out[1, :, 0:17, 23:32] == 127).all() and (out[1] == 127).sum() == 3 * 17 * 9


# ---------------------------------------------------------------- weak: flip and crop

@pytest.mark.parametrize('size', [16, 32, 64])
def test_flip_crop_equals_torchvision(monkeypatch, size):
    pad = T.crop_padding(size)
    assert pad == int(size * 0.125)
    x = sample_images(size)
    n = len(x)
    top = torch.tensor([0, 2 * pad, pad, 1, 2 * pad, 0, 3, pad][:n]) % (2 * pad + 1)
    left = torch.tensor([2 * pad, 0, pad, 2 * pad, 0, 1, 0, 2][:n]) % (2 * pad + 1)
    flips = torch.tensor([True, False] * (n // 2))
    out = T.flip_crop(x, flips, top, left, pad)
    crop = A.weak(size, flip=False)
    for i in range(n):
        monkeypatch.setattr(transforms.RandomCrop, 'get_params',
                            staticmethod(lambda img, output_size, i=i: (int(top[i]), int(left[i]), size, size)))
        img = pil(x[i])
        if flips[i]:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        assert_images_equal(out[i], arr(crop(img)), f'crop {int(top[i]), int(left[i])} flip {bool(flips[i])}')


@pytest.mark.parametrize('size', [32, 64])
def test_zero_padded_crop_then_flip_equals_torchvision(monkeypatch, size):
    """ACR_d's labeled view on the ImageNet variants: RandomCrop(S, padding=S/8) (black border), then
    RandomHorizontalFlip; the batched path runs it as a flip, then the crop at (top, 2 * pad - left)."""
    pad = T.crop_padding(size)
    x = sample_images(size)
    n = len(x)
    top = torch.tensor([0, 2 * pad, pad, 1, 2 * pad, 0, 3, pad][:n]) % (2 * pad + 1)
    left = torch.tensor([2 * pad, 0, pad, 2 * pad, 1, 0, 0, 2][:n]) % (2 * pad + 1)
    flips = torch.tensor([True, False, True, True, False, False, True, False][:n])
    mirrored_left = torch.where(flips, 2 * pad - left, left)
    out = T.flip_crop(x, flips, top, mirrored_left, pad, zero_pad=torch.ones(n, dtype=torch.bool))
    view = A.crop_flip(size)
    for i in range(n):
        monkeypatch.setattr(transforms.RandomCrop, 'get_params',
                            staticmethod(lambda img, output_size, i=i: (int(top[i]), int(left[i]), size, size)))
        monkeypatch.setattr(torch, 'rand', lambda *a, i=i, **k: torch.tensor([0.0 if flips[i] else 1.0]))
        assert_images_equal(out[i], arr(view(pil(x[i]))), f'crop {int(top[i]), int(left[i])} flip {bool(flips[i])}')
    assert (out[0, :, :, :pad] == 0).all() and (out[1, :, -pad:] == 0).all()  # the black borders
    mixed = T.flip_crop(x, flips, top, mirrored_left, pad, zero_pad=torch.arange(n) % 2 == 0)
    reflect = T.flip_crop(x, flips, top, mirrored_left, pad)
    assert torch.equal(mixed[::2], out[::2]) and torch.equal(mixed[1::2], reflect[1::2])


def test_weak_uses_drawn_flip_and_offsets():
    x = sample_images(32)
    g = torch.Generator().manual_seed(5)
    out = T.weak(x, g)
    g.manual_seed(5)
    flips, top, left = T.draw_weak(len(x), 32, g)
    assert torch.equal(out, T.flip_crop(x, flips, top, left, 4))
    g.manual_seed(5)
    out = T.weak(x, g, flip=False)
    g.manual_seed(5)
    flips, top, left = T.draw_weak(len(x), 32, g, flip=False)
    assert not flips.any()
    assert torch.equal(out, T.flip_crop(x, flips, top, left, 4))


# ---------------------------------------------------------------- RandAugmentMC and strong

def reference_randaugment(img, draws, i, cutout=16):
    """augment.RandAugmentMC(2, 10) fed the draws of sample i through its random sources."""
    ops = [A.FIXMATCH_POOL[k] for k in draws.op[i].tolist()]
    mags = draws.magnitude[i].tolist()
    coins = []
    for j, (fn, _, _) in enumerate(ops):
        applied = bool(draws.apply[i, j])
        coins.append(0.25 if applied else 0.75)
        if applied and fn.__name__ in SIGNED:
            coins.append(0.25 if draws.sign[i, j] < 0 else 0.75)
    w, h = img.size
    centre = [float(draws.centre[i, 0]) * w, float(draws.centre[i, 1]) * h]
    with mock.patch.object(random, 'choices', lambda pool, k: ops), \
            mock.patch.object(np.random, 'randint', lambda lo, hi: mags.pop(0)), \
            mock.patch.object(random, 'random', lambda: coins.pop(0)), \
            mock.patch.object(np.random, 'uniform', lambda lo, hi: centre.pop(0)):
        out = A.RandAugmentMC(2, 10, cutout)(img)
    assert not (mags or coins or centre)
    return arr(out)


@pytest.mark.parametrize('size, count', [(32, 128), (64, 16)])
def test_randaugment_equals_reference(size, count):
    x = sample_images(size, count)
    ra = T.RandAugmentMC(2, 10)
    g = torch.Generator().manual_seed(size)
    draws = ra.draw(count, g)
    out = ra.apply(x, draws)
    g.manual_seed(size)
    assert torch.equal(ra(x, g), out)                 # __call__ = apply(draw)
    for i in range(count):
        assert_images_equal(out[i], reference_randaugment(pil(x[i]), draws, i), f'sample {i}')
    if count >= 128:                                  # every op applied in some slot
        used = draws.op[draws.apply]
        assert set(used.tolist()) == set(range(14))


@pytest.mark.parametrize('size', [32, 64])
def test_randaugment_slot_runs_the_drawn_op_with_its_parameters(size):
    """RandAugmentMC.apply's host-side plan (table lookups, the geometric ops merged into one
    affine transform) gives, for every op, magnitude 1..9 and sign, exactly apply_op's pixels."""
    x = sample_images(size, 18)
    v = torch.arange(18) % 9 + 1
    sign = torch.where(torch.arange(18) < 9, -1, 1)
    ra = T.RandAugmentMC(2, 10, cutout=0)
    centre = torch.zeros(18, 2, dtype=torch.float64)        # a cutout of side 0: one grey corner pixel
    for index in range(len(NAMES)):
        op = torch.full((18, 2), index)
        draws = T.Draws(op, torch.stack([v, v], 1), torch.tensor([[True, False]] * 18), torch.stack([sign, sign], 1),
                        centre)
        expected = T.apply_op(index, x, v, sign)
        expected[:, :, 0, 0] = 127
        assert torch.equal(ra.apply(x, draws), expected), NAMES[index]


def test_strong_is_weak_then_randaugment():
    x = sample_images(32)
    g = torch.Generator().manual_seed(11)
    out = T.strong(x, g, cutout=10)
    g.manual_seed(11)
    expected = T.RandAugmentMC(2, 10, cutout=10)(T.weak(x, g), g)
    assert torch.equal(out, expected)
    g.manual_seed(11)
    out = T.strong(x, g, flip=False)
    g.manual_seed(11)
    assert torch.equal(out, T.RandAugmentMC(2, 10, 16)(T.weak(x, g, flip=False), g))


# ---------------------------------------------------------------- statistics of the draws

def test_randaugment_draw_statistics():
    n = 20000
    d = T.RandAugmentMC(2, 10).draw(n, torch.Generator().manual_seed(0))
    assert d.op.shape == d.magnitude.shape == d.apply.shape == d.sign.shape == (n, 2)
    ops = torch.bincount(d.op.flatten(), minlength=14).numpy() / (2 * n)
    assert len(ops) == 14 and np.abs(ops - 1 / 14).max() < 0.006
    assert set(d.magnitude.unique().tolist()) == set(range(1, 10))          # never 0 or 10
    mags = torch.bincount(d.magnitude.flatten()).numpy()[1:] / (2 * n)
    assert np.abs(mags - 1 / 9).max() < 0.008
    assert abs(d.apply.double().mean().item() - 0.5) < 0.01
    assert set(d.sign.unique().tolist()) == {-1, 1}
    assert abs((d.sign < 0).double().mean().item() - 0.5) < 0.01
    # The two slots' coins are independent.
    both = (d.apply[:, 0] & d.apply[:, 1]).double().mean().item()
    assert abs(both - 0.25) < 0.01
    assert d.centre.dtype == torch.float64 and (d.centre >= 0).all() and (d.centre < 1).all()
    for axis in range(2):
        bins = torch.histc(d.centre[:, axis].float(), bins=10, min=0, max=1).numpy() / n
        assert np.abs(bins - 0.1).max() < 0.01
    assert T.RandAugmentMC(3, 5).draw(10, torch.Generator()).magnitude.max() <= 4


def test_weak_draw_statistics():
    n = 20000
    flips, top, left = T.draw_weak(n, 32, torch.Generator().manual_seed(1))
    assert abs(flips.double().mean().item() - 0.5) < 0.01
    for offsets in (top, left):
        assert offsets.min() == 0 and offsets.max() == 8                     # 0..2*pad
        assert np.abs(torch.bincount(offsets).numpy() / n - 1 / 9).max() < 0.01
    assert abs(torch.corrcoef(torch.stack([top, left]).double())[0, 1].item()) < 0.03
    _, top, _ = T.draw_weak(n, 8, torch.Generator().manual_seed(2))          # pad 1 at 8x8
    assert set(top.unique().tolist()) == {0, 1, 2}


def test_cutout_placement_on_tiny_images():
    """20,000 tiny 8x8 images, cutout side 2 (3x3 inclusive): the patch lands where the drawn
    centre says, x0 = int(max(0, cx - 1)) with cx uniform in [0, 8): 0 with probability 2/8,
    1..6 with 1/8 each, never 7; likewise y0."""
    n = 20000
    x = torch.zeros(n, 3, 8, 8, dtype=torch.uint8)
    ra = T.RandAugmentMC(2, 10, cutout=2)
    draws = ra.draw(n, torch.Generator().manual_seed(3))
    out = ra.apply(x, draws._replace(apply=torch.zeros_like(draws.apply)))
    grey = out[:, 0] == 127
    assert (out[:, 1:] == out[:, :1]).all() and ((out == 0) | grey.unsqueeze(1)).all()
    for axis, first in ((0, grey.any(1)), (1, grey.any(2))):         # columns, rows
        start = first.float().argmax(1)
        extent = first.sum(1)
        assert torch.equal(start, (draws.centre[:, axis] * 8 - 1).clamp(min=0).trunc().long())
        assert torch.equal(extent, (start + 2).clamp(max=7) - start + 1)
        counts = torch.bincount(start, minlength=8).numpy() / n
        assert abs(counts[0] - 2 / 8) < 0.015 and np.abs(counts[1:7] - 1 / 8).max() < 0.012
        assert counts[7] == 0


# ---------------------------------------------------------------- determinism, devices

def test_seeded_determinism_and_global_rng_untouched():
    x = sample_images(32)
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    outs = {}
    for seed in (0, 0, 1):
        g = torch.Generator().manual_seed(seed)
        outs.setdefault(seed, []).append((T.weak(x, g), T.strong(x, g)))
    (w0, s0), (w1, s1) = outs[0]
    assert torch.equal(w0, w1) and torch.equal(s0, s1)
    (w2, s2), = outs[1]
    assert not torch.equal(w0, w2) and not torch.equal(s0, s2)
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert (np.random.get_state()[1] == states[2]).all()


def test_device_agnostic():
    source = ''.join(path.read_text() for path in Path(T.__file__).parent.glob('*.py'))  # the package
    assert "'cuda'" not in source and "'cpu'" not in source and '"cuda"' not in source
    assert 'manual_seed' not in source and 'torch.random' not in source
    x = sample_images(32, 2)
    g = torch.Generator(device=x.device).manual_seed(0)
    for out in (T.weak(x, g), T.strong(x, g), T.normalize(x, MEAN, STD)):
        assert out.device == x.device


# ---------------------------------------------------------------- shapes and normalize

@pytest.mark.parametrize('size', [32, 64])
def test_views_shapes_and_dtypes(size):
    x = sample_images(size, 5)
    g = torch.Generator().manual_seed(0)
    for out in (T.weak(x, g), T.weak(x, g, flip=False), T.strong(x, g), T.strong(x, g, False, 8)):
        assert out.dtype == torch.uint8 and out.shape == (5, 3, size, size)
    assert T.normalize(x, MEAN, STD).dtype == torch.float32


def test_normalize_equals_torchvision():
    x = torch.cat([sample_images(32), torch.arange(256, dtype=torch.uint8).repeat(3 * 4).view(1, 3, 32, 32)])
    out = T.normalize(x, MEAN, STD)
    tv = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    assert out.shape == x.shape and out.dtype == torch.float32
    for i in range(len(x)):
        assert torch.equal(out[i], tv(pil(x[i])))            # bit for bit
        assert torch.equal(out[i], A.test_transform(MEAN, STD)(pil(x[i])))


# ---------------------------------------------------------------- USB's RandAugment

def reference_usb(img, op, u, cutout_u, corner):
    """augment.RandAugmentUSB(3, 5) fed given draws through its random sources: the ops, the
    uniforms of their values and of the cutout's side (python random), the cutout's corner (numpy)."""
    ops = [A.USB_POOL[k] for k in op]
    coins = [*u, cutout_u]
    corners = list(corner)
    with mock.patch.object(random, 'choices', lambda pool, k: ops), \
            mock.patch.object(random, 'random', lambda: coins.pop(0)), \
            mock.patch.object(np.random, 'uniform', lambda low: corners.pop(0)):
        out = A.RandAugmentUSB(3, 5)(img)
    assert not coins and (not corners or cutout_u == 0)
    return arr(out)


@pytest.mark.parametrize('size, count', [(32, 160), (64, 24)])
def test_usb_randaugment_equals_usbs_pil_code(size, count):
    """USB's ops at continuous values (every op, always applied), its random-side cutout in its
    colour, numpy's uniform(w) corner: pixel for pixel the PIL reference fed the same draws."""
    x = sample_images(size, count)
    ra = T.RandAugmentUSB(3, 5)
    g = torch.Generator().manual_seed(size)
    draws = ra.draw(count, g)
    g.manual_seed(size)
    op = torch.randint(0, 14, (count, 3), generator=g)
    u = torch.rand((count, 3), generator=g, dtype=torch.float64)
    cutout_u = torch.rand(count, generator=g, dtype=torch.float64)
    corner = torch.rand((count, 2), generator=g, dtype=torch.float64)
    assert torch.equal(draws.op, op) and torch.equal(draws.cutout, cutout_u * 0.5)
    out = ra.apply(x, draws)
    for i in range(count):
        pixels = [size + (1 - size) * float(c) for c in corner[i]]
        ref = reference_usb(pil(x[i]), op[i].tolist(), u[i].tolist(), float(cutout_u[i]), pixels)
        assert_images_equal(out[i], ref, f'sample {i}: {[A.USB_POOL[k][0] for k in op[i].tolist()]}')
    if count >= 160:
        assert set(op.flatten().tolist()) == set(range(14))


def test_usb_randaugment_values_and_cutout_edges():
    """Values at the ends of the ranges (posterize 4 bits and the int() of 7.99, solarize at 0 and at
    a fraction, rotate by a fraction of a degree) and a cutout of side 0 (none)."""
    x = sample_images(32, 6)
    names = [name for name, _, _ in A.USB_POOL]
    cases = [('posterize', 4.0), ('posterize', 7.99), ('solarize', 0.0), ('solarize', 100.5), ('rotate', -0.25),
             ('translate_x', 0.2999)]
    op = torch.tensor([[names.index(n)] * 3 for n, _ in cases])
    value = torch.tensor([[v] * 3 for _, v in cases], dtype=torch.float64)
    cutout = torch.tensor([0.0, 0.5 - 1e-9, 0.25, 0.1, 0.3, 0.0], dtype=torch.float64)
    corner = torch.tensor([[0.0, 0.0], [0.999, 0.5], [0.3, 0.7], [0.5, 0.5], [1 - 1e-12, 0.0], [0.2, 0.2]],
                          dtype=torch.float64)
    out = T.RandAugmentUSB(3, 5).apply(x, T.USBDraws(op, value, cutout, corner))
    for i, (name, v) in enumerate(cases):
        img = pil(x[i])
        for _ in range(3):
            img = A.usb_op(name, img, v)
        uniform = lambda low, c=list(corner[i].tolist()): low + (1 - low) * c.pop(0)  # noqa: E731
        with mock.patch.object(np.random, 'uniform', uniform):
            ref = arr(A.usb_cutout(img, float(cutout[i])))
        assert_images_equal(out[i], ref, f'{name} {v}')
