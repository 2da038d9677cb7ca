"""Decoding raw media with maintained pip libraries, never a shelled-out binary: soundfile for audio files,
PyAV (FFmpeg's libraries) for video containers and their audio tracks, Pillow for images and for resizing
frames; plus the log-magnitude spectrograms the audio-visual protocols compute.

Every failure is a `MediaError` that carries the file it is about (`path`) and says in words what is wrong with
it, so `prepare` lists the right file of a sample made of several.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np


class MediaError(Exception):
    """A media file that cannot be decoded, or is not what the release ships; the message says why, `path` names
    the file (prepare reports the sample under it)."""

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


def ffmpeg_reason(exc: Exception) -> str:
    """What FFmpeg says is wrong, in its words, without the error number and the file name it appends."""
    return getattr(exc, "strerror", None) or str(exc)


# ------------------------------------------------------------------------------------------- audio


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples (channels averaged, as librosa loads them) and the file's native sample rate.

    Audio files go through soundfile; a container soundfile cannot read (a video's audio track) through PyAV.
    """
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as exc:
        return _read_audio_track(path, exc.error_string)
    if samples.shape[0] == 0:
        raise MediaError(f"{path}: the audio file holds no samples", path)
    return samples.mean(axis=1), int(rate)


def _read_audio_track(path: Path, soundfile_reason: str) -> tuple[np.ndarray, int]:
    """The audio track of a container libsndfile does not read (`soundfile_reason`: why it did not)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{path}: no audio stream", path)
            stream = container.streams.audio[0]
            chunks = [frame.to_ndarray().astype(np.float32) for frame in container.decode(stream)]
            rate = stream.rate
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: not readable audio: libsndfile says {soundfile_reason.rstrip('.').lower()}, "
                         f"FFmpeg says {ffmpeg_reason(exc).lower()} (a corrupt or truncated file, or not audio at "
                         "all: fetch it again)", path) from None
    if not chunks:
        raise MediaError(f"{path}: the audio stream holds no samples", path)
    # planar formats give (channels, n); packed ones (1, n * channels): both average to mono per sample
    channels = [c if c.shape[0] > 1 or stream.channels == 1 else c.reshape(-1, stream.channels).T for c in chunks]
    return np.concatenate(channels, axis=1).mean(axis=0), int(rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited sinc resampling with the Kaiser window of resampy's `kaiser_best`, which librosa < 0.10
    (the reference repositories' era) used in `librosa.load(sr=...)`."""
    if rate == target:
        return samples
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(samples)), rate, target, lowpass_filter_width=64,
                      rolloff=0.9475937167399596, resampling_method="sinc_interp_kaiser", beta=14.769656459379492)
    return out.numpy()


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Tile the clip and cut it to `length` samples, then clip to [-1, 1] (OGM-GE, PMR, MLB)."""
    if samples.size == 0:
        raise MediaError("the audio is empty (nothing to tile)")
    repeats = -(-length // samples.size)
    return np.clip(np.tile(samples, repeats)[:length], -1.0, 1.0)


def log_spectrogram(samples: np.ndarray, n_fft: int, hop: int, pad_mode: str = "reflect") -> np.ndarray:
    """`log(|STFT| + 1e-7)`, shape (n_fft // 2 + 1, 1 + len // hop), as `librosa.stft` computes it: periodic
    Hann window of n_fft, centred frames padded with `pad_mode` (librosa < 0.10: reflect)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).double()
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop, window=torch.hann_window(n_fft, dtype=torch.float64),
                      center=True, pad_mode=pad_mode, return_complex=True)
    return torch.log(spec.abs() + 1e-7).float().numpy()


def log_power_spectrogram(samples: np.ndarray, rate: int, nperseg: int, noverlap: int) -> np.ndarray:
    """`log(S + 1e-7)` of `scipy.signal.spectrogram(x, rate, nperseg=nperseg, noverlap=noverlap)` with its
    defaults (PMR's and MLB's AVE audio): periodic Tukey(0.25) window, each segment's mean removed, one-sided
    power spectral density. Shape (nperseg // 2 + 1, 1 + (len - nperseg) // (nperseg - noverlap))."""
    step = nperseg - noverlap
    count = 1 + (len(samples) - nperseg) // step
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float64), nperseg)[::step][:count]
    frames = frames - frames.mean(axis=1, keepdims=True)
    window = tukey(nperseg, 0.25)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2 / (rate * (window ** 2).sum())
    power[:, 1:nperseg // 2 + nperseg % 2] *= 2  # one-sided: fold the negative frequencies in (not DC, Nyquist)
    return np.log(power.T + 1e-7).astype(np.float32)


def tukey(n: int, alpha: float) -> np.ndarray:
    """The periodic Tukey (tapered cosine) window of length n (scipy's `get_window(('tukey', alpha), n)`)."""
    x = np.arange(n + 1) / n
    w = np.ones(n + 1)
    edge = x < alpha / 2
    w[edge] = 0.5 * (1 + np.cos(np.pi * (2 * x[edge] / alpha - 1)))
    w[x > 1 - alpha / 2] = w[edge][::-1] if alpha > 0 else 1.0
    return w[:n]


# ------------------------------------------------------------------------------------------- video

#: seconds of video a file may decode short of the duration its container declares before it counts as truncated
TRUNCATION_SLACK = 1.0


def read_frames(path: Path, size: tuple[int, int], start: float = 0.0,
                end: float | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """The first frame of every second of the video (frame index divisible by int(fps), as OpenCV-based
    extractors number them), between `start` and `end` seconds, each resized to `size` (width, height) with
    Pillow's bilinear filter. Returns uint8 frames (T, 3, height, width) and the source (width, height).

    The video stream is chosen by type, not index: some containers (CREMA-D's FLV) list the audio first.
    """
    import av
    from PIL import Image

    frames = []
    decoded = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream", path)
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise MediaError(f"{path}: the video stream has no frame rate", path)
            step = max(1, int(rate))
            source = (stream.codec_context.width, stream.codec_context.height)
            declared = container.duration / 1e6 if container.duration else None
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                second = index / float(rate)
                if end is not None and second > end:
                    break
                if index % step or second < start:
                    continue
                image = frame.to_image().resize(size, Image.Resampling.BILINEAR)
                frames.append(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: cannot decode the video: {ffmpeg_reason(exc)}", path) from None
    if not frames:
        raise MediaError(f"{path}: no video frames decoded" + (f" between {start} s and {end} s" if end else ""), path)
    if end is None and declared is not None and decoded / float(rate) < declared - TRUNCATION_SLACK:
        raise MediaError(f"{path}: truncated: {decoded / float(rate):.2f} s of video decoded, the container "
                         f"declares {declared:.2f} s (an interrupted download? fetch the file again)", path)
    return np.stack(frames), source


def read_clip(path: Path, start: int, count: int, size: tuple[int, int], at_least: int | None = None) -> np.ndarray:
    """Frames `start, start + 1, …` (0-based decode order, as OpenCV's frame position counts them) of the video,
    up to `count` of them, each resized to `size` (width, height) with Pillow's bilinear filter: uint8
    (n, 3, height, width). A video that ends before `at_least` frames (default `count`) is a `MediaError`."""
    import av
    from PIL import Image

    needed = count if at_least is None else at_least
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream", path)
            for index, frame in enumerate(container.decode(container.streams.video[0])):
                if index >= start + count:
                    break
                if index >= start:
                    image = frame.to_image().resize(size, Image.Resampling.BILINEAR)
                    frames.append(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: cannot decode the video: {ffmpeg_reason(exc)}", path) from None
    if len(frames) < needed:
        raise MediaError(f"{path}: the video ends after {start + len(frames)} frames; the list's window needs "
                         f"frames {start}..{start + needed - 1} (a truncated file? fetch it again)", path)
    return np.stack(frames)


# ------------------------------------------------------------------------------------------ images


def read_image(path: Path, size: int, resize: Literal["square", "shorter_side"] = "square") -> np.ndarray:
    """An RGB image as uint8 `(3, size, size)`, with Pillow's bilinear filter: `square` resizes to size x size
    (torchvision's `Resize((size, size))`); `shorter_side` resizes the shorter side to 256 / 224 of `size` and
    centre-crops (`Resize(256)` + `CenterCrop(224)` at size 224, MMBT's)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
            if resize == "square":
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            else:
                w, h = image.size
                scale = round(size * 256 / 224) / min(w, h)
                shorter = (max(size, round(w * scale)), max(size, round(h * scale)))
                image = image.resize(shorter, Image.Resampling.BILINEAR)
                left, top = (image.width - size) // 2, (image.height - size) // 2
                image = image.crop((left, top, left + size, top + size))
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()
    except UnidentifiedImageError:
        raise MediaError(f"{path}: not an image Pillow can identify (corrupt, truncated or another format)",
                         path) from None
    except OSError as exc:
        raise MediaError(f"{path}: cannot decode the image: {exc}", path) from None


# ------------------------------------------------------------------------------------ optical flow

#: the OpenCV dense optical-flow algorithms `optical_flow` offers, with the parameters they run with (these
#: enter a task's preprocessing, hence its data fingerprint). Farneback: OpenCV's documented example values;
#: DIS: OpenCV's "medium" preset.
FLOW_METHODS: dict[str, dict[str, float | int | str]] = {
    "farneback": {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2},
    "dis": {"preset": "medium"},
}


def optical_flow(frames: np.ndarray, method: str) -> np.ndarray:
    """Dense optical flow between consecutive RGB frames `(n, 3, H, W)` uint8 (grey-scaled first): float32
    `(n − 1, 2, H, W)`, channel 0 the horizontal and 1 the vertical displacement in pixels, from frame t to t + 1.
    OpenCV (opencv-python-headless), single-threaded: prepare runs one process per worker."""
    import cv2

    if method not in FLOW_METHODS:
        raise ValueError(f"unknown optical-flow method {method!r}; one of {sorted(FLOW_METHODS)}")
    cv2.setNumThreads(1)
    grey = [cv2.cvtColor(np.ascontiguousarray(f.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY) for f in frames]
    settings = FLOW_METHODS[method]
    if method == "dis":
        dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        # None: OpenCV allocates the flow (its stub wants an array)
        flows = [dis.calc(a, b, None) for a, b in zip(grey, grey[1:], strict=False)]  # type: ignore[call-overload]
    else:
        scale, levels, window, iterations, poly_n, sigma = (settings[k] for k in (
            "pyr_scale", "levels", "winsize", "iterations", "poly_n", "poly_sigma"))
        pairs = zip(grey, grey[1:], strict=False)
        flows = [cv2.calcOpticalFlowFarneback(a, b, None, float(scale), int(levels), int(window), int(iterations),
                                              int(poly_n), float(sigma), 0) for a, b in pairs]
    return np.stack(flows).transpose(0, 3, 1, 2).astype(np.float32)
