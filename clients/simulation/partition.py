"""Splitting a data set among simulated clients: IID, Dirichlet(α) over labels, or a callable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

__all__ = ["Partition", "as_tensors", "partition_indices"]

Partition = str | Callable[[npt.NDArray[Any], int, np.random.Generator], list[npt.NDArray[Any]]]


def partition_indices(
    labels: npt.NDArray[Any],
    num_clients: int,
    partition: Partition,
    rng: np.random.Generator,
    alpha: float = 0.5,
) -> list[npt.NDArray[Any]]:
    """Split sample indices among clients: IID, Dirichlet(α) over labels, or a callable."""
    if callable(partition):
        parts = [np.asarray(p) for p in partition(labels, num_clients, rng)]
    elif partition == "iid":
        parts = list(np.array_split(rng.permutation(len(labels)), num_clients))
    elif partition == "dirichlet":
        parts = _dirichlet(labels, num_clients, rng, alpha)
    else:
        raise ValueError(f"partition must be 'iid', 'dirichlet' or a callable, not {partition!r}")
    if len(parts) != num_clients or any(len(p) == 0 for p in parts):
        raise ValueError(
            "the partition left a client without data; use fewer clients or a larger α"
        )
    return parts


def _dirichlet(
    labels: npt.NDArray[Any], num_clients: int, rng: np.random.Generator, alpha: float
) -> list[npt.NDArray[Any]]:
    """Each label's samples are dealt to clients in Dirichlet(α) proportions (small α: skewed)."""
    parts_lists: list[list[int]] = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet([alpha] * num_clients)
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for client, chunk in enumerate(np.split(members, cuts)):
            parts_lists[client].extend(chunk.tolist())
    return [np.array(sorted(p), dtype=np.int64) for p in parts_lists]


def as_tensors(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A torch Dataset or an (x, y) pair of arrays → (features, labels) tensors."""
    if isinstance(dataset, tuple) and len(dataset) == 2:
        x, y = dataset
        return torch.as_tensor(np.asarray(x), dtype=torch.float32), torch.as_tensor(np.asarray(y))
    if isinstance(dataset, Dataset):
        xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)  # type: ignore[arg-type]
        return torch.stack([torch.as_tensor(x) for x in xs]).float(), torch.as_tensor(ys)
    raise TypeError("dataset must be a torch Dataset or an (x, y) pair of arrays")
