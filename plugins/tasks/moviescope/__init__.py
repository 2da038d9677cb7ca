"""`moviescope`: movie genres from poster and synopsis, 13 genres, multi-label (Cascante-Bonilla et al., 2019), in
the layout of the code of Dynamic UDA (Monter-Aldana, López-Monroy & Sánchez-Vega, ACL 2023;
IvonneMont/Multimodal-Transformers @ 86d0e85, `data_sets/proc/moviescope/`).

Raw layout: `train.jsonl`, `dev.jsonl`, `test.jsonl` (one JSON object per line with the keys `id` (int), `title`
(TV titles end in U+00A0 and spaces), `label` (a list of genre names), `plot_keywords` (`|`-separated; a bare
`NaN` in 35 dev/test lines, which is not strict JSON and is read leniently) and `synopsis`, the text) and
`MatchedPosters/<id>.jpg`. Genres (13): Action, Animation, Biography, Comedy, Crime, Drama, Family, Fantasy,
Horror, Mystery, Romance, Sci-Fi, Thriller. A line that is not JSON, lacks a key, or names another genre is
listed in prepare's report; an empty synopsis is kept (the text is then `[CLS] [SEP]`, as the reference code
feeds it). Preprocessing and metrics: `genres.py` (MMBT's).
"""

from __future__ import annotations

import json
from pathlib import Path

from mmbench.api import hookimpl
from mmbench_plugins.tasks.common.genres import GenreTask
from mmbench_plugins.tasks.common.imagetext import Record

GENRES = ("Action", "Animation", "Biography", "Comedy", "Crime", "Drama", "Family", "Fantasy", "Horror", "Mystery",
          "Romance", "Sci-Fi", "Thriller")


class MoviescopeTask(GenreTask):
    """Moviescope (13 genres): synopsis + poster."""

    name = "moviescope"
    version = "1"
    source = "paolacascante.com/research/moviescope.html (splits with plots, posters)"
    primary_metric = "map_micro"
    classes = GENRES
    layout = ("  <raw>/train.jsonl, dev.jsonl, test.jsonl   one JSON object per line: id, title, label, "
              "plot_keywords, synopsis\n"
              "  <raw>/MatchedPosters/<id>.jpg")
    annotation_files = {"train": "train.jsonl", "val": "dev.jsonl", "test": "test.jsonl"}

    def records(self, raw: Path) -> list[Record]:
        out = []
        for split, path, number, line in self.annotation_lines(raw):
            try:
                movie = json.loads(line)  # Python's reader accepts the release's bare NaN
                sample, synopsis, labels = str(movie["id"]), movie["synopsis"], self.genre_ids(movie["label"])
            except KeyError as exc:
                out.append(Record.bad_line(split, path, number, f"no key {exc} (a line holds id, title, label, "
                                                                "plot_keywords, synopsis)"))
            except (ValueError, TypeError) as exc:
                out.append(Record.bad_line(split, path, number, str(exc)))
            else:
                out.append(Record(sample, split, synopsis if isinstance(synopsis, str) else "",
                                  raw / "MatchedPosters" / f"{sample}.jpg", labels))
        return out


@hookimpl
def mmbench_tasks():
    return [MoviescopeTask]
