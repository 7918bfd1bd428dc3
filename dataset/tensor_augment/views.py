"""The views of a batch: weak (flip, reflect-padded crop), strong (weak then RandAugmentMC) and the
normalisation."""
import torch

from dataset.augment import CUTOUT
from dataset.tensor_augment.ops import _gather_pixels, _table, send
from dataset.tensor_augment.randaugment import RandAugmentMC


def crop_padding(height):
    """The reflect padding of the weak crop: int(H * 0.125) (4 at 32, 8 at 64)."""
    return int(height * 0.125)


def draw_weak(n_images, height, generator, flip=True):
    """(flip (N,) bool with probability 1/2 (all False without flip), top (N,), left (N,))
    with offsets uniform in 0..2*pad, as RandomHorizontalFlip then RandomCrop.get_params."""
    device = generator.device
    pad = crop_padding(height)
    if flip:
        flips = torch.rand(n_images, generator=generator, device=device) < 0.5
    else:
        flips = torch.zeros(n_images, dtype=torch.bool, device=device)
    top = torch.randint(0, 2 * pad + 1, (n_images,), generator=generator, device=device)
    left = torch.randint(0, 2 * pad + 1, (n_images,), generator=generator, device=device)
    return flips, top, left


def crop_source(flips, top, left, pad, height, width, zero_pad=None):
    """Where each pixel of a flipped, padded and cropped image comes from, computed on the device of
    the draws (the host, for DeviceBatches): (rows (N, H), cols (N, W)) source coordinates of a
    horizontal flip where `flips`, then a crop HxW at (top, left) of the image padded by `pad`. The
    padding reflects (edge not repeated, as np.pad 'reflect'), or is black where `zero_pad` (N,) is
    true; with zero_pad also (rows_inside (N, H), cols_inside (N, W)): False in the black padding."""
    device = top.device

    def source(p, size):                       # padded coordinate -> source coordinate
        p = p - pad
        reflected = torch.where(p < 0, -p, p)
        reflected = torch.where(reflected >= size, 2 * (size - 1) - reflected, reflected)
        return reflected if zero_pad is None else torch.where(zero_pad.view(-1, 1), p.clamp(0, size - 1), reflected)

    padded_rows = top.view(-1, 1) + torch.arange(height, device=device)
    padded_cols = left.view(-1, 1) + torch.arange(width, device=device)
    rows, cols = source(padded_rows, height), source(padded_cols, width)
    cols = torch.where(flips.view(-1, 1), width - 1 - cols, cols)
    if zero_pad is None:
        return rows, cols
    inside = lambda p, size: ((p >= pad) & (p < size + pad)) | ~zero_pad.view(-1, 1)  # noqa: E731
    return rows, cols, inside(padded_rows, height), inside(padded_cols, width)


def flip_crop(images, flips, top, left, pad, zero_pad=None):
    """Horizontal flip where `flips`, then pad by `pad` and crop HxW at (top, left) of the padded
    image (crop_source), in one gather. The padding reflects, or is black where `zero_pad` (N,).

    A zero-padded crop at (top, left) followed by a flip, the original ACR_d's labeled view on the
    ImageNet variants, is the flip followed by the zero-padded crop at (top, 2 * pad - left)."""
    _, _, h, w = images.shape
    rows, cols, *inside = crop_source(flips, top, left, pad, h, w, zero_pad)
    out = _gather_pixels(images, rows.unsqueeze(2) * w + cols.unsqueeze(1))
    if zero_pad is None:
        return out
    rows_inside, cols_inside = inside
    return out.masked_fill(~(rows_inside.unsqueeze(2) & cols_inside.unsqueeze(1)).unsqueeze(1), 0)


def weak(images, generator, flip=True):
    """Per-sample horizontal flip (p = 1/2, if flip), then reflect-padded random crop."""
    n, _, h, _ = images.shape
    flips, top, left = send(torch.stack(draw_weak(n, h, generator, flip)), images)
    return flip_crop(images, flips.bool(), top, left, crop_padding(h))


def strong(images, generator, flip=True, cutout=CUTOUT):
    """weak, then RandAugmentMC(n=2, m=10) with a `cutout`-pixel grey square."""
    return RandAugmentMC(n=2, m=10, cutout=cutout)(weak(images, generator, flip), generator)


def normalize(images, mean, std):
    """uint8 (N, C, H, W) -> float32, exactly torchvision's ToTensor then Normalize on the CPU, on
    any device: every divisor is a tensor on the device (CUDA divides by a Python or host scalar by
    multiplying with its reciprocal, which can be off by a bit), cached, so no copy waits."""
    device = images.device
    scale = _table('255', lambda: 255.0, torch.float32, device)
    mean = _table(('mean', tuple(mean)), lambda: mean, torch.float32, device).view(-1, 1, 1)
    std = _table(('std', tuple(std)), lambda: std, torch.float32, device).view(-1, 1, 1)
    return images.to(torch.float32).div_(scale).sub_(mean).div_(std)   # in place: one new tensor
