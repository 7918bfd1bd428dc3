"""ResNet-50 with a CIFAR-style stem, for small (32x32 / 64x64) long-tailed images.

Bottleneck blocks follow torchvision's ResNet (stride on the 3x3 conv, expansion 4,
layers [3, 4, 6, 3]); the 7x7/stride-2 stem and max-pool are replaced by a 3x3/stride-1
conv, since small inputs cannot afford a 4x early downsampling. 23,760,575 parameters
with a 127-way head (ImageNet-127). An optional second ("balanced") linear head serves
ACR_d (models/common.py: NetworkOutput).
"""
import torch
import torch.nn as nn

from .common import classify, init_weights, projection_heads


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, num_classes, layers=(3, 4, 6, 3), two_heads=False, projection=False):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(64, layers[0], stride=1)
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512 * Bottleneck.expansion
        self.fc = nn.Linear(self.num_features, num_classes)
        self.fc_balanced = nn.Linear(self.num_features, num_classes) if two_heads else None
        # CCL's projection heads (its centres project the balanced head's weight)
        self.projection, self.centre_projection = projection_heads(self.num_features) if projection else (None, None)

        init_weights(self, 'relu')

    def _make_layer(self, planes, blocks, stride):
        layers = []
        for i in range(blocks):
            layers.append(Bottleneck(self.in_planes, planes, stride if i == 0 else 1))
            self.in_planes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x, with_features=False):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        feat = torch.flatten(self.avgpool(out), 1)
        return classify(self, feat, with_features)


def resnet50(num_classes, two_heads=False, projection=False):
    return ResNet(num_classes, (3, 4, 6, 3), two_heads=two_heads, projection=projection)
