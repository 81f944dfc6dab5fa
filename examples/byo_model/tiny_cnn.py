"""A researcher's own classifier: a small CIFAR-style CNN for 32x32 images (any channel count).

salbench loads it by name, ``--model examples/byo_model/tiny_cnn.py:make_model``, and its weights with
``--checkpoint`` (a plain ``torch.save(model.state_dict(), path)``). Nothing here knows about salbench.
"""

from __future__ import annotations

from torch import nn


class TinyCNN(nn.Module):
    """Three conv blocks (32x32 -> 16 -> 8 -> 4) and a linear head; ``features[-1]`` is the 4x4 layer
    the CAM methods explain (found by salbench's rule for a ``features`` sequence)."""

    def __init__(self, num_classes: int = 10, channels: int = 3, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(channels, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(4 * width, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def make_model(num_classes: int = 10, channels: int = 3, width: int = 32) -> nn.Module:
    """The factory salbench calls (keyword arguments from ``model.kwargs`` / ``--model-kwargs``)."""
    return TinyCNN(num_classes=num_classes, channels=channels, width=width)
