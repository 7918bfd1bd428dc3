"""Reference (per-sample, PIL) augmentation: weak / strong views and RandAugmentMC.

A faithful port of FixMatch-pytorch (kekmodel, MIT licence,
https://github.com/kekmodel/FixMatch-pytorch, `dataset/randaugment.py` and
`dataset/cifar.py`), which the original SimPro code uses unchanged. The ops, their
magnitude formulas and the order of the random draws (python `random` and
`np.random` for RandAugment and Cutout, torch for flip/crop) are kept as in the
original, so that seeded runs reproduce it.

Images enter as PIL RGB (or uint8 HWC arrays), and each view leaves as a normalised
float tensor (ToTensor then Normalize).
"""
import random

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageEnhance
import PIL.ImageFilter
import PIL.ImageOps

# Cutout side in pixels: the original hard-codes int(32 * 0.5), also at 64x64.
CUTOUT = int(32 * 0.5)


def _float_parameter(v, max_v):
    return float(v) * max_v / 10


def _int_parameter(v, max_v):
    return int(v * max_v / 10)


def _random_sign(x):
    # One random.random() draw per signed op, made inside the op, as the original.
    return -x if random.random() < 0.5 else x


# Every op has the signature op(img, v, max_v, bias); v is the integer magnitude.

def auto_contrast(img, v, max_v, bias):
    return PIL.ImageOps.autocontrast(img)


def brightness(img, v, max_v, bias):
    return PIL.ImageEnhance.Brightness(img).enhance(_float_parameter(v, max_v) + bias)


def color(img, v, max_v, bias):
    return PIL.ImageEnhance.Color(img).enhance(_float_parameter(v, max_v) + bias)


def contrast(img, v, max_v, bias):
    return PIL.ImageEnhance.Contrast(img).enhance(_float_parameter(v, max_v) + bias)


def equalize(img, v, max_v, bias):
    return PIL.ImageOps.equalize(img)


def identity(img, v, max_v, bias):
    return img


def posterize(img, v, max_v, bias):
    return PIL.ImageOps.posterize(img, _int_parameter(v, max_v) + bias)


def rotate(img, v, max_v, bias):
    return img.rotate(_random_sign(_int_parameter(v, max_v) + bias))


def sharpness(img, v, max_v, bias):
    return PIL.ImageEnhance.Sharpness(img).enhance(_float_parameter(v, max_v) + bias)


def shear_x(img, v, max_v, bias):
    s = _random_sign(_float_parameter(v, max_v) + bias)
    return img.transform(img.size, PIL.Image.AFFINE, (1, s, 0, 0, 1, 0))


def shear_y(img, v, max_v, bias):
    s = _random_sign(_float_parameter(v, max_v) + bias)
    return img.transform(img.size, PIL.Image.AFFINE, (1, 0, 0, s, 1, 0))


def solarize(img, v, max_v, bias):
    # Pixels >= 256 - t are inverted, so a larger magnitude inverts more.
    return PIL.ImageOps.solarize(img, 256 - (_int_parameter(v, max_v) + bias))


def translate_x(img, v, max_v, bias):
    px = int(_random_sign(_float_parameter(v, max_v) + bias) * img.size[0])
    return img.transform(img.size, PIL.Image.AFFINE, (1, 0, px, 0, 1, 0))


def translate_y(img, v, max_v, bias):
    px = int(_random_sign(_float_parameter(v, max_v) + bias) * img.size[1])
    return img.transform(img.size, PIL.Image.AFFINE, (1, 0, 0, 0, 1, px))


def cutout_abs(img, v):
    """Grey (127,127,127) square of side v placed uniformly at random, clipped at borders.

    PIL's rectangle includes both corners, so an unclipped patch is (v+1)x(v+1)
    pixels (17x17 for v=16). That is the original's behaviour and is kept.
    """
    w, h = img.size
    x0 = np.random.uniform(0, w)
    y0 = np.random.uniform(0, h)
    x0 = int(max(0, x0 - v / 2.))
    y0 = int(max(0, y0 - v / 2.))
    x1 = int(min(w, x0 + v))
    y1 = int(min(h, y0 + v))
    img = img.copy()
    PIL.ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), (127, 127, 127))
    return img


# FixMatch's `fixmatch_augment_pool`; the order matters for random.choices.
FIXMATCH_POOL = [
    (auto_contrast, None, None),
    (brightness, 0.9, 0.05),
    (color, 0.9, 0.05),
    (contrast, 0.9, 0.05),
    (equalize, None, None),
    (identity, None, None),
    (posterize, 4, 4),
    (rotate, 30, 0),
    (sharpness, 0.9, 0.05),
    (shear_x, 0.3, 0),
    (shear_y, 0.3, 0),
    (solarize, 256, 0),
    (translate_x, 0.3, 0),
    (translate_y, 0.3, 0),
]


class RandAugmentMC:
    """n ops drawn with replacement, each applied with probability 1/2 at a random
    magnitude in 1..m-1 (np.random.randint excludes m, as in the original), then Cutout."""

    def __init__(self, n=2, m=10, cutout=CUTOUT):
        assert n >= 1 and 1 <= m <= 10
        self.n = n
        self.m = m
        self.cutout = cutout
        self.augment_pool = list(FIXMATCH_POOL)

    def __call__(self, img):
        ops = random.choices(self.augment_pool, k=self.n)
        for op, max_v, bias in ops:
            v = np.random.randint(1, self.m)
            if random.random() < 0.5:
                img = op(img, v=v, max_v=max_v, bias=bias)
        return cutout_abs(img, self.cutout)

    def __repr__(self):
        return f'{type(self).__name__}(n={self.n}, m={self.m})'


def torchvision_transforms():
    """torchvision.transforms, imported when a view is first made: importing torchvision also
    imports its model zoo and the compiler, seconds that a mistyped flag should not wait for."""
    from torchvision import transforms
    return transforms


# USB's RandAugment (microsoft/Semi-supervised-learning semilearn/datasets/augmentation/randaugment.py):
# the same 14 ops in the same order as FIXMATCH_POOL, each with a value drawn uniformly from its
# range and always applied, then a cutout of a random size. (name, low, high) of each op's value.
USB_POOL = [('auto_contrast', 0, 1), ('brightness', 0.05, 0.95), ('color', 0.05, 0.95), ('contrast', 0.05, 0.95),
            ('equalize', 0, 1), ('identity', 0, 1), ('posterize', 4, 8), ('rotate', -30, 30),
            ('sharpness', 0.05, 0.95), ('shear_x', -0.3, 0.3), ('shear_y', -0.3, 0.3), ('solarize', 0, 256),
            ('translate_x', -0.3, 0.3), ('translate_y', -0.3, 0.3)]
USB_CUTOUT_FILL = (125, 123, 114)


def usb_op(name, img, v):
    """USB's op `name` at value v (auto_contrast, equalize and identity ignore it)."""
    if name in ('brightness', 'color', 'contrast', 'sharpness'):
        enhance = {'brightness': PIL.ImageEnhance.Brightness, 'color': PIL.ImageEnhance.Color,
                   'contrast': PIL.ImageEnhance.Contrast, 'sharpness': PIL.ImageEnhance.Sharpness}[name]
        return enhance(img).enhance(v)
    if name in ('shear_x', 'shear_y', 'translate_x', 'translate_y'):
        w, h = img.size
        matrix = {'shear_x': (1, v, 0, 0, 1, 0), 'shear_y': (1, 0, 0, v, 1, 0),
                  'translate_x': (1, 0, v * w, 0, 1, 0), 'translate_y': (1, 0, 0, 0, 1, v * h)}[name]
        return img.transform(img.size, PIL.Image.AFFINE, matrix)
    return {'auto_contrast': lambda: PIL.ImageOps.autocontrast(img), 'equalize': lambda: PIL.ImageOps.equalize(img),
            'identity': lambda: img, 'posterize': lambda: PIL.ImageOps.posterize(img, max(1, int(v))),
            'rotate': lambda: img.rotate(v), 'solarize': lambda: PIL.ImageOps.solarize(img, v)}[name]()


def usb_cutout(img, v):
    """USB's Cutout: a square of side v * width (v in [0, 0.5]; none for v = 0) in USB_CUTOUT_FILL,
    its corner from numpy's uniform(w), which takes w as the low end: a centre in (1, w]; PIL
    truncates the float far corner."""
    if v <= 0:
        return img
    v = v * img.size[0]
    w, h = img.size
    x0, y0 = np.random.uniform(w), np.random.uniform(h)
    x0, y0 = int(max(0, x0 - v / 2.)), int(max(0, y0 - v / 2.))
    img = img.copy()
    PIL.ImageDraw.Draw(img).rectangle((x0, y0, min(w, x0 + v), min(h, y0 + v)), USB_CUTOUT_FILL)
    return img


class RandAugmentUSB:
    """USB's RandAugment(n, m): n ops drawn with replacement (python `random`), each always applied
    at a value uniform in its range (m is unused, as in USB), then usb_cutout at a size uniform in
    [0, 0.5) of the width (its corner from numpy's global RNG)."""

    def __init__(self, n=3, m=5):
        self.n, self.m = n, m

    def __call__(self, img):
        for name, low, high in random.choices(USB_POOL, k=self.n):
            img = usb_op(name, img, low + float(high - low) * random.random())
        return usb_cutout(img, random.random() * 0.5)

    def __repr__(self):
        return f'{type(self).__name__}(n={self.n}, m={self.m})'


def weak(image_size, flip=True):
    """Random horizontal flip (unless flip=False), then reflect-padded random crop."""
    transforms = torchvision_transforms()
    crop = transforms.RandomCrop(size=image_size, padding=int(image_size * 0.125),
                                 padding_mode='reflect')
    return transforms.Compose(([transforms.RandomHorizontalFlip()] if flip else []) + [crop])


def crop_flip(image_size):
    """The original ACR_d's labeled view on the ImageNet variants: a random crop with zero padding
    of int(S / 8) (a black border), then a random horizontal flip."""
    transforms = torchvision_transforms()
    return transforms.Compose([transforms.RandomCrop(image_size, padding=int(image_size / 8)),
                               transforms.RandomHorizontalFlip()])


def strong(image_size, flip=True, cutout=CUTOUT):
    """The weak transform followed by RandAugmentMC(2, 10) with a `cutout`-pixel square."""
    transforms = torchvision_transforms()
    return transforms.Compose(weak(image_size, flip).transforms + [RandAugmentMC(n=2, m=10, cutout=cutout)])


def strong_usb(image_size, flip=True):
    """USB's strong view (semilearn/datasets/cv_datasets/cifar.py): the weak view (USB crops, then
    flips: the same distribution as the flip, then the crop), then RandAugmentUSB(3, 5)."""
    transforms = torchvision_transforms()
    return transforms.Compose(weak(image_size, flip).transforms + [RandAugmentUSB(3, 5)])


class GaussianBlur:
    """PIL's Gaussian blur with a radius drawn uniformly from `sigma` (MoCo v2's, as CCL draws it)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img):
        return img.filter(PIL.ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def contrastive(image_size):
    """CCL's labeled contrastive view (SimCLR's): a random resized crop of 20-100% of the area, a
    flip, colour jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8, grey with probability 0.2 and a
    Gaussian blur with probability 0.5 (zhouzihao11/CCL dataset/cifar.py: Transform_Con_Labeled)."""
    transforms = torchvision_transforms()
    return transforms.Compose([transforms.RandomResizedCrop(size=image_size, scale=(0.2, 1.0)),
                               transforms.RandomHorizontalFlip(),
                               transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                               transforms.RandomGrayscale(p=0.2),
                               transforms.RandomApply([GaussianBlur()], p=0.5)])


def test_transform(mean, std):
    """Evaluation transform: ToTensor then Normalize, no augmentation."""
    transforms = torchvision_transforms()
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])


test_transform.__test__ = False  # not a pytest test despite its name


VIEW_KINDS = ('weak', 'strong', 'strong_usb', 'crop_flip', 'contrastive')


class Views:
    """Applies each PIL->PIL view transform to the same image, then normalises each."""

    def __init__(self, transforms_, normalize):
        self.transforms = tuple(transforms_)
        self.normalize = normalize

    def __len__(self):
        return len(self.transforms)

    def __call__(self, img):
        if isinstance(img, np.ndarray):
            img = PIL.Image.fromarray(img)
        return tuple(self.normalize(t(img)) for t in self.transforms)


def views(kinds, image_size, mean, std, flip=True, cutout=CUTOUT):
    """Views of the given kinds (VIEW_KINDS), in order, e.g. ('weak', 'strong', 'strong') for the
    unlabeled views of SimPro (methods.base.Method.view_kinds); ValueError for an unknown kind."""
    make = {'weak': lambda: weak(image_size, flip), 'strong': lambda: strong(image_size, flip, cutout),
            'strong_usb': lambda: strong_usb(image_size, flip),
            'crop_flip': lambda: crop_flip(image_size), 'contrastive': lambda: contrastive(image_size)}
    unknown = set(kinds) - set(make)
    if unknown:
        raise ValueError(f'unknown view kind(s) {sorted(unknown)}; expected one of {", ".join(VIEW_KINDS)}')
    return Views([make[k]() for k in kinds], test_transform(mean, std))
