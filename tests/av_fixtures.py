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


# ---------------------------------------------------------------------------------------------- AVE


def ave_lines(per_list: int = 2) -> dict[str, list[str]]:
    """The first lines of each official list: real events, with windows such as 0-10 s and 6-10 s."""
    return {name: shipped_lines("ave", f"{name}Set.txt")[:per_list] for name in ("train", "val", "test")}


def write_ave(raw: Path, lines: list[str], seconds: float = 10.0) -> None:
    """AVE's archive layout: AVE/<VideoID>.mp4 (H.264 + AAC, 10 s) and Annotations.txt (header, `&`, LF)."""
    videos = sorted({line.split("&")[1] for line in lines})
    for k, video in enumerate(videos):
        write_video(raw / "AVE" / f"{video}.mp4", seconds, fps=4, size=(160, 120), container="mp4",
                    codec="libx264", audio="aac", audio_rate=44100, audio_first=False, shade=(23 * k) % 200)
    header = "Category&VideoID&Quality&StartTime&EndTime"
    (raw / "Annotations.txt").write_text("\n".join([header, *lines]) + "\n")


# ---------------------------------------------------------------------------------- Kinetics-Sounds


def ks_lines(labels: int = 2, per_label: int = 2) -> dict[str, list[str]]:
    """Real lines of OGM-GE's lists: `per_label` train clips of each of the first `labels` labels of
    my_train.txt, and one test clip of each of those labels."""
    train_lines = shipped_lines("kinetics_sounds", "my_train.txt")
    wanted = list(dict.fromkeys(line.split(",")[2] for line in train_lines))[:labels]
    train = [line for w in wanted for line in [x for x in train_lines if x.split(",")[2] == w][:per_label]]
    test_lines = shipped_lines("kinetics_sounds", "my_test.txt")
    test = [next(x for x in test_lines if x.split(",")[2] == w) for w in wanted]
    return {"train": train, "test": test}


def write_kinetics_sounds(raw: Path, lines: dict[str, list[str]], seconds: float = 4.0) -> None:
    """The documented layout: <split>/<clip id>.mp4 (H.264 + AAC) with my_train.txt / my_test.txt beside them
    (`id,10,label`, CRLF, as OGM-GE ships them)."""
    for split, split_lines in lines.items():
        for k, line in enumerate(split_lines):
            clip = line.split(",")[0]
            write_video(raw / split / f"{clip}.mp4", seconds, fps=4, size=(160, 120), container="mp4",
                        codec="libx264", audio="aac", audio_rate=48000, audio_first=False, shade=(31 * k) % 200)
        (raw / f"my_{split}.txt").write_bytes("".join(f"{line}\r\n" for line in split_lines).encode())


# -------------------------------------------------------------------------------------------- UCF101

#: UCF101's 101 classes in classInd order (folder names; the release's classInd writes them so)
UCF_CLASSES = (
    "ApplyEyeMakeup ApplyLipstick Archery BabyCrawling BalanceBeam BandMarching BaseballPitch Basketball "
    "BasketballDunk BenchPress Biking Billiards BlowDryHair BlowingCandles BodyWeightSquats Bowling "
    "BoxingPunchingBag BoxingSpeedBag BreastStroke BrushingTeeth CleanAndJerk CliffDiving CricketBowling "
    "CricketShot CuttingInKitchen Diving Drumming Fencing FieldHockeyPenalty FloorGymnastics FrisbeeCatch "
    "FrontCrawl GolfSwing Haircut Hammering HammerThrow HandstandPushups HandstandWalking HeadMassage HighJump "
    "HorseRace HorseRiding HulaHoop IceDancing JavelinThrow JugglingBalls JumpingJack JumpRope Kayaking Knitting "
    "LongJump Lunges MilitaryParade Mixing MoppingFloor Nunchucks ParallelBars PizzaTossing PlayingCello "
    "PlayingDaf PlayingDhol PlayingFlute PlayingGuitar PlayingPiano PlayingSitar PlayingTabla PlayingViolin "
    "PoleVault PommelHorse PullUps Punch PushUps Rafting RockClimbingIndoor RopeClimbing Rowing SalsaSpin "
    "ShavingBeard Shotput SkateBoarding Skiing Skijet SkyDiving SoccerJuggling SoccerPenalty StillRings "
    "SumoWrestling Surfing Swing TableTennisShot TaiChi TennisSwing ThrowDiscus TrampolineJumping Typing "
    "UnevenBars VolleyballSpiking WalkingWithDog WallPushups WritingOnBoard YoYo"
).split()


def ucf_clip(cls: str, group: int, clip: int) -> str:
    stem = "HandStandPushups" if cls == "HandstandPushups" else cls  # the release's spelling quirk
    return f"{cls}/v_{stem}_g{group:02d}_c{clip:02d}.avi"


def write_ucf101(raw: Path, classes: list[str], silent: list[str] = (), seconds: float = 2.0) -> dict[str, list[str]]:
    """UCF101's layout: UCF-101/<Class>/v_<Class>_gGG_cCC.avi (MPEG-4 + MP3 in AVI, 320x240) and
    ucfTrainTestlist/ (classInd, train/test lists of the three folds; CRLF). Fold k tests groups 7k-6..7k:
    each class gets clips in groups 1, 8, 15 and 22, so each fold has train and test clips of it. Classes in
    `silent` have no audio stream."""
    lists = {name: [] for name in ("classInd",)}
    clips = [(c, g) for c in classes for g in (1, 8, 15, 22)]
    for k, (cls, group) in enumerate(clips):
        write_video(raw / "UCF-101" / ucf_clip(cls, group, 1), seconds, fps=25, size=(320, 240), container="avi",
                    codec="mpeg4", audio=None if cls in silent else "mp3", audio_rate=44100, audio_first=False,
                    shade=(13 * k) % 200)
    folder = raw / "ucfTrainTestlist"
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, lines: list[str]) -> None:
        (folder / name).write_bytes("".join(f"{line}\r\n" for line in lines).encode())

    write("classInd.txt", [f"{i} {c}" for i, c in enumerate(UCF_CLASSES, 1)])
    for fold in (1, 2, 3):
        held = range(7 * fold - 6, 7 * fold + 1)
        train = [(c, g) for c, g in clips if g not in held]
        test = [(c, g) for c, g in clips if g in held]
        write(f"trainlist0{fold}.txt", [f"{ucf_clip(c, g, 1)} {UCF_CLASSES.index(c) + 1}" for c, g in train])
        write(f"testlist0{fold}.txt", [ucf_clip(c, g, 1) for c, g in test])
        lists[f"fold{fold}"] = [ucf_clip(c, g, 1) for c, g in test]
    return lists


def run_one_epoch(task: str, root: Path, out: Path, **params) -> list[dict]:
    """`mmbench run` of `joint` and `ogm_ge` (ResNet-18, concatenation) for one epoch on a prepared root; the
    cell results."""
    import json

    from typer.testing import CliRunner

    from mmbench.cli import app

    grid = out / "grid.yaml"
    grid.parent.mkdir(parents=True, exist_ok=True)
    grid.write_text(json.dumps({
        "name": f"{task}-tiny", "tasks": [{"name": task, "root": str(root), "params": params}],
        "encoders": [{"*": "resnet18"}], "fusions": ["concat"], "balancers": ["joint", "ogm_ge"],
        "train": {"epochs": 1, "batch_size": 4, "optimizer": {"name": "sgd", "lr": 0.001}, "device": "cpu"},
        "seeds": [0]}))
    result = CliRunner().invoke(app, ["run", "--matrix", str(grid), "--out", str(out / "run")])
    assert result.exit_code == 0, result.output
    cells = [json.loads(p.read_text()) for p in (out / "run" / "cells").glob("*.json")]
    assert sorted(c["balancer"]["name"] for c in cells) == ["joint", "ogm_ge"]
    assert all(c["status"] == "ok" for c in cells), [c.get("reason") for c in cells]
    return cells
