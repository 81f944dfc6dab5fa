"""Small classifiers for the embedded benchmark, named like torchvision's ResNet and VGG.

Module names follow torchvision (``conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc`` for the
ResNet; ``features, avgpool, classifier`` for the VGG), so the target-layer rules (``layer4[-1]``,
``features[-1]``) are the same code path as for ResNet50 / VGG16. At the embedded input size (112x112)
both give a 7x7 grid at the target layer, like ResNet50/VGG16 at 224x224: the ResNet keeps torchvision's
stem (strided conv + max-pool, stride 4) and its stage strides are (1, 2, 2, 1) instead of (1, 2, 2, 2),
so the total stride is 16 instead of 32; the VGG has four pooling stages instead of five. Widths are
small so that the embedded default runs on two CPU cores in minutes.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


class EmbeddedResNet(nn.Module):
    """ResNet-style classifier: stem (3x3 conv stride 2, max-pool stride 2) + four stages of BasicBlocks.

    Args:
        num_classes: number of output logits.
        widths: channels of layer1..layer4.
        blocks: BasicBlocks per stage.
        strides: stride of the first block of each stage.

    Shapes: input (N,3,112,112) -> ``layer4`` output (N,widths[3],7,7) -> logits (N,num_classes).
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[int, int, int, int] = (8, 16, 32, 64),
        blocks: tuple[int, int, int, int] = (1, 1, 1, 1),
        strides: tuple[int, int, int, int] = (1, 2, 2, 1),
    ) -> None:
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(widths[0], blocks[0], stride=strides[0])
        self.layer2 = self._make_layer(widths[1], blocks[1], stride=strides[1])
        self.layer3 = self._make_layer(widths[2], blocks[2], stride=strides[2])
        self.layer4 = self._make_layer(widths[3], blocks[3], stride=strides[3])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, n_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, n_blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class EmbeddedVGG(nn.Module):
    """VGG-style classifier with batch norm: ``features`` (conv-bn-relu blocks, 4 max-pools) + classifier.

    ``features[-1]`` is the last max-pool, as in torchvision's ``vgg16_bn``; its output is 7x7 at 112x112.

    Args:
        num_classes: number of output logits.
        cfg: channels per conv, ``"M"`` for a 2x2 max-pool.
    """

    def __init__(
        self,
        num_classes: int = 10,
        cfg: tuple[int | str, ...] = (8, "M", 16, "M", 32, "M", 64, 64, "M"),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [
                    nn.Conv2d(in_ch, int(v), 3, padding=1),
                    nn.BatchNorm2d(int(v)),
                    nn.ReLU(inplace=True),
                ]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Flatten(1), nn.Dropout(0.2), nn.Linear(in_ch, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))
