"""The run store: atomic writes (a crash mid-write leaves the old file), torn files re-run on resume."""

import json
import os

import pytest

from mmbench import files
from mmbench.files import atomic_write_text
from mmbench.rundir import RunStore, RunStoreError
from mmbench.running import grid as grid_lib
from mmbench.running.runner import run_grid
from tests.conftest import TINY_GRID


def test_a_crash_while_writing_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    atomic_write_text(path, "old complete content")

    def crash(fd):
        raise OSError("disk went away")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk went away"):
        atomic_write_text(path, "new content that never lands")
    assert path.read_text() == "old complete content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_the_new_content_is_complete_before_it_replaces_the_file(tmp_path, monkeypatch):
    """At the moment of the rename the temporary file already holds every byte, flushed to disk."""
    path = tmp_path / "result.json"
    seen = {}
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: seen.setdefault("fsynced", True) and real_fsync(fd))

    def checking_replace(src, dst):
        seen["at_rename"] = (open(src).read(), seen.get("fsynced"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", checking_replace)
    atomic_write_text(path, "x" * 100_000)
    assert seen["at_rename"] == ("x" * 100_000, True)
    assert path.read_text() == "x" * 100_000


@pytest.mark.parametrize("content", ['{"schema": "mmbench.cell/1", "status": "ok", "cell_id": "ab', "", "[1, 2]"])
def test_an_unreadable_or_unfinished_cell_file_counts_as_absent(tmp_path, content):
    store = RunStore(tmp_path)
    store.path("abc").parent.mkdir(parents=True)
    store.path("abc").write_text(content)
    assert store.load("abc") is None


@pytest.mark.parametrize("content, message", [
    ('{"status": "ok", "cell_id": "abc", "metrics": {}}', "written by an older mmbench"),
    ('{"schema": "mmbench.cell/2", "status": "ok"}', "unsupported schema 'mmbench.cell/2'"),
    ('{"schema": "mmbench.cell/1", "status": "running"}', "not a cell result this mmbench can read"),
])
def test_results_of_another_format_are_refused_not_silently_re_run(tmp_path, content, message):
    store = RunStore(tmp_path)
    store.path("abc").parent.mkdir(parents=True)
    store.path("abc").write_text(content)
    with pytest.raises(RunStoreError, match=message):
        store.load("abc")


def test_a_torn_cell_file_is_re_run_on_resume(tmp_path, registry):
    grid = grid_lib.parse(TINY_GRID, registry)
    first = run_grid(grid, registry, tmp_path)
    assert first.counts == {"ok": 4}
    cells = sorted((tmp_path / "cells").glob("*.json"))
    torn = cells[0]
    torn.write_text(torn.read_text()[:50])
    (tmp_path / "cells" / f".{torn.name}.abcd.tmp").write_text("{")  # a leftover temporary of a killed writer
    second = run_grid(grid, registry, tmp_path)
    assert second.resumed == 3 and second.counts == {"ok": 4}
    assert json.loads(torn.read_text())["status"] == "ok"


def test_written_files_get_the_mode_a_plain_open_would_give(tmp_path):
    previous = os.umask(0o002)
    try:
        assert files._file_mode() == 0o664
        assert os.umask(0o002) == 0o002  # and the process's umask is left as it was
    finally:
        os.umask(previous)
    files.atomic_write_text(tmp_path / "result.json", "{}")
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == files.FILE_MODE


def test_json_is_written_indented_with_sorted_keys_and_never_a_nan(tmp_path):
    files.atomic_write_json(tmp_path / "a.json", {"b": [1], "a": 0.5})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": 0.5,\n  "b": [\n    1\n  ]\n}\n'
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        files.atomic_write_json(tmp_path / "nan.json", {"loss": float("nan")})
    assert not (tmp_path / "nan.json").exists()

