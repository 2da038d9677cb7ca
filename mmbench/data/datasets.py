"""Dataset helpers shared by task plugins."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch.utils.data import Dataset


class TensorDictDataset(Dataset):
    """In-memory samples: `{modality: tensors[m][i], ..., "label": labels[i]}`.

    The DataLoader fetches a whole batch at once (`__getitems__`: one indexing per tensor instead of a sample at a
    time and a stack), and gives it no worker processes (`in_memory`): there is nothing for them to do.
    """

    in_memory = True

    def __init__(self, tensors: Mapping[str, Tensor], labels: Tensor) -> None:
        lengths = {len(t) for t in tensors.values()} | {len(labels)}
        if len(lengths) != 1:
            raise ValueError(f"modalities and labels differ in length: {sorted(lengths)}")
        self.tensors = dict(tensors)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sample = {m: t[index] for m, t in self.tensors.items()}
        sample["label"] = self.labels[index]
        return sample

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor] | list[dict]:
        if type(self).__getitem__ is not TensorDictDataset.__getitem__:  # a subclass reshapes each sample
            return [self[i] for i in indices]
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = {m: t[index] for m, t in self.tensors.items()}
        batch["label"] = self.labels[index]
        return batch
