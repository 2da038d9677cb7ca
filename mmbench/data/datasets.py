"""Dataset helpers shared by task plugins."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor
from torch.utils.data import Dataset


class TensorDictDataset(Dataset):
    """In-memory samples: `{modality: tensors[m][i], ..., "label": labels[i]}`."""

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
