"""ResNet50 (torchvision's v1.5 layout), written out so the hot path never imports torchvision.

``import torchvision`` costs about 0.8 s on a CPU core: ``torchvision.ops`` pulls in
``torch._dynamo``. Every Predictor and training worker pays it at start-up, on the critical
path before the first prediction. This module builds the same network from ``torch.nn``
alone: the same modules, registered in the same order, initialised in the same order from
the same random stream, so its ``state_dict`` keys equal torchvision's (artifacts trained
with either load in both), its outputs equal torchvision's for the same weights, and the
same seed gives the same initial weights (``tests/photoz/test_resnet.py`` checks all three).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

EXPANSION = 4  # a bottleneck block's output channels per "planes"
RESNET50_BLOCKS = (3, 4, 6, 3)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided: torchvision's v1.5) -> 1x1, plus the shortcut."""

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = _conv1x1(c_in, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * EXPANSION)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ``ResNet`` with ``Bottleneck`` blocks, groups 1, no dilation."""

    # build_model swaps these for its own (nn.Identity for a small stem, a dropout head)
    maxpool: nn.Module
    fc: Any

    def __init__(self, blocks: tuple[int, ...] = RESNET50_BLOCKS, num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, blocks[0])
        self.layer2 = self._make_layer(128, blocks[1], stride=2)
        self.layer3 = self._make_layer(256, blocks[2], stride=2)
        self.layer4 = self._make_layer(512, blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * EXPANSION, num_classes)
        if not self.conv1.weight.is_meta:
            self._initialise()

    def _initialise(self) -> None:
        """torchvision's initialisation, in its order. Not on the meta device (load_artifact
        builds there, then assigns the saved weights): nothing to initialise, and an init
        there runs torch._refs, which imports torch._dynamo (the 0.8 s avoided above)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * EXPANSION:
            # built before the first block, as torchvision does (same random stream)
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * EXPANSION, stride),
                nn.BatchNorm2d(planes * EXPANSION),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * EXPANSION
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet50(num_classes: int = 1000) -> ResNet:
    """A randomly initialised ResNet50, as ``torchvision.models.resnet50(weights=None)``."""
    return ResNet(RESNET50_BLOCKS, num_classes)
