"""Tests for dataset/augment.py: each op's exact effect, Cutout, weak/strong, RandAugmentMC
statistics and draw order, and the per-method views."""
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from dataset import augment as A
from core.command_line import get_args_parser
from methods import METHODS

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2471, 0.2435, 0.2616)


def arr(img):
    return np.asarray(img).astype(int)


def gradient(size=16):
    """size x size RGB image holding every value 0..size*size-1 once (per channel)."""
    g = np.arange(size * size, dtype=np.uint8).reshape(size, size)
    return np.stack([g, g, g], -1)


def coords_image(size=32):
    """R encodes the column, G the row (4*i+1, never 0 so padding fill is visible), B random."""
    a = np.zeros((size, size, 3), np.uint8)
    a[..., 0] = np.arange(size)[None, :] * 4 % 250 + 1
    a[..., 1] = np.arange(size)[:, None] * 4 % 250 + 1
    a[..., 2] = np.random.RandomState(0).randint(0, 100, (size, size))
    return a


def random_image(size=32, high=100, seed=0):
    # Values < 127 so no original pixel can be mistaken for Cutout grey.
    return np.random.RandomState(seed).randint(0, high, (size, size, 3)).astype(np.uint8)


@pytest.fixture
def sign(monkeypatch):
    """sign(+1) keeps the magnitude's sign in signed ops, sign(-1) negates it."""
    def set_sign(s):
        monkeypatch.setattr(random, 'random', lambda: 0.9 if s > 0 else 0.1)
    return set_sign


def fix_crop(monkeypatch, top, left):
    monkeypatch.setattr(transforms.RandomCrop, 'get_params',
                        staticmethod(lambda img, output_size: (top, left) + tuple(output_size)))


# ---------------------------------------------------------------- pool and parameters

def test_pool_order_and_parameters():
    names = [op.__name__ for op, _, _ in A.FIXMATCH_POOL]
    assert names == ['auto_contrast', 'brightness', 'color', 'contrast', 'equalize', 'identity',
                     'posterize', 'rotate', 'sharpness', 'shear_x', 'shear_y', 'solarize',
                     'translate_x', 'translate_y']
    assert [(m, b) for _, m, b in A.FIXMATCH_POOL] == [
        (None, None), (0.9, 0.05), (0.9, 0.05), (0.9, 0.05), (None, None), (None, None),
        (4, 4), (30, 0), (0.9, 0.05), (0.3, 0), (0.3, 0), (256, 0), (0.3, 0), (0.3, 0)]


def test_parameter_helpers():
    assert A._float_parameter(5, 0.9) == pytest.approx(0.45)
    assert A._int_parameter(9, 4) == 3          # int(3.6), truncated
    assert A._int_parameter(1, 256) == 25       # int(25.6)
    assert A._int_parameter(3, 30) == 9


# ---------------------------------------------------------------- colour ops

def test_solarize_threshold():
    x = gradient()
    out = arr(A.solarize(Image.fromarray(x), 5, 256, 0))     # t = 128 -> threshold 128
    assert (out == np.where(x >= 128, 255 - x.astype(int), x)).all()
    out = arr(A.solarize(Image.fromarray(x), 1, 256, 0))     # t = 25 -> threshold 231
    assert (out == np.where(x >= 231, 255 - x.astype(int), x)).all()


@pytest.mark.parametrize('v, mask', [(1, 0xF0), (5, 0xFC), (9, 0xFE)])  # 4, 6, 7 bits
def test_posterize_bits(v, mask):
    x = gradient()
    assert (arr(A.posterize(Image.fromarray(x), v, 4, 4)) == (x & mask)).all()


def test_identity_auto_contrast_equalize():
    x = gradient()
    img = Image.fromarray(x)
    assert (arr(A.identity(img, 3, None, None)) == x).all()

    # [51..102] has scale 255/51 = 5 exactly, so the stretch (x - 51) * 5 is exact.
    narrow = np.linspace(51, 102, 16 * 16).round().astype(np.uint8).reshape(16, 16)
    narrow = np.stack([narrow] * 3, -1)
    out = arr(A.auto_contrast(Image.fromarray(narrow), 3, None, None))
    assert out.min() == 0 and out.max() == 255
    assert (out == (narrow.astype(int) - 51) * 5).all()

    quarters = np.zeros((32, 32, 3), np.uint8)
    quarters[8:16], quarters[16:24], quarters[24:] = 10, 20, 30
    out = arr(A.equalize(Image.fromarray(quarters), 3, None, None))
    assert sorted(np.unique(out)) == [0, 85, 171, 255]
    assert (out[:8] == 0).all() and (out[24:] == 255).all()


def test_brightness_color_contrast():
    c = np.full((4, 4, 3), 200, np.uint8)
    assert (arr(A.brightness(Image.fromarray(c), 5, 0.9, 0.05)) == 100).all()   # factor 0.5
    assert (arr(A.brightness(Image.fromarray(c), 9, 0.9, 0.05)) == 172).all()   # factor 0.86

    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 200          # grey level L = 200*299/1000 = 60; blend halfway
    assert (arr(A.color(Image.fromarray(red), 5, 0.9, 0.05)) == [130, 30, 30]).all()

    halves = np.zeros((4, 4, 3), np.uint8)
    halves[2:] = 200           # mean grey 100; factor 0.5 pulls 0/200 to 50/150
    out = arr(A.contrast(Image.fromarray(halves), 5, 0.9, 0.05))
    assert (out[:2] == 50).all() and (out[2:] == 150).all()


def test_sharpness_blurs_below_one():
    dot = np.zeros((7, 7, 3), np.uint8)
    dot[3, 3] = 255
    # SMOOTH kernel (1,1,1;1,5,1;1,1,1)/13: centre 98, neighbours 20; blended with factor f.
    out = arr(A.sharpness(Image.fromarray(dot), 5, 0.9, 0.05))        # f = 0.5
    assert out[3, 3, 0] == 176 and (out[2, 2:5, 0] == 10).all()
    out = arr(A.sharpness(Image.fromarray(dot), 9, 0.9, 0.05))        # f = 0.86
    assert out[3, 3, 0] == 233 and out[2, 3, 0] == 2


# ---------------------------------------------------------------- geometric ops

@pytest.mark.parametrize('v, deg', [(3, 9), (9, 27)])
def test_rotate_magnitude_and_sign(sign, v, deg):
    x = coords_image()
    img = Image.fromarray(x)
    sign(+1)
    assert (arr(A.rotate(img, v, 30, 0)) == arr(img.rotate(deg))).all()
    sign(-1)
    neg = arr(A.rotate(img, v, 30, 0))
    assert (neg == arr(img.rotate(-deg))).all()
    assert (neg != arr(img.rotate(deg))).any()


def test_rotate_direction(sign):
    # A blob right of centre: PIL's positive angle is counter-clockwise (blob moves up).
    x = np.zeros((32, 32, 3), np.uint8)
    x[15:17, 26:28] = 255
    img = Image.fromarray(x)
    sign(+1)
    up = np.argwhere(arr(A.rotate(img, 9, 30, 0))[..., 0] > 0)[:, 0].mean()
    sign(-1)
    down = np.argwhere(arr(A.rotate(img, 9, 30, 0))[..., 0] > 0)[:, 0].mean()
    assert up < 15 < 16 < down


@pytest.mark.parametrize('s', [1, -1])
def test_shear_x_and_y(sign, s):
    size = 32
    x = coords_image(size)
    img = Image.fromarray(x)
    sign(s)
    y_, x_ = np.mgrid[0:size, 0:size]
    k = 0.15 * s                                 # v=5: 5*0.3/10
    # Nearest sampling at pixel centres: output (x, y) reads input (x + k*y, y).
    col = np.floor(x_ + 0.5 + k * (y_ + 0.5)).astype(int)
    valid = (col >= 0) & (col < size)
    out = arr(A.shear_x(img, 5, 0.3, 0))
    assert (out[..., 0] == np.where(valid, x[0, np.clip(col, 0, size - 1), 0], 0)).all()
    assert (out[..., 1] == np.where(valid, x[..., 1], 0)).all()
    assert (~valid).sum() > 0                    # the shear really moves content out

    row = np.floor(y_ + 0.5 + k * (x_ + 0.5)).astype(int)
    valid = (row >= 0) & (row < size)
    out = arr(A.shear_y(img, 5, 0.3, 0))
    assert (out[..., 1] == np.where(valid, x[np.clip(row, 0, size - 1), 0, 1], 0)).all()
    assert (out[..., 0] == np.where(valid, x[..., 0], 0)).all()


@pytest.mark.parametrize('size, px', [(32, 8), (64, 17)])     # int(0.27 * size)
def test_translate_pixels(sign, size, px):
    x = coords_image(size)
    img = Image.fromarray(x)
    sign(+1)                                     # (1,0,px,...) reads x+px: content moves left
    out = arr(A.translate_x(img, 9, 0.3, 0))
    assert (out[:, :-px] == x[:, px:]).all() and (out[:, -px:] == 0).all()
    sign(-1)
    out = arr(A.translate_x(img, 9, 0.3, 0))
    assert (out[:, px:] == x[:, :-px]).all() and (out[:, :px] == 0).all()
    sign(+1)
    out = arr(A.translate_y(img, 9, 0.3, 0))
    assert (out[:-px] == x[px:]).all() and (out[-px:] == 0).all()
    sign(-1)
    out = arr(A.translate_y(img, 9, 0.3, 0))
    assert (out[px:] == x[:-px]).all() and (out[:px] == 0).all()


# ---------------------------------------------------------------- cutout

def fake_uniform(monkeypatch, values):
    calls = []
    values = list(values)

    def uniform(lo, hi):
        calls.append((lo, hi))
        return values.pop(0)
    monkeypatch.setattr(np.random, 'uniform', uniform)
    return calls


def changed_box(before, after):
    """Bounding box (rows, cols) of changed pixels, asserting they form a filled grey rectangle."""
    changed = (before != after).any(-1)
    rows, cols = np.nonzero(changed)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    assert changed[r0:r1, c0:c1].all() and changed.sum() == (r1 - r0) * (c1 - c0)
    assert (after[r0:r1, c0:c1] == 127).all()
    return (r0, r1), (c0, c1)


def test_cutout_inclusive_17px_square(monkeypatch):
    x = random_image()
    calls = fake_uniform(monkeypatch, [16.0, 10.0])     # centre (x=16, y=10)
    img = Image.fromarray(x)
    out = arr(A.cutout_abs(img, 16))
    assert calls == [(0, 32), (0, 32)]
    # x0 = 8, y0 = 2, x1 = 24, y1 = 18: both corners included -> 17x17.
    assert changed_box(x, out) == ((2, 19), (8, 25))
    assert (arr(img) == x).all()                         # input left untouched


def test_cutout_clipped_at_borders(monkeypatch):
    x = random_image()
    fake_uniform(monkeypatch, [0.0, 31.5])
    # x0 = 0, x1 = 16 (17 columns); y0 = int(23.5) = 23, y1 = 32 -> rows 23..31.
    assert changed_box(x, arr(A.cutout_abs(Image.fromarray(x), 16))) == ((23, 32), (0, 17))
    fake_uniform(monkeypatch, [31.9, 3.0])
    # x0 = 23, x1 = 32 -> columns 23..31; y0 = 0, y1 = 16 -> rows 0..16.
    assert changed_box(x, arr(A.cutout_abs(Image.fromarray(x), 16))) == ((0, 17), (23, 32))


def test_cutout_64_keeps_side_16(monkeypatch):
    assert A.CUTOUT == 16
    x = random_image(64)
    fake_uniform(monkeypatch, [40.0, 30.0])
    monkeypatch.setattr(random, 'random', lambda: 0.99)   # no op applied, only Cutout
    out = arr(A.RandAugmentMC(2, 10)(Image.fromarray(x)))
    assert changed_box(x, out) == ((22, 39), (32, 49))     # still 17x17 at 64x64


# ---------------------------------------------------------------- weak / strong

def test_weak_and_strong_structure():
    w = A.weak(32)
    assert [type(t) for t in w.transforms] == [transforms.RandomHorizontalFlip,
                                                    transforms.RandomCrop]
    flip, crop = w.transforms
    assert flip.p == 0.5
    assert crop.size == (32, 32) and crop.padding == 4 and crop.padding_mode == 'reflect'
    assert A.weak(64).transforms[1].padding == 8
    assert [type(t) for t in A.weak(32, flip=False).transforms] == [transforms.RandomCrop]

    s = A.strong(32).transforms
    assert [type(t) for t in s] == [transforms.RandomHorizontalFlip, transforms.RandomCrop,
                                    A.RandAugmentMC]
    assert (s[2].n, s[2].m) == (2, 10)
    assert [type(t) for t in A.strong(32, flip=False).transforms] == [transforms.RandomCrop,
                                                                      A.RandAugmentMC]


@pytest.mark.parametrize('size, pad', [(32, 4), (64, 8)])
def test_crop_reflect_padding(monkeypatch, size, pad):
    x = coords_image(size)
    fix_crop(monkeypatch, 0, 0)
    out = arr(A.weak(size, flip=False)(Image.fromarray(x)))
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode='reflect')
    assert (out == padded[:size, :size]).all()
    # Reflect (edge not repeated), not zeros: row/col i of the border is image row/col pad-i.
    assert (out[:pad, :pad] == x[pad:0:-1, pad:0:-1]).all()
    assert (out[pad:, pad:] == x[:size - pad, :size - pad]).all()


def test_flip_probability(monkeypatch):
    x = coords_image()
    img = Image.fromarray(x)
    fix_crop(monkeypatch, 4, 4)                   # crop back the unpadded image
    torch.manual_seed(0)
    t = A.weak(32)
    flips = 0
    for _ in range(1000):
        out = arr(t(img))
        if (out == x[:, ::-1]).all():
            flips += 1
        else:
            assert (out == x).all()
    assert 430 < flips < 570
    t = A.weak(32, flip=False)
    assert all((arr(t(img)) == x).all() for _ in range(200))


def test_strong_seeded_repeatable():
    img = Image.fromarray(coords_image())
    outs = []
    for _ in range(2):
        random.seed(3), np.random.seed(3), torch.manual_seed(3)
        outs.append([arr(A.strong(32)(img)) for _ in range(5)])
    assert all((a == b).all() for a, b in zip(*outs))
    assert all(o.shape == (32, 32, 3) for o in outs[0])
    assert any((a != b).any() for a, b in zip(outs[0], outs[0][1:]))


# ---------------------------------------------------------------- RandAugmentMC

def test_randaugment_statistics(monkeypatch):
    ra = A.RandAugmentMC(2, 10)
    applied, cut, picks, mags = [], [], [], []

    def recorder(i):
        def op(img, v, max_v, bias):
            applied.append((i, v, max_v, bias))
            return img
        return op
    ra.augment_pool = [(recorder(i), m, b) for i, (_, m, b) in enumerate(A.FIXMATCH_POOL)]
    monkeypatch.setattr(A, 'cutout_abs', lambda img, v: cut.append(v) or img)
    real_choices, real_randint = random.choices, np.random.randint
    monkeypatch.setattr(random, 'choices', lambda pool, k: (
        lambda r: picks.extend(ra.augment_pool.index(p) for p in r) or r)(real_choices(pool, k=k)))
    monkeypatch.setattr(np.random, 'randint', lambda lo, hi: (
        lambda r: mags.append(r) or r)(real_randint(lo, hi)))

    random.seed(0), np.random.seed(0)
    calls = 20000
    img = Image.new('RGB', (32, 32))
    for _ in range(calls):
        ra(img)

    assert cut == [16] * calls                    # Cutout every time, side 16
    assert len(picks) == len(mags) == 2 * calls
    counts = np.bincount(picks, minlength=14)
    assert len(counts) == 14 and np.abs(counts / (2 * calls) - 1 / 14).max() < 0.007
    assert set(mags) == set(range(1, 10))          # 1..9, never 10
    mcounts = np.bincount(mags)[1:]
    assert np.abs(mcounts / (2 * calls) - 1 / 9).max() < 0.008
    assert abs(len(applied) / (2 * calls) - 0.5) < 0.01
    # Each applied op gets its own max_v and bias; magnitudes of applied ops are uniform too.
    pool = A.FIXMATCH_POOL
    assert all((m, b) == pool[i][1:] for i, _, m, b in applied)
    assert set(v for _, v, _, _ in applied) == set(range(1, 10))


def test_randaugment_draw_order(monkeypatch):
    """Per call: random.choices; per op: randint(1, 10), coin, [sign if applied and signed];
    then Cutout's two uniforms."""
    log = []
    real = {'random': random.random, 'choices': random.choices,
            'randint': np.random.randint, 'uniform': np.random.uniform}

    def logged(name):
        def f(*a, **k):
            r = real[name](*a, **k)
            log.append((name, a, r))
            return r
        return f
    monkeypatch.setattr(random, 'random', logged('random'))
    monkeypatch.setattr(random, 'choices', logged('choices'))
    monkeypatch.setattr(np.random, 'randint', logged('randint'))
    monkeypatch.setattr(np.random, 'uniform', logged('uniform'))
    signed = {A.rotate, A.shear_x, A.shear_y, A.translate_x, A.translate_y}

    random.seed(1), np.random.seed(1)
    ra = A.RandAugmentMC(2, 10)
    img = Image.fromarray(coords_image())
    n_signs = 0
    for _ in range(300):
        log.clear()
        ra(img)
        name, _, ops = log.pop(0)
        assert name == 'choices' and len(ops) == 2
        for op, _, _ in ops:
            name, args, _ = log.pop(0)
            assert name == 'randint' and args == (1, 10)
            name, _, coin = log.pop(0)
            assert name == 'random'
            if coin < 0.5 and op in signed:
                assert log.pop(0)[0] == 'random'
                n_signs += 1
        assert [(n, a) for n, a, _ in log] == [('uniform', (0, 32)), ('uniform', (0, 32))]
    assert n_signs > 50                             # the signed branch was exercised


# ---------------------------------------------------------------- views

def test_test_transform_normalises():
    x = random_image(high=256)
    out = A.test_transform(MEAN, STD)(Image.fromarray(x))
    manual = (torch.from_numpy(x).permute(2, 0, 1).float() / 255
              - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
    assert torch.allclose(out, manual, atol=1e-6)


@pytest.mark.parametrize('method, n_lab, n_unlab', [('SimPro', 2, 3), ('ACR_d', 1, 3),
                                                    ('FixMatch', 1, 2)])
@pytest.mark.parametrize('size', [32, 64])
def test_method_views(method, n_lab, n_unlab, size):
    from methods import METHODS
    lab, unlab = (A.views(tuple(views.values()), size, MEAN, STD)
                  for views in (METHODS[method].labeled_views, METHODS[method].unlabeled_views))
    assert (len(lab), len(unlab)) == (n_lab, n_unlab)
    x = random_image(size, high=256)
    for views, n in ((lab, n_lab), (unlab, n_unlab)):
        out = views(Image.fromarray(x))
        assert isinstance(out, tuple) and len(out) == n
        assert all(t.dtype == torch.float32 and t.shape == (3, size, size) for t in out)
        assert len(views(x)) == n                   # uint8 HWC arrays accepted as well
        # First view weak, the others (if any) strong, except SimPro's labeled (weak, strong).
        kinds = ['strong' if isinstance(t.transforms[-1], A.RandAugmentMC) else 'weak'
                 for t in views.transforms]
        assert kinds == ['weak'] + ['strong'] * (n - 1)


def test_views_normalise_and_flip_option(monkeypatch):
    x = random_image(high=256)
    fix_crop(monkeypatch, 4, 4)
    lab, unlab = A.views(['weak'], 32, MEAN, STD, flip=False), A.views(['weak', 'strong'], 32, MEAN, STD, flip=False)
    assert all(not isinstance(t.transforms[0], transforms.RandomHorizontalFlip)
               for t in lab.transforms + unlab.transforms)
    (view,) = lab(x)
    assert torch.equal(view, A.test_transform(MEAN, STD)(Image.fromarray(x)))
    manual = (torch.from_numpy(x).permute(2, 0, 1).float() / 255
              - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    assert torch.allclose(view, manual, atol=1e-6)


def test_unknown_view_kind():
    with pytest.raises(ValueError, match='medium'):
        A.views(['weak', 'medium'], 32, MEAN, STD)


def _has_black_border(views: torch.Tensor, mean, std) -> torch.Tensor:
    """Per normalised view (N, 3, S, S): is a whole border row or column black (0 before Normalize)?"""
    black = -torch.tensor(mean).view(1, 3, 1) / torch.tensor(std).view(1, 3, 1)
    edges = [views[:, :, 0, :], views[:, :, -1, :], views[:, :, :, 0], views[:, :, :, -1]]
    return torch.stack([torch.isclose(e, black, atol=1e-5).all(2).all(1) for e in edges]).any(0)


@pytest.mark.parametrize('aug', ['cpu', 'gpu'])
def test_acr_d_labeled_view_on_imagenet_is_the_originals_zero_padded_crop(tmp_path, aug):
    """The original ACR_d crops its labeled ImageNet images with zero padding: at 64x64 all but
    1 in 17 * 17 carry a black border; reflect padding (its CIFAR view, and SimPro's) never does."""
    import train
    from dataset.data import build_data
    from tools import fake_data
    fake_data.write_small_imagenet(tmp_path, 127, 64, 30, 1)
    seen = {}
    for method in ('ACR_d', 'SimPro'):
        args = get_args_parser().parse_args(['--dataset', 'smallimagenet', '--data-dir', str(tmp_path),
                                                   '--img-size', '64', '--version', method, '--batch-size', '16',
                                                   '--mu', '1', '--num-workers', '0', '--aug', aug])
        args.arch = 'resnet50'
        data = build_data(args)
        instance = METHODS[method](args, data)
        batches, _ = train.method_batches(args, data, instance, 0, torch.device('cpu'))
        (views, _, _), _ = next(batches)
        seen[method] = _has_black_border(views[0], data.mean, data.std).float().mean().item()
        assert instance.view_kinds()[0] == (('crop_flip',) if method == 'ACR_d' else ('weak', 'strong'))
    assert seen['ACR_d'] >= 0.8 and seen['SimPro'] == 0.0, seen


def test_usb_strong_view_is_the_weak_view_then_usbs_randaugment():
    """'strong_usb' (USB's strong view): the reflect-padded crop (4 pixels at 32, USB's crop_ratio
    0.875) and flip of the weak view, then RandAugmentUSB(3, 5); the PIL path makes it as a view kind."""
    transform = A.strong_usb(32)
    *weak, randaugment = transform.transforms
    assert [type(t) for t in weak] == [type(t) for t in A.weak(32).transforms]
    assert weak[-1].padding == 4 and weak[-1].padding_mode == 'reflect'
    assert isinstance(randaugment, A.RandAugmentUSB) and (randaugment.n, randaugment.m) == (3, 5)
    views = A.views(('weak', 'strong_usb'), 32, MEAN, STD)
    out = views(np.zeros((32, 32, 3), np.uint8))
    assert len(out) == 2 and all(v.shape == (3, 32, 32) for v in out)
