"""Backbones: WideResNet-28-2 (CIFAR) as each official code builds it, CIFAR ResNeXt, and ResNet-50
with a CIFAR stem (ImageNet-127 at 32x32/64x64). Every forward returns a NetworkOutput
(models/common.py); `two_heads=True` adds the balanced head of ACR_d (its `balanced` logits),
`projection=True` CCL's projection heads, `contrast_dim` BaCon's linear projection.
"""
from torch import nn

from utils.errors import UserError

from .common import NetworkOutput as NetworkOutput  # (re-exported: what every forward returns)
from .resnet import resnet50
from .resnext import CifarResNeXt
from .wideresnet import WideResNet

# The WideResNets of the official codes (models/wideresnet.py), by the code they come from
WIDERESNETS = {
    # kekmodel/FixMatch-pytorch models/wideresnet.py: SimPro, ACR_d, ACR, CCL
    'wideresnet': dict(),
    # ytaek-oh/daso lib/models/wrn.py: DASO, and FixMatch, DARP and CReST+ as DASO's code runs them;
    # nn.BatchNorm2d's defaults (momentum 0.1)
    'wideresnet_daso': dict(preactivate_widening=True, bn=dict(momentum=0.1)),
    # YUE-FAN/CoSSL models/wrn.py: DASO's blocks, its BatchNorm2d(channels, 1e-3) giving eps 1e-3 and
    # momentum 0.1; its rotation head (Linear(128, 4), unused by FixMatch and CoSSL) is left out
    'wideresnet_cossl': dict(preactivate_widening=True, bn=dict(eps=1e-3, momentum=0.1)),
    # microsoft/Semi-supervised-learning semilearn/nets/wrn/wrn.py (wrn_28_2): FixMatch-pytorch's blocks,
    # a bias in the first convolution, the last BatchNorm with eps 1e-3
    'wideresnet_usb': dict(stem_bias=True, final_bn=dict(eps=1e-3, momentum=0.001)),
}
ARCHS = (*WIDERESNETS, 'resnext', 'resnet50')


class ModelConfigError(UserError, ValueError):
    """A bad arch/depth/width: a ValueError, and a UserError so train.py reports it cleanly."""


def build_model(arch, num_classes, two_heads=False, depth=None, widen_factor=None, bn_momentum=None,
                projection=False, experts=0, depth_features=False, contrast_dim=0):
    """Build a backbone. depth/widen_factor override WRN's 28/2 or ResNeXt's depth/width;
    bn_momentum overrides every BatchNorm's momentum (0.001 in WRN/ResNeXt, 0.1 in ResNet-50);
    `experts` > 0: CPE's experts on its classwise BatchNorm branches (a WideResNet's), with
    `depth_features` also Meta-Expert's pooled features of every depth (NetworkOutput.depths)."""
    model = _build(arch, num_classes, two_heads, depth, widen_factor, projection, experts, depth_features, contrast_dim)
    if bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = bn_momentum
    return model


def _build(arch, num_classes, two_heads, depth, widen_factor, projection, experts=0, depth_features=False,
           contrast_dim=0):
    if arch not in ARCHS:
        raise ModelConfigError(f'unknown arch {arch!r}; choose one of {", ".join(ARCHS)}')
    if (experts or depth_features) and (arch not in WIDERESNETS or two_heads or projection or not experts):
        raise ModelConfigError("CPE's experts need a WideResNet (its code has no other network with them)")
    if contrast_dim and (arch not in WIDERESNETS or not two_heads or projection or experts):
        raise ModelConfigError("BaCon's projection needs two heads on a WideResNet (its code has no other network)")
    if projection and (arch == 'resnext' or not two_heads):
        raise ModelConfigError("CCL's projection heads need two heads on a WideResNet or resnet50")
    if num_classes < 1:
        raise ModelConfigError(f'num_classes must be >= 1, got {num_classes}')
    try:
        if arch in WIDERESNETS:
            return WideResNet(num_classes,
                              depth=28 if depth is None else depth,
                              widen_factor=2 if widen_factor is None else widen_factor,
                              two_heads=two_heads, projection=projection, experts=experts,
                              depth_features=depth_features, contrast_dim=contrast_dim, **WIDERESNETS[arch])
        if arch == 'resnext':
            # FixMatch's settings: 4x4d ResNeXt-29 for CIFAR-10, 8x64d for CIFAR-100.
            cardinality, d, w = (4, 28, 4) if num_classes < 100 else (8, 29, 64)
            return CifarResNeXt(num_classes, cardinality=cardinality,
                                depth=d if depth is None else depth,
                                base_width=w if widen_factor is None else widen_factor,
                                two_heads=two_heads)
        if depth is not None or widen_factor is not None:
            raise ValueError('resnet50 has a fixed depth and width; do not pass --depth or --widen-factor')
        return resnet50(num_classes, two_heads=two_heads, projection=projection)
    except ValueError as e:
        raise ModelConfigError(str(e)) from None


def count_parameters(model):
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
