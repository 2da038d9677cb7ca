"""The data machinery every dataset uses: decoding, spectrograms, the prepared arrays, shipped lists with their
hashes, stratified validation carving, and the resumable prepare harness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmbench.contract.errors import DataError
from mmbench.data import prepare as prepare_lib
from mmbench.data.media import MediaError, fit_length, log_spectrogram, read_audio, read_frames, resample
from mmbench.data.prepare import Item, prepare_samples
from mmbench.data.splits import SplitFiles, sha256, stratified_holdout
from mmbench.data.store import PreparedArrays, write_arrays
from tests.fixtures.release import write_video, write_wav

# ------------------------------------------------------------------------------------------ media


def numpy_log_stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """librosa.stft's definition written out: reflect-pad n_fft/2, periodic Hann, rfft per hop."""
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = [padded[i:i + n_fft] * window for i in range(0, len(padded) - n_fft + 1, hop)]
    return np.log(np.abs(np.fft.rfft(np.array(frames), axis=1)).T + 1e-7)


def test_the_spectrogram_is_librosa_s_stft_and_ogm_ge_s_shape():
    x = np.sin(2 * np.pi * 1000 * np.arange(66150) / 22050).astype(np.float32)
    spec = log_spectrogram(x, 512, 353)
    assert spec.shape == (257, 188)
    np.testing.assert_allclose(spec, numpy_log_stft(x, 512, 353), atol=1e-4)
    assert int(np.argmax(spec[:, 100])) == round(1000 / (22050 / 512))


def test_fit_length_tiles_then_clips():
    out = fit_length(np.array([0.5, 2.0, -3.0], np.float32), 7)
    np.testing.assert_array_equal(out, [0.5, 1.0, -1.0, 0.5, 1.0, -1.0, 0.5])
    with pytest.raises(MediaError, match="empty"):
        fit_length(np.zeros(0, np.float32), 4)


def test_resampling_keeps_the_pitch_and_scales_the_length():
    x = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    y = resample(x, 16000, 22050)
    assert len(y) == 22050
    spectrum = np.abs(np.fft.rfft(y[2000:-2000]))
    assert abs(np.argmax(spectrum) * 22050 / len(y[2000:-2000]) - 440) < 2


def test_audio_from_a_wav_and_from_a_video_container(tmp_path):
    write_wav(tmp_path / "a.wav", 1.0, 16000)
    samples, rate = read_audio(tmp_path / "a.wav")
    assert rate == 16000 and samples.shape == (16000,) and abs(samples.max() - 0.3) < 1e-3
    write_video(tmp_path / "v.flv", 1.0, audio_rate=22050)
    samples, rate = read_audio(tmp_path / "v.flv")
    assert rate == 22050 and abs(len(samples) - 22050) < 2000
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    with pytest.raises(MediaError, match="junk.wav"):
        read_audio(tmp_path / "junk.wav")


def test_frames_are_each_second_s_first_from_the_video_stream_even_when_audio_is_listed_first(tmp_path):
    write_video(tmp_path / "v.flv", 2.5, fps=30, audio_first=True)
    frames, source = read_frames(tmp_path / "v.flv", (112, 112))
    assert frames.shape == (3, 3, 112, 112) and frames.dtype == np.uint8 and source == (480, 360)
    # the fixture paints frame i's red channel (i * 7) % 255: frames 0, 30 and 60
    reds = frames[:, 0, 5:20, 5:20].mean(axis=(1, 2))
    np.testing.assert_allclose(reds, [0, 210, 420 % 255], atol=8)
    window, _ = read_frames(tmp_path / "v.flv", (112, 112), start=1.0, end=2.0)
    assert len(window) == 2  # seconds 1 and 2


def test_a_truncated_video_is_named_as_such(tmp_path):
    write_video(tmp_path / "v.flv", 3.0)
    data = (tmp_path / "v.flv").read_bytes()
    (tmp_path / "v.flv").write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError, match=r"v\.flv: truncated"):
        read_frames(tmp_path / "v.flv", (64, 64))
    (tmp_path / "v.flv").write_bytes(data[:100])
    with pytest.raises(MediaError, match="cannot decode the video"):
        read_frames(tmp_path / "v.flv", (64, 64))


# ------------------------------------------------------------------------------------ store, lists


def test_arrays_round_trip_with_ragged_rows(tmp_path):
    samples = [{"a": np.full((2, 3), i, np.float32), "f": np.full((i + 1, 2), i, np.uint8)} for i in range(3)]
    shapes = [{k: v.shape for k, v in s.items()} for s in samples]
    write_arrays(tmp_path / "arrays", 3, shapes, {"a": "<f4", "f": "|u1"}, samples.__getitem__, frozenset({"f"}))
    arrays = PreparedArrays(tmp_path / "arrays")
    assert len(arrays) == 3 and arrays.rows("f", 2) == 3
    np.testing.assert_array_equal(arrays.get("f", 1), np.full((2, 2), 1))
    np.testing.assert_array_equal(arrays.get("a", 2), np.full((2, 3), 2))
    assert not (tmp_path / "arrays.tmp").exists()


def test_shipped_lists_are_checked_against_their_sha256(tmp_path):
    (tmp_path / "list.txt").write_bytes(b"\xef\xbb\xbfa,1\r\nb,2\r\n")
    (tmp_path / "SHA256SUMS").write_text(f"{sha256((tmp_path / 'list.txt').read_bytes())}  list.txt\n")
    files = SplitFiles(tmp_path)
    assert files.lines("list.txt") == ["a,1", "b,2"]  # BOM dropped, CRLF understood
    (tmp_path / "list.txt").write_bytes(b"a,1\nb,2\n")
    with pytest.raises(DataError, match="does not match its sha256"):
        files.read("list.txt")
    with pytest.raises(DataError, match="not one of the shipped split lists"):
        files.read("other.txt")


def test_stratified_holdout_copes_with_a_handful_per_class():
    labels = [0] * 10 + [1] * 2 + [2] * 1 + [3] * 3
    kept, held = stratified_holdout(labels, 0.1, seed=0)
    held_labels = sorted(labels[p] for p in held)
    assert held_labels == [0, 1, 3]  # 10 -> 1, 2 -> 1, 1 -> none, 3 -> round(0.3) = 0 -> at least 1
    assert sorted(kept + held) == list(range(len(labels)))
    assert {labels[p] for p in kept} == {0, 1, 2, 3}
    assert stratified_holdout(labels, 0.1, seed=0) == (kept, held)
    assert stratified_holdout(labels, 0.1, seed=1) != (kept, held)
    assert len(stratified_holdout([0] * 100, 0.25, seed=0)[1]) == 25


# ----------------------------------------------------------------------------------- prepare harness

CALLS: list[str] = []


def toy_process(item: Item) -> dict[str, np.ndarray]:
    """Decodes nothing: the sample's value is the number in its file; 'bad' files fail; 'stop' interrupts."""
    CALLS.append(item.id)
    text = item.sources[0].read_text()
    if text == "bad":
        raise MediaError(f"{item.sources[0]}: not a number")
    if text == "stop":
        raise KeyboardInterrupt
    return {"x": np.array([float(text)], np.float32), "frames": np.zeros((int(float(text)) % 3 + 1, 2), np.uint8)}


def prepare_toy(root: Path, items: list[Item], settings: dict, **kwargs):
    return prepare_samples(root, "toy", items, toy_process, settings, ragged=frozenset({"frames"}), **kwargs)


def toy_items(folder: Path, values: dict[str, str]) -> list[Item]:
    folder.mkdir(exist_ok=True)
    for name, value in values.items():
        (folder / name).write_text(value)
    return [Item(name, k % 2, (folder / name,)) for k, name in enumerate(values)]


def test_a_killed_prepare_resumes_where_it_stopped(tmp_path):
    items = toy_items(tmp_path / "raw", {"a": "1", "b": "2", "c": "stop", "d": "4"})
    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        prepare_toy(tmp_path / "root", items, {"p": 1})
    assert CALLS == ["a", "b", "c"]
    (tmp_path / "raw" / "c").write_text("3")
    CALLS.clear()
    outcome = prepare_toy(tmp_path / "root", items, {"p": 1})
    assert CALLS == ["c", "d"] and [i.id for i in outcome.kept] == ["a", "b", "c", "d"]
    arrays = PreparedArrays(tmp_path / "root" / "arrays")
    assert [float(arrays.get("x", i)[0]) for i in range(4)] == [1, 2, 3, 4]
    assert [arrays.rows("frames", i) for i in range(4)] == [2, 3, 1, 2]
    assert not (tmp_path / "root" / ".staging").exists()


def test_staged_samples_of_other_settings_are_not_reused(tmp_path):
    items = toy_items(tmp_path / "raw", {"a": "1", "b": "stop"})
    with pytest.raises(KeyboardInterrupt):
        prepare_toy(tmp_path / "root", items, {"n_fft": 512})
    (tmp_path / "raw" / "b").write_text("2")
    CALLS.clear()
    prepare_toy(tmp_path / "root", items, {"n_fft": 256})
    assert CALLS == ["a", "b"]


def test_bad_and_missing_samples_are_reported_and_the_threshold_is_documented(tmp_path, monkeypatch):
    values = {f"s{i:03d}": str(i) for i in range(200)}
    values["s007"] = "bad"
    items = toy_items(tmp_path / "raw", values)
    (tmp_path / "raw" / "s010").unlink()
    outcome = prepare_toy(tmp_path / "root", items, {}, workers=2)
    assert prepare_lib.MAX_BAD_FRACTION == 0.01 and len(outcome.kept) == 198
    report = json.loads((tmp_path / "root" / "prepare-report.json").read_text())
    assert report["bad"] == [{"id": "s007", "path": str(tmp_path / "raw" / "s007"),
                              "reason": f"{tmp_path / 'raw' / 's007'}: not a number"}]
    assert report["missing"] == [{"id": "s010", "path": str(tmp_path / "raw" / "s010")}]
    assert json.loads((tmp_path / "root" / "samples.json").read_text())["ids"][:8] == \
        [f"s{i:03d}" for i in range(7)] + ["s008"]
    for name in ("s001", "s002"):
        (tmp_path / "raw" / name).write_text("bad")
    with pytest.raises(DataError, match=r"3 of the 199 samples present are corrupt .*prepare-report\.json"):
        prepare_toy(tmp_path / "root2", items, {})
    with pytest.raises(DataError, match="none of the 2 listed samples was found"):
        prepare_toy(tmp_path / "root3", [Item("x", 0, (tmp_path / "nope",)), Item("y", 0, (tmp_path / "no",))], {},
                    partial=True)
