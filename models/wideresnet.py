"""WideResNet-28-2 for 32x32 images, as the official codes of the methods build it.

The default follows FixMatch-pytorch (kekmodel, MIT; models/wideresnet.py), the network of SimPro,
ACR and CCL: same layers, BN momentum (0.001), LeakyReLU(0.1) and initialisation, so parameter
counts match (1,467,610 for 10 classes). Its variants (models/__init__.py) are the networks of
other official codes: the MixMatch lineage (ytaek-oh/daso lib/models/wrn.py, YUE-FAN/CoSSL
models/wrn.py), whose widening blocks feed the activated input to their convolution, and USB's
(microsoft/Semi-supervised-learning semilearn/nets/wrn/wrn.py). An optional second ("balanced")
linear head on the pooled features serves ACR_d (models/common.py: NetworkOutput).
"""
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import NetworkOutput, classify, init_weights, projection_heads

BN_MOMENTUM = 0.001  # slow running statistics, as in FixMatch
LEAKY_SLOPE = 0.1


class BasicBlock(nn.Module):
    """Pre-activation block: bn1-relu1-conv1-bn2-relu2-conv2, plus shortcut. `preactivate_widening`:
    a widening block without activate_before_residual feeds relu1(bn1(x)) to conv1, its shortcut the
    raw x (the MixMatch lineage); without it, conv1 reads the raw x (FixMatch-pytorch, USB)."""

    def __init__(self, in_planes, out_planes, stride, drop_rate=0.0, activate_before_residual=False,
                 preactivate_widening=False, bn=None):
        super().__init__()
        bn = bn or dict(momentum=BN_MOMENTUM)
        self.bn1 = nn.BatchNorm2d(in_planes, **bn)
        self.relu1 = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, **bn)
        self.relu2 = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.conv_shortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        self.activate_before_residual = activate_before_residual
        self.preactivate_widening = preactivate_widening

    def forward(self, x):
        if not self.equal_in_out and self.activate_before_residual:
            # Shortcut and conv path both see the activated input.
            x = self.relu1(self.bn1(x))
            out = x
        elif self.equal_in_out or self.preactivate_widening:
            out = self.relu1(self.bn1(x))
        else:
            # Kept from FixMatch-pytorch: a widening block without
            # activate_before_residual feeds raw x to conv1 (bn1 goes unused).
            out = x
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.equal_in_out else self.conv_shortcut(x)
        return shortcut + out


def _group(n, in_planes, out_planes, stride, drop_rate, activate_before_residual=False, **block):
    """n blocks; only the first changes width/resolution."""
    return nn.Sequential(*[
        BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                   drop_rate, activate_before_residual, **block)
        for i in range(n)])


class WideResNet(nn.Module):
    """`preactivate_widening`: BasicBlock's; `bn`: the BatchNorm2d keyword arguments of the blocks
    (default momentum 0.001), `final_bn` those of the last BatchNorm (default: `bn`); `stem_bias`:
    the first convolution has a bias (USB)."""

    def __init__(self, num_classes, depth=28, widen_factor=2, drop_rate=0.0, two_heads=False, projection=False,
                 preactivate_widening=False, bn=None, final_bn=None, stem_bias=False, experts=0, depth_features=False,
                 contrast_dim=0):
        super().__init__()
        bn = bn or dict(momentum=BN_MOMENTUM)
        block = dict(preactivate_widening=preactivate_widening, bn=bn)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f'WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {depth}')
        if widen_factor < 1:
            raise ValueError(f'WideResNet widen_factor must be >= 1, got {widen_factor}')
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, channels[0], 3, stride=1, padding=1, bias=stem_bias)
        self.block1 = _group(n, channels[0], channels[1], 1, drop_rate, activate_before_residual=True, **block)
        self.block2 = _group(n, channels[1], channels[2], 2, drop_rate, **block)
        self.block3 = _group(n, channels[2], channels[3], 2, drop_rate, **block)
        self.bn1 = nn.BatchNorm2d(channels[3], **(final_bn or bn))
        self.relu = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.num_features = channels[3]
        self.fc = nn.Linear(channels[3], num_classes)
        self.fc_balanced = nn.Linear(channels[3], num_classes) if two_heads else None
        # CCL's projection heads (its centres project the balanced head's weight)
        self.projection, self.centre_projection = projection_heads(channels[3]) if projection else (None, None)
        # CPE's classwise BatchNorm (machengcheng2016/CPE-LTSSL semilearn/nets/wrn/wrn_cbn.py): three BatchNorms of
        # PyTorch's defaults on the last feature map, and `experts` linear heads (fc the first) on each branch
        self.cbn = nn.ModuleList(nn.BatchNorm2d(channels[3]) for _ in range(3)) if experts else None
        self.expert_fc = nn.ModuleList(nn.Linear(channels[3], num_classes) for _ in range(experts - 1)) \
            if experts else None

        # Meta-Expert's multi-depth features (YaxinHou/Meta-Expert semilearn/nets/wrn/wrn_metaexpert.py): a BatchNorm
        # of the final one's settings, the activation and pooling on the stem's and each group's output
        self.depth_bn = nn.ModuleList(nn.BatchNorm2d(c, **(final_bn or bn)) for c in channels) \
            if depth_features else None

        # BaCon's linear projection for its contrastive loss (fqhank/AAAI24-BaCon-CISSL bacon.py, ABCNet)
        self.contrast = nn.Linear(channels[3], contrast_dim) if contrast_dim else None

        init_weights(self, 'leaky_relu')
        for head in self.expert_fc or ():  # (added after its network's initialisation: PyTorch's defaults)
            head.reset_parameters()
        if self.contrast is not None:  # (so are ABCNet's auxiliary head and projection)
            self.fc_balanced.reset_parameters()
            self.contrast.reset_parameters()

    def forward(self, x, with_features=False, projection=None):
        """`projection` (a network with BaCon's): 'trained' returns it, 'detached' returns it without a
        gradient (its parameters then stay out of the step, as when its code computes and does not use it)."""
        stages = [self.conv1(x)]
        for group in (self.block1, self.block2, self.block3):
            stages.append(group(stages[-1]))
        out = self.relu(self.bn1(stages[-1]))
        if self.cbn is not None:
            output = self.experts(out, with_features)
            if self.depth_bn is None:
                return output
            depths = [torch.flatten(F.adaptive_avg_pool2d(self.relu(bn(stage)), 1), 1)
                      for bn, stage in zip(self.depth_bn, stages)]
            return output._replace(depths=torch.cat(depths, 1))
        # Adaptive pooling lets the same net take 32x32 or 64x64 inputs.
        feat = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        output = classify(self, feat, with_features)
        if projection is None:
            return output
        with torch.no_grad() if projection == 'detached' else nullcontext():
            return output._replace(projection=self.contrast(feat))

    def experts(self, out, with_features=False):
        """CPE: every expert on every BatchNorm branch of the same feature map, (rows, experts, branches,
        classes); `logits` the first expert's mean over the branches (its code's `logits`)."""
        branches = [torch.flatten(F.adaptive_avg_pool2d(bn(out), 1), 1) for bn in self.cbn]
        experts = torch.stack([torch.stack([head(f) for f in branches], 1) for head in (self.fc, *self.expert_fc)], 1)
        features = torch.stack(branches, 1).mean(1) if with_features else None
        return NetworkOutput(experts[:, 0].mean(1), features=features, experts=experts)
