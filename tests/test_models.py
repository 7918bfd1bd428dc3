"""Backbones: exact parameter counts, init, shapes, heads and argument checks."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import ARCHS, build_model, count_parameters
from utils.errors import UserError


def _forward(model, size=32):
    model.eval()
    with torch.no_grad():
        return model(torch.randn(2, 3, size, size))


@pytest.fixture(scope='module')
def wrn10():
    torch.manual_seed(0)
    return build_model('wideresnet', 10)


@pytest.fixture(scope='module')
def resnet1000():
    torch.manual_seed(0)
    return build_model('resnet50', 1000)


@pytest.fixture(scope='module')
def resnext10():
    return build_model('resnext', 10)


# --- parameter counts (from the FixMatch WRN-28-2 and the CIFAR-stem ResNet-50) ---

@pytest.mark.parametrize('arch,num_classes,two_heads,expected', [
    ('wideresnet', 10, False, 1_467_610),
    ('wideresnet', 100, False, 1_479_220),
    ('wideresnet', 10, True, 1_468_900),
    ('resnet50', 127, False, 23_760_575),
])
def test_parameter_counts(arch, num_classes, two_heads, expected):
    assert count_parameters(build_model(arch, num_classes, two_heads=two_heads)) == expected


@pytest.mark.parametrize('arch,num_classes,two_heads,width', [
    ('wideresnet', 10, False, 128), ('wideresnet', 10, True, 128), ('resnet50', 127, False, 2048),
    ('resnext', 10, False, 1024)])
def test_penultimate_features_on_request_change_nothing_else(arch, num_classes, two_heads, width):
    """with_features=True (DASO) also returns the pooled features the heads read: 128-d for
    WRN-28-2, 2048 for ResNet-50; the logits and the parameters are those of the plain forward."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes, two_heads=two_heads).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain, output = model(x), model(x, with_features=True)
    assert plain.features is None and output.features.shape == (2, width) and model.num_features == width
    assert (plain.balanced is None, output.balanced is None) == (not two_heads, not two_heads)
    for head, fc in (('logits', model.fc), ('balanced', model.fc_balanced)):
        if getattr(plain, head) is not None:
            a, b = getattr(plain, head), getattr(output, head)
            assert torch.equal(a, b) and torch.allclose(fc(output.features), a, atol=1e-5)


def test_resnet50_1000_way_count(resnet1000):
    assert count_parameters(resnet1000) == 25_549_352


def test_resnet50_matches_torchvision_with_cifar_stem(resnet1000):
    """Same weights in torchvision's ResNet-50 (3x3 stem, no max-pool) give the same logits."""
    import torchvision
    ref = torchvision.models.resnet50(weights=None)
    ref.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    ref.maxpool = nn.Identity()
    ref.load_state_dict(resnet1000.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    resnet1000.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(resnet1000(x).logits, ref(x))


def test_resnext_defaults_follow_fixmatch(resnext10):
    small, big = resnext10, build_model('resnext', 100)
    for model, groups, blocks in ((small, 4, 2), (big, 8, 3)):
        assert {m.groups for m in model.modules() if isinstance(m, nn.Conv2d)} == {1, groups}
        assert [len(s) for s in (model.stage_1, model.stage_2, model.stage_3)] == [blocks] * 3
        assert [s[-1].conv_expand.out_channels for s in (model.stage_1, model.stage_2, model.stage_3)] \
            == [256, 512, 1024]
    # Inner widths D = cardinality * base_width * (1, 2, 4): 16/32/64 and 512/1024/2048.
    assert [s[0].conv_conv.in_channels for s in (small.stage_1, small.stage_2, small.stage_3)] == [16, 32, 64]
    assert [s[0].conv_conv.in_channels for s in (big.stage_1, big.stage_2, big.stage_3)] == [512, 1024, 2048]
    # Measured; ResNeXt-29 8x64d is the paper's 34.4M plus a 1025x100 head.
    assert count_parameters(small) == 1_019_722
    assert count_parameters(big) == 34_518_948
    assert _forward(big).logits.shape == (2, 100)


# --- output shapes ---

@pytest.mark.parametrize('arch,num_classes', [('wideresnet', 10), ('resnet50', 127), ('resnext', 10)])
@pytest.mark.parametrize('size', [32, 64])
def test_output_shapes(arch, num_classes, size):
    torch.manual_seed(0)
    out = _forward(build_model(arch, num_classes), size)
    assert out.logits.shape == (2, num_classes) and out.balanced is None and out.features is None
    out = _forward(build_model(arch, num_classes, two_heads=True), size)
    assert out.logits.shape == out.balanced.shape == (2, num_classes)
    assert out.projection is None and out.centres is None


@pytest.mark.parametrize('arch', ARCHS)
def test_two_heads_are_distinct(arch):
    torch.manual_seed(0)
    model = build_model(arch, 10, two_heads=True)
    assert isinstance(model.fc, nn.Linear) and isinstance(model.fc_balanced, nn.Linear)
    assert model.fc is not model.fc_balanced
    assert model.fc.weight.data_ptr() != model.fc_balanced.weight.data_ptr()
    logits, balanced = _forward(model)[:2]
    assert not torch.allclose(logits, balanced)


# --- WideResNet details ---

def test_wrn_batchnorm_momentum_and_leaky_slope(wrn10):
    bns = [m for m in wrn10.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 2 * 12 + 1 and all(m.momentum == 0.001 for m in bns)
    leaky = [m for m in wrn10.modules() if isinstance(m, nn.LeakyReLU)]
    assert leaky and all(m.negative_slope == 0.1 for m in leaky)
    assert not any(isinstance(m, nn.ReLU) for m in wrn10.modules())


def test_resnext_batchnorm_momentum_and_leaky_slope(resnext10):
    assert all(m.momentum == 0.001 for m in resnext10.modules() if isinstance(m, nn.BatchNorm2d))
    leaky = [m for m in resnext10.modules() if isinstance(m, nn.LeakyReLU)]
    assert leaky and all(m.negative_slope == 0.1 for m in leaky)


def _std_close(w, expected, tol=0.1):
    return abs(w.std().item() - expected) / expected < tol


@pytest.mark.parametrize('arch,num_classes', [('wideresnet', 10), ('resnet50', 127), ('resnext', 10)])
def test_initialisation(arch, num_classes):
    torch.manual_seed(0)
    model = build_model(arch, num_classes, two_heads=True)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        elif isinstance(m, nn.Linear):
            assert torch.all(m.bias == 0)
            # Xavier normal: std = sqrt(2 / (fan_in + fan_out)); the default init is ~2x smaller.
            assert _std_close(m.weight, math.sqrt(2.0 / sum(m.weight.shape)), tol=0.15)
    # Kaiming normal, fan_out: std = gain / sqrt(out_channels * k * k).
    conv = max((m for m in model.modules() if isinstance(m, nn.Conv2d)), key=lambda m: m.weight.numel())
    gain = math.sqrt(2.0) if arch == 'resnet50' else math.sqrt(2.0 / (1 + 0.01 ** 2))
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert _std_close(conv.weight, gain / math.sqrt(fan_out))


def test_wrn_activate_before_residual(wrn10):
    """First WRN group: shortcut sees relu1(bn1(x)); later widening blocks: raw x."""
    seen = {}
    abr, plain = wrn10.block1[0], wrn10.block2[0]
    hooks = [blk.conv_shortcut.register_forward_pre_hook(
        lambda mod, inp, name=name: seen.__setitem__(name, inp[0].clone()))
        for name, blk in (('abr', abr), ('plain', plain))]
    hooks += [blk.register_forward_pre_hook(
        lambda mod, inp, name=name: seen.__setitem__(name + '_in', inp[0].clone()))
        for name, blk in (('abr', abr), ('plain', plain))]
    try:
        _forward(wrn10)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        activated = nn.functional.leaky_relu(abr.bn1(seen['abr_in']), 0.1)
    torch.testing.assert_close(seen['abr'], activated)
    torch.testing.assert_close(seen['plain'], seen['plain_in'])
    assert abr.activate_before_residual and not plain.activate_before_residual


def test_wrn_10_1_builds_and_runs():
    model = build_model('wideresnet', 10, depth=10, widen_factor=1)
    assert [len(b) for b in (model.block1, model.block2, model.block3)] == [1, 1, 1]
    assert model.fc.in_features == 64
    assert _forward(model).logits.shape == (2, 10)
    assert count_parameters(model) < count_parameters(build_model('wideresnet', 10)) / 10


# --- argument checks ---

@pytest.mark.parametrize('depth', [27, 4, 0])
def test_bad_wrn_depth_raises(depth):
    with pytest.raises(ValueError, match='6n\\+4') as info:
        build_model('wideresnet', 10, depth=depth)
    assert isinstance(info.value, UserError)


def test_resnet50_rejects_depth_and_width():
    with pytest.raises(ValueError, match='resnet50'):
        build_model('resnet50', 127, depth=18)
    with pytest.raises(ValueError, match='resnet50'):
        build_model('resnet50', 127, widen_factor=2)


def test_resnext_overrides_and_bad_depth():
    model = build_model('resnext', 10, depth=11, widen_factor=2)
    assert len(model.stage_1) == 1 and model.stage_1[0].conv_conv.in_channels == 4 * 2
    with pytest.raises(ValueError, match='depth'):
        build_model('resnext', 10, depth=5)


def test_unknown_arch_raises_listing_archs():
    with pytest.raises(ValueError) as info:
        build_model('vgg16', 10)
    assert all(a in str(info.value) for a in ARCHS)
    assert ARCHS == ('wideresnet', 'wideresnet_daso', 'wideresnet_cossl', 'wideresnet_usb', 'resnext', 'resnet50')


# --- the WideResNets of the official codes ---

@pytest.mark.parametrize('arch,num_classes,expected', [
    ('wideresnet_daso', 10, 1_467_610), ('wideresnet_daso', 100, 1_479_220),   # ytaek-oh/daso lib/models/wrn.py
    ('wideresnet_cossl', 10, 1_468_126 - 516), ('wideresnet_cossl', 100, 1_479_736 - 516),  # without its rotation head
    ('wideresnet_usb', 10, 1_467_626), ('wideresnet_usb', 100, 1_479_236),     # USB wrn_28_2: a stem bias
])
def test_official_wideresnets_have_their_codes_parameter_counts(arch, num_classes, expected):
    assert count_parameters(build_model(arch, num_classes)) == expected


@pytest.mark.parametrize('arch,blocks,final', [
    ('wideresnet', (1e-5, 0.001), (1e-5, 0.001)), ('wideresnet_daso', (1e-5, 0.1), (1e-5, 0.1)),
    ('wideresnet_cossl', (1e-3, 0.1), (1e-3, 0.1)), ('wideresnet_usb', (1e-5, 0.001), (1e-3, 0.001))])
def test_official_wideresnets_batchnorm_settings(arch, blocks, final):
    """(eps, momentum) of every BatchNorm of the blocks, and of the last one; CoSSL's
    BatchNorm2d(channels, 1e-3) passes 1e-3 where PyTorch takes eps."""
    model = build_model(arch, 10, depth=10, widen_factor=1)
    settings = {(m.eps, m.momentum) for name, m in model.named_modules()
                if isinstance(m, nn.BatchNorm2d) and name.startswith('block')}
    assert settings == {blocks} and (model.bn1.eps, model.bn1.momentum) == final


def reference_forward(model, x, preactivate_widening, eps, final_eps):
    """A WRN forward in train mode written from the official definitions: a block adds its shortcut
    (the input, or a 1x1 convolution of it) to conv2(lrelu(bn2(conv1(a)))) with a = lrelu(bn1(input));
    the first block of stage 1 also feeds a to its shortcut; a later widening block feeds a to conv1
    in the MixMatch lineage (DASO, CoSSL) and its raw input in FixMatch-pytorch and USB."""
    def activate(norm, t, e):
        return F.leaky_relu(F.batch_norm(t, None, None, norm.weight, norm.bias, True, 0.0, e), 0.1)

    out = F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=1)
    for stage, group in enumerate((model.block1, model.block2, model.block3)):
        for number, block in enumerate(group):
            a = activate(block.bn1, out, eps)
            if block.conv_shortcut is None:
                path, shortcut = a, out
            elif stage == 0 and number == 0:
                path, shortcut = a, F.conv2d(a, block.conv_shortcut.weight, stride=block.conv_shortcut.stride)
            else:
                path = a if preactivate_widening else out
                shortcut = F.conv2d(out, block.conv_shortcut.weight, stride=block.conv_shortcut.stride)
            h = F.conv2d(path, block.conv1.weight, stride=block.conv1.stride, padding=1)
            h = F.conv2d(activate(block.bn2, h, eps), block.conv2.weight, padding=1)
            out = shortcut + h
    features = activate(model.bn1, out, final_eps).mean(dim=(2, 3))
    return features @ model.fc.weight.T + model.fc.bias


@pytest.mark.parametrize('arch,preactivate,eps,final_eps', [
    ('wideresnet', False, 1e-5, 1e-5), ('wideresnet_daso', True, 1e-5, 1e-5), ('wideresnet_cossl', True, 1e-3, 1e-3),
    ('wideresnet_usb', False, 1e-5, 1e-3)])
def test_official_wideresnets_compute_their_codes_forward(arch, preactivate, eps, final_eps):
    torch.manual_seed(0)
    model = build_model(arch, 10, depth=10, widen_factor=2).train()
    for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # (not the identity of the init)
        nn.init.normal_(norm.weight, 1.0, 0.3)
        nn.init.normal_(norm.bias, 0.0, 0.3)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits = model(x).logits
        torch.testing.assert_close(logits, reference_forward(model, x, preactivate, eps, final_eps))
        # the reference tells the two wirings apart
        assert not torch.allclose(logits, reference_forward(model, x, not preactivate, eps, final_eps), atol=1e-3)


@pytest.mark.parametrize('arch', ['wideresnet', 'wideresnet_daso', 'wideresnet_cossl', 'wideresnet_usb'])
def test_every_method_trains_on_every_wideresnet(arch):
    """Every method's heads on every WideResNet: the training forward gives the fields its loss reads
    (the balanced logits, the features, CCL's projections), on a WRN-10-1."""
    from methods import METHODS
    for name, method in METHODS.items():
        model = build_model(arch, 10, two_heads=method.two_heads, depth=10, widen_factor=1,
                            projection=method.projection_heads).train()
        output = model(torch.randn(4, 3, 32, 32), with_features=method.with_features)
        assert output.logits.shape == (4, 10), name
        assert (output.balanced is not None) == method.two_heads, name
        assert (output.features is not None) == method.with_features, name
        assert (output.projection is not None) == (output.centres is not None) == method.projection_heads, name
