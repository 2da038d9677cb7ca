"""`mmimdb`: MM-IMDb from its raw release (Arevalo et al., 2017), movie genres from poster and plot, multi-label,
with the sample rules of MMBT's `scripts/mmimdb.py` (Kiela et al., arXiv 1909.02950, 2019;
facebookresearch/mmbt @ 1d079e3); Dynamic UDA (Monter-Aldana et al., ACL 2023) trains MMBT and MMBV on it.

Raw layout (`mmimdb.tar.gz` unpacked; the `mmimdb/` folder): `split.json` (`{"train": [ids], "dev": [ids],
"test": [ids]}`, 7-digit IMDb ids) and `dataset/<id>.json` (metadata with `plot`, a list of strings, and
`genres`, a list of names) beside `dataset/<id>.jpeg` (the poster).

Text: the longest string of `plot` (both reference pipelines). MMBT's rules, whose left-out samples are listed
in prepare's report: a movie with the genre `News` is left out; one with an empty plot is left out; a dev or
test movie with a genre no train movie has is left out. Classes: the 26 genres the release has besides `News`
(Dynamic UDA's paper: "26 categories"); a genre outside the release's 27 is an error listed in the report. Preprocessing
and metrics: `genres.py` (MMBT's).
"""

from __future__ import annotations

import json
from pathlib import Path

from mmbench.api import hookimpl
from mmbench_plugins.tasks.common.genres import GenreTask
from mmbench_plugins.tasks.common.imagetext import Record

GENRES = ("Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
          "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation", "Musical",
          "Western", "Sport", "Short", "Film-Noir", "Adult", "Reality-TV", "Talk-Show")
LEFT_OUT = "News"
SPLITS = {"train": "train", "val": "dev", "test": "test"}


class MMIMDbTask(GenreTask):
    """MM-IMDb (26 genres) from the raw release: longest plot + poster."""

    name = "mmimdb"
    version = "1"
    source = "github.com/johnarevalo/gmu-mmimdb (mmimdb.tar.gz from lisi1.unal.edu.co/mmimdb or archive.org)"
    classes = GENRES
    layout = ("  <raw>/split.json              {\"train\": [ids], \"dev\": [ids], \"test\": [ids]}\n"
              "  <raw>/dataset/<id>.json       with \"plot\": [str, ...] and \"genres\": [str, ...]\n"
              "  <raw>/dataset/<id>.jpeg       the poster")
    annotation_files = {"all": "split.json"}

    def records(self, raw: Path) -> list[Record]:
        path = self.annotation_paths(raw)["all"]
        try:
            split = json.loads(path.read_text(encoding="utf-8"))
            lists = {ours: [str(i) for i in split[theirs]] for ours, theirs in SPLITS.items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise self.raw_error(raw, f"has a split.json that is not {{train, dev, test: [ids]}} ({exc})") from None
        seen: set[int] = set()
        out = []
        for ours, ids in lists.items():
            for movie in ids:
                record = self._record(raw / "dataset", movie, ours, seen)
                if record is not None:
                    out.append(record)
                    if ours == "train" and not record.error:
                        seen.update(record.classes)
        return out

    def _record(self, folder: Path, movie: str, split: str, seen: set[int]) -> Record | None:
        """The movie's record, or None when MMBT's rules leave it out (then it is in `self.excluded`)."""
        meta, poster = folder / f"{movie}.json", folder / f"{movie}.jpeg"
        if not meta.is_file():
            return Record(movie, split, "", poster, (), files=(meta,))  # reported missing by prepare
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            plots, genres = data["plot"], data["genres"]
            if not isinstance(plots, list) or not all(isinstance(p, str) for p in plots):
                raise ValueError(f"the plot is {type(plots).__name__}, not a list of strings")
            if LEFT_OUT in genres:
                self._leave_out(movie, meta, f"genre {LEFT_OUT} (MMBT leaves these out)")
                return None
            labels = self.genre_ids(genres)
        except KeyError as exc:
            return Record(movie, split, "", meta, -1, error=f"{meta}: no key {exc}")
        except (ValueError, TypeError) as exc:
            return Record(movie, split, "", meta, -1, error=f"{meta}: {exc}")
        text = max(plots, key=len, default="")
        if not text.strip():
            self._leave_out(movie, meta, "empty plot (MMBT leaves these out)")
            return None
        unseen = sorted(GENRES[c] for c in labels if c not in seen)
        if split != "train" and unseen:
            self._leave_out(movie, meta, f"genre {unseen[0]} has no train movie (MMBT leaves these out)")
            return None
        return Record(movie, split, text, poster, labels, files=(meta,))

    def _leave_out(self, movie: str, meta: Path, reason: str) -> None:
        self.excluded.append({"id": movie, "path": str(meta), "reason": reason})


@hookimpl
def mmbench_tasks():
    return [MMIMDbTask]
