"""The vocoder run: ``train``, ``load`` and ``evaluate`` a WaveGlow, and ``vocode_files``.

Training uses the shared engine (checkpoints, resume, SIGTERM-safe, tqdm, torchrun DDP):
each step crops ``segment`` samples from random clips (shorter clips are zero-padded),
adds 16-bit dequantisation noise, and minimises the negative log-likelihood in nats per
audio sample. Held-out NLL is measured on fixed crops of held-out clips.

    >>> from flowkit_audio.vocoder import run
    >>> run.train(data="demo", out="out/vocoder", preset="cpu", steps=300)  # doctest: +SKIP
    >>> run.vocode_files("out/vocoder", "clip.wav", "out/vocoded")  # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowkit.config import check_model_size
from flowkit.errors import DataError, FlowkitError
from flowkit.files import write_json
from flowkit.train import IndexSchedule, Trainer, load_run, resume_run, start_run, train_config

from ..data import Clip, check_output_folder, load_clips, split_clips, write_wav
from ..features import griffin_lim, log_mel
from ..plots import save_spectrograms
from .model import WaveGlow, WaveGlowConfig
from .model import preset as preset_config

__all__ = ["evaluate", "load", "log_spectral_distance", "train", "vocode_files"]

TRAIN_DEFAULTS = {"optimizer": "adam", "lr": 5e-4, "batch_size": 8, "warmup_steps": 50, "ema_decay": None,
                  "grad_clip": 1.0, "steps": 300, "log_every": 10, "checkpoint_every": 100}
SEGMENT_SECONDS = 0.5
DEQUANTISE = 1.0 / 32768  # one 16-bit step


def _segment(clip: Tensor, length: int, start: int) -> Tensor:
    piece = clip[start:start + length]
    return torch.nn.functional.pad(piece, (0, length - piece.shape[0]))


def _segment_length(config: WaveGlowConfig) -> int:
    step = config.mel.hop_length * config.n_group
    return max(step, round(SEGMENT_SECONDS * config.mel.sample_rate / step) * step)


def _batches(model: WaveGlow, clips: list[Clip], schedule: IndexSchedule, length: int):
    def batch(step: int) -> tuple[Tensor, Tensor]:
        generator = schedule.generator(step)
        pieces = []
        for i in schedule.indices(step).tolist():
            audio = clips[i].audio
            room = max(0, audio.shape[0] - length)
            start = int(torch.randint(room + 1, (1,), generator=generator))
            pieces.append(_segment(audio, length, start))
        audio = torch.stack(pieces)
        audio = audio + (torch.rand(audio.shape, generator=generator) - 0.5) * DEQUANTISE
        return audio[:, None], log_mel(audio, model.config.mel)
    return batch


def _loss(model: torch.nn.Module, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, float]]:
    audio, mel = batch
    nll = (-model(audio, mel) / audio[0].numel()).mean()
    return nll, {"nll": float(nll.detach())}


def _fixed_crops(model: WaveGlow, clips: list[Clip], length: int, limit: int = 32) -> tuple[Tensor, Tensor]:
    audio = torch.stack([_segment(c.audio, length, 0) for c in clips[:limit]])
    audio = audio + (torch.rand(audio.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * DEQUANTISE
    return audio[:, None], log_mel(audio, model.config.mel)


@torch.no_grad()
def evaluate(model: WaveGlow, clips: list[Clip], limit: int = 32) -> float:
    """Mean negative log-likelihood in nats per sample on fixed crops of ``clips``."""
    model.eval()
    audio, mel = _fixed_crops(model, clips, _segment_length(model.config), limit)
    return float(model.nll_per_sample(audio, mel).mean())


def _check_rate(clips: list[Clip], rate: int, what: str) -> None:
    wrong = [c.name for c in clips if c.sample_rate != rate]
    if wrong:
        raise DataError(f"{what} clips at another rate than the model's {rate} Hz (e.g. {wrong[0]})")


def train(data: str | None = None, out: str | Path = "out/vocoder", preset: str = "cpu",
          steps: int | None = None, minutes: float | None = None, seed: int | None = None, resume: bool = False,
          batch_size: int | None = None, lr: float | None = None, checkpoint_every: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train a WaveGlow on ``data`` (a WAV folder; default: the embedded FSDD sample);
    returns the last metrics, with held-out NLL (nats per sample). A resumed run reuses its
    saved seed and data unless given again (see :func:`flowkit.train.resume_run`)."""
    out = Path(out)
    saved = start_run(out, resume, "waveglow")
    given = {"steps": steps, "max_minutes": minutes, "seed": seed, "batch_size": batch_size, "lr": lr,
             "checkpoint_every": checkpoint_every}
    arguments, resumed = {"data": None if data is None else str(data)}, None
    if saved is not None:
        config = WaveGlowConfig.from_dict(saved["model"]["waveglow"])
        check_model_size(lambda: WaveGlow(config), f"the vocoder in {out}")
        preset = saved["model"].get("preset", preset)
        loop, arguments, resumed = resume_run(saved, arguments, **given)
    else:
        config = preset_config(preset)
        loop = train_config(TRAIN_DEFAULTS, **given)
    data = arguments["data"] or "demo"
    train_clips, held_out = split_clips(data, config.mel.sample_rate)
    _check_rate(train_clips + held_out, config.mel.sample_rate, "training")
    torch.manual_seed(loop.seed)
    model = WaveGlow(config)
    length = _segment_length(config)
    schedule = IndexSchedule(len(train_clips), min(loop.batch_size, len(train_clips)), loop.seed)
    trainer = Trainer(model, _loss, _batches(model, train_clips, schedule, length), loop, out,
                      model_config={"kind": "waveglow", "preset": preset, "waveglow": config.to_dict()},
                      evaluate=lambda m: {"nll": evaluate(m, held_out)}, resume=resume, progress=progress,
                      arguments={"data": data})
    metrics = trainer.fit()
    return {**metrics, "resumed": resumed.to_dict()} if resumed is not None else metrics


def load(checkpoint: str | Path, device: str = "cpu", synthesis: str | None = None) -> WaveGlow:
    """A WaveGlow from a run folder or its ``checkpoint/`` (no code executed); with
    ``synthesis="bf16"`` (or ``"float32"``) prepared for fast synthesis only
    (:meth:`WaveGlow.prepare_synthesis`)."""
    model = load_run(checkpoint, "waveglow", lambda saved: WaveGlow(WaveGlowConfig.from_dict(saved["waveglow"])),
                     "vocoder", ema=True)
    model = model.to(device).eval()
    return model.prepare_synthesis(synthesis) if synthesis is not None else model


def log_spectral_distance(reference: Tensor, estimate: Tensor, n_fft: int = 512, hop: int = 128) -> float:
    """Log-spectral distance in dB between two waveforms (over their common length)."""
    length = min(reference.shape[-1], estimate.shape[-1])
    window = torch.hann_window(n_fft)

    def power(x: Tensor) -> Tensor:
        spec = torch.stft(x[..., :length].float(), n_fft, hop, window=window, return_complex=True)
        return spec.abs().square().clamp_min(1e-10)

    difference = 10 * torch.log10(power(reference)) - 10 * torch.log10(power(estimate))
    return float(difference.square().mean(dim=-2).sqrt().mean())


@torch.no_grad()
def vocode_files(checkpoint: str | Path, source: str | Path, out: str | Path, sigma: float = 0.6,
                 denoise: float = 0.0, griffin_lim_too: bool = False) -> dict[str, Any]:
    """Copy synthesis of a WAV file or folder: one WAV per input (same file name) and a
    spectrogram PNG (original over vocoded); returns log-spectral distance and real-time
    factor per file and their means."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FlowkitError(f"{out} is a file; --out must be a folder")
    check_output_folder(source, out)
    model = load(checkpoint, synthesis="bf16")
    clips = load_clips(source, model.config.mel.sample_rate)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for clip in clips:
        start = time.perf_counter()
        audio = model.vocode(clip.audio[None], sigma, denoise)[0]
        seconds = time.perf_counter() - start
        write_wav(out / f"{clip.name}.wav", audio, model.config.mel.sample_rate)
        mels = [log_mel(clip.audio[None], model.config.mel)[0], log_mel(audio[None], model.config.mel)[0]]
        row = {"file": clip.name, "seconds": round(clip.audio.shape[0] / model.config.mel.sample_rate, 3),
               "log_spectral_distance_db": round(log_spectral_distance(clip.audio, audio), 3),
               "real_time_factor": round(seconds / (audio.shape[0] / model.config.mel.sample_rate), 3),
               "notes": clip.notes}
        if griffin_lim_too:
            gl = griffin_lim(mels[0][None], model.config.mel)[0]
            row["griffin_lim_log_spectral_distance_db"] = round(log_spectral_distance(clip.audio, gl), 3)
        save_spectrograms(out / f"{clip.name}.png", mels, ["original", f"vocoded (sigma {sigma})"],
                          model.config.mel)
        rows.append(row)
    means = {k: round(sum(r[k] for r in rows) / len(rows), 3) for k in rows[0] if k.endswith(("_db", "_factor"))}
    result = {"files": rows, "mean": means, "out": str(out)}
    write_json(out / "vocode.json", result)
    return result
