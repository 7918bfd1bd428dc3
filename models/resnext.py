"""ResNeXt for CIFAR, after FixMatch-pytorch's `CifarResNeXt` (kekmodel, MIT):
https://github.com/kekmodel/FixMatch-pytorch/blob/master/models/resnext.py
itself after Xie et al., "Aggregated Residual Transformations" (type-C bottleneck).

3x3/64 stem, then 3 stages of (depth - 2) // 9 bottlenecks with output widths
64*widen_factor * (1, 2, 4) (256/512/1024 at the default widen_factor 4), strides 1/2/2.
Each bottleneck: 1x1 reduce to D = cardinality * int(base_width * width_ratio),
grouped 3x3, 1x1 expand, projection shortcut when widths differ. BN momentum 0.001
and LeakyReLU(0.1), as in the WideResNet. Optional second ("balanced") head for ACR_d.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import classify, init_weights

BN_MOMENTUM = 0.001
LEAKY_SLOPE = 0.1


class ResNeXtBottleneck(nn.Module):
    def __init__(self, in_channels, out_channels, stride, cardinality, base_width, widen_factor):
        super().__init__()
        # Inner width grows with the stage: base_width per group at the first stage.
        width_ratio = out_channels / (widen_factor * 64.0)
        d = cardinality * int(base_width * width_ratio)
        self.conv_reduce = nn.Conv2d(in_channels, d, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(d, momentum=BN_MOMENTUM)
        self.conv_conv = nn.Conv2d(d, d, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(d, momentum=BN_MOMENTUM)
        self.conv_expand = nn.Conv2d(d, out_channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.shortcut = nn.Sequential()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM))

    def forward(self, x):
        out = self.act(self.bn_reduce(self.conv_reduce(x)))
        out = self.act(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        return self.act(self.shortcut(x) + out)


class CifarResNeXt(nn.Module):
    def __init__(self, num_classes, cardinality=4, depth=28, base_width=4, widen_factor=4, two_heads=False):
        super().__init__()
        block_depth = (depth - 2) // 9
        if block_depth < 1:
            raise ValueError(f'ResNeXt depth must be >= 11 ((depth - 2) // 9 blocks per stage), got {depth}')
        if cardinality < 1 or base_width < 1:
            raise ValueError(f'ResNeXt cardinality and width must be >= 1, got {cardinality} and {base_width}')
        stages = [64, 64 * widen_factor, 128 * widen_factor, 256 * widen_factor]
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        args = (cardinality, base_width, widen_factor)
        self.stage_1 = self._stage(block_depth, stages[0], stages[1], 1, args)
        self.stage_2 = self._stage(block_depth, stages[1], stages[2], 2, args)
        self.stage_3 = self._stage(block_depth, stages[2], stages[3], 2, args)
        self.num_features = stages[3]
        self.fc = nn.Linear(stages[3], num_classes)
        self.fc_balanced = nn.Linear(stages[3], num_classes) if two_heads else None
        self.projection = self.centre_projection = None  # (CCL's projection heads: WRN and ResNet-50 only)

        init_weights(self, 'leaky_relu')

    @staticmethod
    def _stage(n, in_channels, out_channels, stride, args):
        return nn.Sequential(*[
            ResNeXtBottleneck(in_channels if i == 0 else out_channels, out_channels,
                              stride if i == 0 else 1, *args)
            for i in range(n)])

    def forward(self, x, with_features=False):
        out = self.act(self.bn_1(self.conv_1_3x3(x)))
        out = self.stage_3(self.stage_2(self.stage_1(out)))
        feat = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return classify(self, feat, with_features)
