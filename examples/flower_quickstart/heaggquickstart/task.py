"""heaggquickstart: the model, the data and the training loop (plain PyTorch).

scikit-learn's bundled 8×8 digits stand in for CIFAR-10, so everything runs offline: a
fifth of them is the ServerApp's central test set, the rest is split IID across the
nodes, and each node keeps a fifth of its share for its own evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

NUM_CLASSES = 10
SEED = 0


class Net(nn.Module):
    """A small CNN for 1×8×8 images (1,898 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 2 * 2, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return images, torch.tensor(digits.target)


def _split() -> tuple[np.ndarray, np.ndarray]:
    """(central test indices, federated indices), the same on every node."""
    order = np.random.default_rng(SEED).permutation(len(load_digits().target))
    cut = len(order) // 5
    return order[:cut], order[cut:]


def load_data(
    partition_id: int, num_partitions: int, batch_size: int
) -> tuple[DataLoader, DataLoader]:
    """This node's IID partition: (train loader, validation loader)."""
    images, labels = _digits()
    part = np.array_split(_split()[1], num_partitions)[partition_id]
    cut = len(part) * 4 // 5
    train, val = part[:cut], part[cut:]
    trainloader = DataLoader(
        TensorDataset(images[train], labels[train]), batch_size=batch_size, shuffle=True
    )
    valloader = DataLoader(TensorDataset(images[val], labels[val]), batch_size=batch_size)
    return trainloader, valloader


def load_centralized_dataset() -> DataLoader:
    images, labels = _digits()
    test = _split()[0]
    return DataLoader(TensorDataset(images[test], labels[test]), batch_size=128)


def train(net: Net, trainloader: DataLoader, epochs: int, lr: float, device: torch.device) -> float:
    """Train the model on the training set; the mean training loss."""
    net.to(device)
    criterion = nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    running_loss = 0.0
    for _ in range(epochs):
        for images, labels in trainloader:
            optimizer.zero_grad()
            loss = criterion(net(images.to(device)), labels.to(device))
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
    return running_loss / (epochs * len(trainloader))


def test(net: Net, testloader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Validate the model on the test set: (mean loss, accuracy)."""
    net.to(device)
    criterion = nn.CrossEntropyLoss()
    correct, loss = 0, 0.0
    net.eval()
    with torch.no_grad():
        for images, labels in testloader:
            outputs = net(images.to(device))
            loss += criterion(outputs, labels.to(device)).item()
            correct += int((outputs.argmax(1) == labels.to(device)).sum())
    return loss / len(testloader), correct / len(testloader.dataset)  # type: ignore[arg-type]
