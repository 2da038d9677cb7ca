"""Tiny copies of the audio-visual releases in their real raw layouts, made on the fly: real identifiers (from
the shipped lists), the annotation files' real delimiters, headers and line endings, and a few seconds of real
encoded audio and video written with PyAV and soundfile."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import soundfile

from mmbench_plugins.tasks.audiovisual import SPLITS_DIR


def tone(seconds: float, rate: int, pitch: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32)


def write_wav(path: Path, seconds: float, rate: int = 16000, pitch: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), tone(seconds, rate, pitch), rate, subtype="PCM_16")


def write_video(path: Path, seconds: float, fps: int = 30, size: tuple[int, int] = (480, 360),
                container: str = "flv", codec: str = "flv", audio: str | None = "mp3", audio_rate: int = 22050,
                audio_first: bool = True, shade: int = 0) -> None:
    """A clip whose frames are a colour ramp with a moving box, and a sine tone (the audio stream first, as in
    CREMA-D's FLV files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = av.open(str(path), "w", format=container)
    sound = out.add_stream(audio, rate=audio_rate) if audio and audio_first else None
    video = out.add_stream(codec, rate=fps)
    video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
    if audio and not audio_first:
        sound = out.add_stream(audio, rate=audio_rate)
    if sound is not None:
        sound.layout = "mono"  # before the first packet is muxed: that opens the encoders
    for i in range(int(seconds * fps)):
        image = np.full((size[1], size[0], 3), shade, np.uint8)
        image[:, :, 0] = (i * 7) % 255
        x = (i * 5) % (size[0] - 40)
        image[size[1] // 3:size[1] // 2, x:x + 40, 1] = 220
        for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    if sound is not None:
        wave = tone(seconds, audio_rate, 300.0 + shade)
        step = sound.codec_context.frame_size or 1024
        for start in range(0, len(wave), step):
            frame = av.AudioFrame.from_ndarray(wave[None, start:start + step], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = audio_rate, start
            for packet in sound.encode(frame):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    out.close()


def shipped_lines(folder: str, name: str) -> list[str]:
    return (SPLITS_DIR / folder / name).read_bytes().decode("utf-8-sig").splitlines()


# ------------------------------------------------------------------------------------------ CREMA-D


def cremad_stems(per_class_train: int = 2, per_class_test: int = 1) -> dict[str, list[str]]:
    """Real stems from OGM-GE's lists: the first few of each emotion in train.csv and test.csv."""
    chosen: dict[str, list[str]] = {}
    for name, per_class in (("train", per_class_train), ("test", per_class_test)):
        counts: dict[str, int] = {}
        stems = []
        for line in shipped_lines("cremad", f"{name}.csv"):
            stem, emotion = line.split(",")
            if counts.get(emotion, 0) < per_class:
                counts[emotion] = counts.get(emotion, 0) + 1
                stems.append(stem)
        chosen[name] = stems
    return chosen


def write_cremad(raw: Path, stems: list[str], seconds: float = 2.2) -> None:
    """CREMA-D's release layout: AudioWAV/<stem>.wav (16 kHz mono PCM) and VideoFlash/<stem>.flv (480x360,
    30 fps, MP3 audio listed before the video)."""
    for k, stem in enumerate(stems):
        write_wav(raw / "AudioWAV" / f"{stem}.wav", seconds, 16000, pitch=200.0 + 40 * k)
        write_video(raw / "VideoFlash" / f"{stem}.flv", seconds, shade=(17 * k) % 200)
