"""``tinyresnet``: a ~77K-parameter ResNet of torchvision's own blocks, for smoke tests and laptops.

Not for identifying real plants: it is the smallest network with the shape plantray relies on (a
convolutional body, global pooling, one ``nn.Linear`` head called ``fc``), so plumbing — training runs,
checkpoints, resume and fault tests, classify on a cluster — can be checked in seconds instead of minutes.
Its weights are ~0.3 MB where ResNet-18's are 45 MB and ResNet-50's 98 MB (a training checkpoint, with
Adam's state, is about three times that).
"""

from __future__ import annotations

import torch
from torchvision.models.resnet import BasicBlock, conv1x1

WIDTHS = (16, 32, 64)  # channels of the three stages (ResNet-18 has 64, 128, 256, 512)


def _stage(inplanes: int, planes: int, stride: int) -> BasicBlock:
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = torch.nn.Sequential(conv1x1(inplanes, planes, stride), torch.nn.BatchNorm2d(planes))
    return BasicBlock(inplanes, planes, stride=stride, downsample=downsample)


class TinyResNet(torch.nn.Module):
    """Stem (3x3 conv, stride 2, and ResNet's 3x3 max pool) and three one-block stages of torchvision's
    ``BasicBlock``, then global average pooling and ``fc``: a ResNet in miniature.

    Args:
        num_classes: size of the head (plantray replaces it with one of the model's label count).
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        first = WIDTHS[0]
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, first, 3, stride=2, padding=1, bias=False),
                                        torch.nn.BatchNorm2d(first), torch.nn.ReLU(inplace=True),
                                        torch.nn.MaxPool2d(3, stride=2, padding=1))
        stages, inplanes = [], first
        for i, planes in enumerate(WIDTHS):
            stages.append(_stage(inplanes, planes, 1 if i == 0 else 2))
            inplanes = planes
        self.layers = torch.nn.Sequential(*stages)
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.layers(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


# plantray's own architectures, beside torchvision's: name -> constructor taking no arguments.
ARCHS = {"tinyresnet": TinyResNet}
