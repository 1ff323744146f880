"""Audio data: WAV files read and written with soundfile, resampled with torchaudio,
the Free Spoken Digit Dataset's naming, and the embedded demo sample.

Every reader returns float32 mono audio in [-1, 1] at the requested rate. Bad files get
a :class:`~flowkit.errors.DataError` naming the file and the problem (not a WAV,
empty, non-finite samples, shorter than :data:`MIN_SECONDS`, float samples beyond
[-1, 1] by more than :data:`OVER_FULL_SCALE`: unscaled PCM, never clipped in silence);
stereo is mixed down, other rates are resampled and float samples a hair beyond full
scale are clipped, each said in :attr:`Clip.notes`.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowkit.errors import DataError
from flowkit.files import write_atomically

__all__ = ["Clip", "audio_files", "check_output_folder", "demo_clips", "fsdd_clips", "load_clips", "read_wav",
           "split_clips", "write_wav"]

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
#: the shortest clip any command takes (a spectrogram frame of every front-end fits in it)
MIN_SECONDS = 0.1
#: float samples may pass full scale by this much (then they are clipped, with a note); beyond it, refused
OVER_FULL_SCALE = 0.01
FSDD_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)$")


@dataclass
class Clip:
    """One recording: ``audio`` float32 ``(T,)`` in [-1, 1] at ``sample_rate``."""

    name: str
    audio: Tensor
    sample_rate: int
    notes: list[str] = field(default_factory=list)

    @property
    def speaker(self) -> str | None:
        match = FSDD_NAME.match(self.name)
        return match["speaker"] if match else None

    @property
    def digit(self) -> int | None:
        match = FSDD_NAME.match(self.name)
        return int(match["digit"]) if match else None


def _resample(audio: Tensor, rate: int, target: int) -> Tensor:
    import torchaudio.functional as AF

    return AF.resample(audio, rate, target) if rate != target else audio


def read_wav(path: str | os.PathLike, sample_rate: int | None = None) -> Clip:
    """Read an audio file as mono float32, resampled to ``sample_rate`` if given."""
    import soundfile

    path = Path(path)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise DataError(f"{path}: not a readable audio file ({' '.join(str(error).split())})") from None
    return _clip(path.stem, data, rate, sample_rate, str(path))


def _clip(name: str, data: np.ndarray, rate: int, sample_rate: int | None, source: str) -> Clip:
    notes = []
    if data.size == 0 or data.shape[0] == 0:
        raise DataError(f"{source}: the file holds no audio samples")
    if not np.isfinite(data).all():
        raise DataError(f"{source}: the audio holds NaN or infinite samples")
    if data.shape[0] < MIN_SECONDS * rate:
        raise DataError(f"{source}: {data.shape[0]} samples ({data.shape[0] / rate:.4f} s) is too short; "
                        f"a clip needs at least {MIN_SECONDS} s")
    peak = float(np.abs(data).max())
    if peak > 1 + OVER_FULL_SCALE:
        raise DataError(f"{source}: samples reach {peak:.4g}, beyond the [-1, 1] of float audio (unscaled PCM "
                        f"stored as float? divide int16 values by 32768); refusing to clip them")
    if peak > 1:
        notes.append(f"clipped float samples up to {peak:.4f} to [-1, 1]")
    if data.shape[1] > 1:
        notes.append(f"mixed {data.shape[1]} channels down to mono")
    audio = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1), dtype=np.float32))
    if sample_rate is not None and rate != sample_rate:
        notes.append(f"resampled from {rate} Hz to {sample_rate} Hz")
        audio, rate = _resample(audio, rate, sample_rate), sample_rate
    return Clip(name, audio.clamp(-1.0, 1.0), int(rate), notes)


def write_wav(path: str | os.PathLike, audio: Tensor, sample_rate: int) -> Path:
    """Write mono 16-bit PCM (clipped to [-1, 1]) atomically: a temporary file, then a rename."""
    import soundfile

    path = Path(path)
    if path.suffix.lower() != ".wav":
        raise DataError(f"{path}: output audio files must end in .wav")
    values = audio.detach().float().reshape(-1).clamp(-1.0, 1.0).cpu().numpy()
    if not np.isfinite(values).all():
        raise DataError(f"refusing to write non-finite audio to {path}")
    return write_atomically(path, lambda tmp: soundfile.write(str(tmp), values, int(sample_rate), subtype="PCM_16",
                                                             format="WAV"), errors=(soundfile.LibsndfileError,))


def audio_files(source: str | os.PathLike) -> list[Path]:
    """The files :func:`load_clips` reads: ``source`` itself, or the audio files of a folder (sorted)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise DataError(f"{source}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in this folder")
        return files
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    return [source]


def load_clips(source: str | os.PathLike, sample_rate: int) -> list[Clip]:
    """A WAV file or every audio file in a folder (sorted by name), at ``sample_rate``."""
    return [read_wav(p, sample_rate) for p in audio_files(source)]


def check_output_folder(source: str | os.PathLike, out: str | os.PathLike,
                        suffixes: tuple[str, ...] = (".wav", ".png")) -> None:
    """Refuse, before any work, an output folder that is or contains an input file's folder
    (each input ``NAME.*`` writes ``out/NAME`` + each suffix, which could replace an input
    only there), and inputs whose outputs would share a name (``a.wav`` and ``a.flac``): a
    user's recordings are never replaced, and no output is lost to another."""
    out = Path(out).resolve()
    files = audio_files(source)
    for path in files:
        path = path.resolve()
        if out == path.parent or out in path.parents:  # the only way an output could replace an input
            raise DataError(f"--out {out} holds the input {path}; write the outputs to another folder")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise DataError(f"{stems[path.stem].name} and {path.name} would both be written as "
                               f"{path.stem}{suffixes[0]}; rename one")
        stems[path.stem] = path


def fsdd_clips(folder: str | os.PathLike, sample_rate: int = 8000, speakers: set[str] | None = None) -> list[Clip]:
    """Free Spoken Digit Dataset recordings (``{digit}_{speaker}_{index}.wav``), optionally of some speakers."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.wav") if FSDD_NAME.match(p.stem))
    if speakers is not None:
        files = [p for p in files if FSDD_NAME.match(p.stem)["speaker"] in speakers]
    if not files:
        raise DataError(f"{folder}: no FSDD recordings ({{digit}}_{{speaker}}_{{index}}.wav)")
    return [read_wav(p, sample_rate) for p in files]


def demo_clips(split: str = "train") -> list[Clip]:
    """The embedded FSDD sample (CC BY-SA 4.0, see assets/README.md): ``"train"`` has four
    speakers, ``"test"`` a fifth one held out."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', not {split!r}")
    raw = resources.files("flowkit_audio").joinpath("assets", "fsdd_demo.npz").read_bytes()
    with np.load(io.BytesIO(raw), allow_pickle=False) as data:
        names = [str(n) for n in data[f"{split}_names"]]
        ends = np.cumsum(data[f"{split}_lengths"])
        samples = np.split(data[f"{split}_audio"], ends[:-1])
        rate = int(data["sample_rate"])
    return [Clip(n, torch.from_numpy(s.astype(np.float32) / 32768.0), rate) for n, s in zip(names, samples)]


def split_clips(data: str | os.PathLike | None, sample_rate: int) -> tuple[list[Clip], list[Clip]]:
    """Training and held-out clips: ``"demo"`` (the embedded sample, its fifth speaker held
    out), or a WAV folder: with FSDD names the alphabetically last speaker is held out,
    otherwise every 20th clip."""
    if data in (None, "demo"):
        return demo_clips("train"), demo_clips("test")
    clips = load_clips(data, sample_rate)
    speakers = sorted({c.speaker for c in clips if c.speaker})
    if len(speakers) >= 2 and all(c.speaker for c in clips):
        return [c for c in clips if c.speaker != speakers[-1]], [c for c in clips if c.speaker == speakers[-1]]
    if len(clips) < 2:
        raise DataError(f"{data}: need at least 2 clips (one to hold out)")
    return [c for i, c in enumerate(clips) if i % 20], [c for i, c in enumerate(clips) if i % 20 == 0]
