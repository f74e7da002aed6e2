"""Small data sets that ship with installed packages, for the offline examples."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

__all__ = ["ArticleCNN", "digits_28x28"]


def digits_28x28() -> TensorDataset:
    """scikit-learn's bundled 8×8 digits, upsampled to 28×28 (the article's MNIST shape)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    upsampled = nn.functional.interpolate(
        images, size=(28, 28), mode="bilinear", align_corners=False
    )
    return TensorDataset(upsampled, torch.tensor(digits.target, dtype=torch.int64))


class ArticleCNN(nn.Module):
    """The founding article's CNN: conv 20@5×5, conv 50@5×5, fc 500, fc 10 on 28×28."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        logits: torch.Tensor = self.fc2(torch.relu(self.fc1(x.flatten(1))))
        return logits
