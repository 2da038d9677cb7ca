"""What the two movie-genre tasks (`mmimdb`, `moviescope`) share: multi-label genres from a poster and a plot,
read and preprocessed as MMBT's code does (Kiela et al., arXiv 1909.02950, 2019; facebookresearch/mmbt @ 1d079e3);
the code of Dynamic UDA (Monter-Aldana et al., ACL 2023; IvonneMont/Multimodal-Transformers @ 86d0e85) reuses it.

Images: Resize(256) + CenterCrop(224) and MMBT's dataset statistics (mean 0.46777044 / 0.44531429 / 0.40661017,
std 0.12221994 / 0.12145835 / 0.14380469). Text: BERT word pieces of the plot, `max_length` 512. Predictions:
sigmoid > 0.5; metrics micro/macro F1 (MMBT's `train.py`) and micro/macro AP (Dynamic UDA's tables use both).
Class ids follow the task's fixed genre list (MMBT numbers genres by first appearance in its train.jsonl; a
permutation of the classes changes no metric).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from mmbench_plugins.tasks.common.imagetext import ImageTextParams, ImageTextTask


class GenreParams(ImageTextParams):
    max_length: int = Field(512, ge=4, le=512, description="word pieces per plot (MMBT: 512)")


class GenreTask(ImageTextTask):
    """Base of the movie-genre tasks (see the module docstring)."""

    Params = GenreParams
    multilabel = True
    metrics = ("f1_micro", "f1_macro", "map_micro", "map_macro")
    primary_metric = "f1_micro"
    resize = "shorter_side"
    mean = (0.46777044, 0.44531429, 0.40661017)
    std = (0.12221994, 0.12145835, 0.14380469)

    def genre_ids(self, genres: object) -> tuple[int, ...]:
        """Class ids of a sample's genre list; ValueError naming an unknown genre (or a list that is none)."""
        if not isinstance(genres, Sequence) or isinstance(genres, str) or not genres:
            raise ValueError(f"the genres are {genres!r}, not a non-empty list of genre names")
        unknown = [g for g in genres if g not in self.classes]
        if unknown:
            raise ValueError(f"unknown genre {unknown[0]!r} (the {len(self.classes)} genres of {self.name}: "
                             f"{', '.join(self.classes)})")
        return tuple(sorted({self.classes.index(g) for g in genres}))
