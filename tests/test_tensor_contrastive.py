"""Tests for dataset/tensor_augment/contrastive.py, CCL's contrastive view on the tensor path:
with the same draws it equals torchvision's transforms on PIL images pixel for pixel (each part
and the whole view, at 32 and 64 pixels), its Pillow colour conversions equal Pillow's on every
colour, its draws follow torchvision's distributions, and DeviceBatches puts the views in their
places, normalised as the PIL path does."""
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F
from PIL import Image, ImageFilter
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from dataset import augment, device_batches
from dataset.tensor_augment import contrastive as C
from tests.test_tensor_augment import MEAN, STD, batch, sample_images

ADJUST = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)


def reference_view(image: Image.Image, draws: C.ContrastiveDraws, k: int) -> np.ndarray:
    """augment.contrastive's transforms on one PIL image with the k-th image's draws."""
    size = image.size[0]
    top, left, height, width = draws.box[k].tolist()
    image = F.resized_crop(image, top, left, height, width, [size, size], InterpolationMode.BILINEAR)
    if draws.flip[k]:
        image = F.hflip(image)
    if draws.jitter[k]:
        for op in draws.order[k].tolist():
            image = ADJUST[op](image, float(draws.factors[k, op]))
    if draws.grey[k]:
        image = F.rgb_to_grayscale(image, num_output_channels=3)
    if draws.blur[k]:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(draws.sigma[k])))
    return np.asarray(image)


def assert_views_equal(images, draws, out):
    for k in range(len(images)):
        ref = reference_view(Image.fromarray(images[k].permute(1, 2, 0).numpy()), draws, k)
        bad = (out[k].permute(1, 2, 0).numpy() != ref).any(-1)
        assert not bad.any(), f'image {k}: {bad.sum()} pixels differ, first at {np.argwhere(bad)[0]}'


def every_colour():
    codes = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], -1).astype(np.uint8)
    return rgb.reshape(4096, 4096, 3)


@pytest.mark.slow
def test_hsv_conversions_equal_pillows_on_every_colour():
    colours = every_colour()
    as_tensor = torch.from_numpy(colours).permute(2, 0, 1)[None]
    hsv = C.rgb_to_hsv(as_tensor)[0].permute(1, 2, 0).numpy()
    assert (hsv == np.asarray(Image.fromarray(colours, 'RGB').convert('HSV'))).all()
    rgb = C.hsv_to_rgb(as_tensor)[0].permute(1, 2, 0).numpy()     # every byte triple read as HSV
    assert (rgb == np.asarray(Image.frombytes('HSV', (4096, 4096), colours.tobytes()).convert('RGB'))).all()


@pytest.mark.parametrize('size, count', [(32, 96), (64, 24)])
def test_view_equals_torchvision_on_pil(size, count):
    images = torch.cat([sample_images(size, count // 2, seed=1), sample_images(size, count // 2, seed=2)])
    draws = C.draw(count, size, torch.Generator().manual_seed(size))
    assert draws.jitter.any() and (~draws.jitter).any() and draws.grey.any() and draws.blur.any()
    assert_views_equal(images, draws, C.apply(images, draws))


def test_resized_crop_of_any_box_equals_pillows():
    """Boxes from one pixel to the whole image, thin and wide, at every corner."""
    size = 32
    boxes = [(0, 0, 1, 1), (31, 31, 1, 1), (0, 0, 32, 32), (0, 5, 32, 1), (7, 0, 1, 32), (3, 4, 17, 9),
             (0, 0, 31, 32), (1, 0, 31, 32), (12, 20, 20, 12), (0, 16, 13, 16)]
    images = sample_images(size, len(boxes), seed=3)
    box = torch.tensor(boxes)
    out = C.resized_crop(images, *box.unbind(1))
    for k, (top, left, height, width) in enumerate(boxes):
        crop = F.resized_crop(Image.fromarray(images[k].permute(1, 2, 0).numpy()), top, left, height, width,
                              [size, size], InterpolationMode.BILINEAR)
        assert (out[k].permute(1, 2, 0).numpy() == np.asarray(crop)).all(), boxes[k]


@pytest.mark.parametrize('size', [2, 5, 32])
def test_gaussian_blur_equals_pillows_at_every_sigma(size):
    """The ends of the sigma range, values between, and images narrower than the box."""
    sigma = np.array([0.1, 0.1000001, 0.35, 0.5, 0.77, 1.0, 1.2345, 1.5, 1.9999, 2.0])
    images = sample_images(size, len(sigma), seed=4) if size >= 8 else \
        batch([np.random.RandomState(k).randint(0, 256, (size, size, 3)).astype(np.uint8) for k in range(len(sigma))])
    out = C.gaussian_blur(images, C.box_weights(*C.box_blur_parameters(sigma)))
    for k, s in enumerate(sigma):
        ref = Image.fromarray(images[k].permute(1, 2, 0).numpy()).filter(ImageFilter.GaussianBlur(radius=float(s)))
        assert (out[k].permute(1, 2, 0).numpy() == np.asarray(ref)).all(), s


def test_hue_shift_wraps_like_torchvision():
    factors = torch.tensor([-0.1, -0.0039, 0.0, 0.0039, 0.05, 0.1], dtype=torch.float64)
    expected = [np.int32(f * 255).astype(np.uint8) for f in factors.tolist()]
    assert C.hue_shift(factors).tolist() == [int(e) for e in expected] == [231, 0, 0, 0, 12, 25]


def test_draws_follow_torchvisions_distributions():
    n, size = 20000, 32
    ours = C.draw(n, size, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    image = Image.new('RGB', (size, size))
    theirs = torch.tensor([transforms.RandomResizedCrop.get_params(image, [0.2, 1.0], [3 / 4, 4 / 3])
                           for _ in range(n)])
    for column, what in ((2, 'height'), (3, 'width')):
        a, b = ours.box[:, column].double(), theirs[:, column].double()
        assert abs(a.mean() - b.mean()) < 0.15 and abs(a.std() - b.std()) < 0.15, what
        assert a.min() >= 1 and a.max() <= size
    area = (ours.box[:, 2] * ours.box[:, 3]).double() / size ** 2
    assert area.min() >= 0.18 and area.max() <= 1.0
    for column in (0, 1):                        # the offset is uniform over the places the box fits
        room = size - ours.box[:, 2 + column]
        assert (ours.box[:, column] >= 0).all() and (ours.box[:, column] <= room).all()
        fits = room > 0
        assert abs((ours.box[fits, column].double() / room[fits]).mean() - 0.5) < 0.01
    for flag, p in ((ours.flip, 0.5), (ours.jitter, 0.8), (ours.grey, 0.2), (ours.blur, 0.5)):
        assert abs(flag.double().mean() - p) < 0.012
    orders = torch.unique(ours.order, dim=0, return_counts=True)[1]
    assert len(orders) == 24 and (orders.double() / n - 1 / 24).abs().max() < 0.008
    for column, (low, high) in enumerate([(0.6, 1.4)] * 3 + [(-0.1, 0.1)]):
        values = ours.factors[:, column]
        assert values.min() >= low and values.max() <= high and abs(values.mean() - (low + high) / 2) < 0.01
    assert ours.sigma.min() >= 0.1 and ours.sigma.max() <= 2.0 and abs(ours.sigma.mean() - 1.05) < 0.015


def test_device_batches_place_normalised_contrastive_views(monkeypatch):
    """CCL's labeled views (weak, contrastive, contrastive): each contrastive view equals the PIL
    path's transform with the same draws, then ToTensor and Normalize, for the batch's own images;
    the weak view is the one a method without contrastive views gets."""
    recorded = []
    draw = C.draw
    monkeypatch.setattr(C, 'draw', lambda *a: recorded.append(draw(*a)) or recorded[-1])
    images = sample_images(32, 24, seed=5).permute(0, 2, 3, 1).contiguous()
    labels = torch.arange(24) % 3
    common = dict(images=images, labels=labels, labeled_rows=np.arange(12), unlabeled_rows=np.arange(12, 24),
                  unlabeled_views=('weak', 'strong'), batch_size=4, mu=2, seed=0, start=0, mean=MEAN, std=STD,
                  flip=True, cutout=16)
    (views, targets, positions), _ = next(device_batches.DeviceBatches(
        labeled_views=('weak', 'contrastive', 'contrastive'), **common))
    (weak_only, _, positions_weak), unlabeled = next(device_batches.DeviceBatches(labeled_views=('weak',), **common))
    assert len(views) == 3 and len(recorded) == 2 and torch.equal(views[0], weak_only[0])
    assert torch.equal(positions, positions_weak) and torch.equal(targets, labels[positions])
    normalise = augment.test_transform(MEAN, STD)
    for view, draws in zip(views[1:], recorded):
        for k, row in enumerate(positions.tolist()):
            ref = normalise(Image.fromarray(reference_view(Image.fromarray(images[row].numpy()), draws, k)))
            assert torch.equal(view[k], ref)
    assert not torch.equal(views[1], views[2])


def test_every_view_kind_has_a_tensor_path_and_an_unknown_one_is_refused():
    assert device_batches.TENSOR_VIEW_KINDS == augment.VIEW_KINDS
    images = sample_images(32, 4).permute(0, 2, 3, 1).contiguous()
    with pytest.raises(ValueError, match=r"unknown view kind\(s\) \['mixup'\]"):
        device_batches.DeviceBatches(images, torch.zeros(4, dtype=torch.long), np.arange(2), np.arange(2, 4),
                                     ('weak', 'mixup'), ('weak',), 2, 1, 0, 0, MEAN, STD, True, 16)
