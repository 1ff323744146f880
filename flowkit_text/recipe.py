"""The text plug-in's recipe: fit a flow on sentence embeddings, and use it.

:func:`fit_text` embeds the sentences of the given files (a tenth held out by a hash of
the text, so the split never depends on file order: half of it for validation, half for
the reported test NLL), fits whitening and the flow by maximum likelihood with the shared
engine (checkpoints, resume, tqdm, DDP), keeps the weights with the best validation NLL
(evaluated every 50 steps: early stopping, since a 384-d flow overfits a few thousand
sentences within a few epochs), and writes ``fit.json`` with the test NLL of the flow and
of the full-covariance Gaussian.
:class:`TextModel` bundles the encoder's name, the flow and the whitening, so a
checkpoint alone embeds new sentences in any of the three spaces.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import flowkit as fk
from flowkit.config import SavedConfig
from flowkit.errors import CheckpointError, DataError, FlowkitError
from flowkit.train import (IndexSchedule, TrainConfig, Trainer, load_checkpoint, load_weights, prepare_run_folder,
                           saved_run_config)

from .data import Pairs, demo_corpus, read_training_sentences
from .encoder import DEFAULT_MODEL, SentenceEncoder
from .model import EmbeddingFlow, EmbeddingFlowConfig, preset
from .steer import flow_edit, matching_raw_strength, mean_cosine, nearest, raw_direction, raw_edit, train_probe
from .sts import spearman_x100
from .whitening import Whitening

__all__ = ["SPACES", "SteeringSplit", "TextModel", "TextModelConfig", "evaluate_steering", "evaluate_sts", "fit_text", "load_text_model", "split_held_out",
           "steer"]

SPACES = ("raw", "whitened", "latent")
TRAIN_DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "batch_size": 256, "warmup_steps": 50, "ema_decay": None,
                  "grad_clip": 1.0, "steps": 1000, "log_every": 10, "checkpoint_every": 200, "eval_every": 50}
MIN_SENTENCES = 40


@dataclass
class TextModelConfig(SavedConfig):
    """What a text checkpoint needs besides weights: the encoder and the flow's architecture."""

    encoder: str = DEFAULT_MODEL
    normalised: bool = True  # the encoder's embeddings have unit norm; edits are projected back
    flow: dict[str, Any] = field(default_factory=lambda: EmbeddingFlowConfig().to_dict())


class TextModel(nn.Module):
    """The flow and the whitening fitted on the same sentences, with the encoder's name.

    Calling it is ``flow.log_prob`` (so the engine and DDP can train it)."""

    def __init__(self, config: TextModelConfig):
        super().__init__()
        self.config = config
        self.flow = EmbeddingFlow(EmbeddingFlowConfig.from_dict(config.flow))
        self.whitening = Whitening(self.flow.config.dim)
        self._encoder: SentenceEncoder | None = None

    @property
    def dim(self) -> int:
        return self.flow.config.dim

    def forward(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(x)

    @property
    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            self._encoder = SentenceEncoder(self.config.encoder)
        return self._encoder

    def encode_sentences(self, sentences: list[str]) -> Tensor:
        """The encoder's embeddings of ``sentences``, checked against the flow's dimension."""
        x = torch.from_numpy(self.encoder.encode(sentences))
        if x.shape[1] != self.dim:
            raise CheckpointError(f"the encoder {self.config.encoder!r} gives {x.shape[1]}-d embeddings; "
                                  f"this model was fitted on {self.dim}-d ones")
        return x

    @torch.no_grad()
    def to_space(self, x: Tensor, space: str, batch_size: int = 1024) -> Tensor:
        """Embeddings ``x`` in the ``raw``, ``whitened`` or flow-``latent`` space."""
        if space == "raw":
            return x
        if space == "whitened":
            return self.whitening.reduce(x)
        if space != "latent":
            raise FlowkitError(f"space must be one of {', '.join(SPACES)}, not {space!r}")
        with fk.evaluation_mode(self.flow):
            return torch.cat([self.flow.encode(chunk) for chunk in x.split(batch_size)])

    @torch.no_grad()
    def held_out_nll(self, x: Tensor, seed: int = 0) -> float:
        """Mean NLL (nats per dimension) of ``x`` plus the training noise (a fixed draw)."""
        noisy = self.flow.dequantise(x, torch.Generator().manual_seed(seed))
        with fk.evaluation_mode(self.flow):
            return float(torch.cat([self.flow.nll_per_dim(c) for c in noisy.split(1024)]).mean())

    @torch.no_grad()
    def gaussian_nll(self, train: Tensor, held_out: Tensor, seed: int = 0) -> float:
        """The same held-out NLL for the full-covariance Gaussian fitted on ``train`` with the noise."""
        noise_var = float(self.flow.noise_std.double().square().mean())
        gaussian = fk.Flow(Whitening.fitted(train, noise_var=noise_var), event_shape=(self.dim,))
        noisy = self.flow.dequantise(held_out, torch.Generator().manual_seed(seed)).double()
        return float((-gaussian.log_prob(noisy) / self.dim).mean())


def split_held_out(sentences: list[str], every: int = 10) -> tuple[list[str], list[str], list[str]]:
    """``(train, validation, test)`` by a hash of the text, never by file order: a sentence is
    held out when the first byte of its SHA-256 is 0 mod ``every``, and held-out sentences
    go to validation (early stopping) or test (the reported NLL) by the parity of the second."""
    digests = [hashlib.sha256(s.encode("utf-8")).digest() for s in sentences]
    train = [s for s, d in zip(sentences, digests) if d[0] % every]
    validation = [s for s, d in zip(sentences, digests) if not d[0] % every and d[1] % 2 == 0]
    test = [s for s, d in zip(sentences, digests) if not d[0] % every and d[1] % 2 == 1]
    return train, validation, test


class _BestWeights:
    """The evaluation hook of :func:`fit_text`: validation NLL, remembering the best weights."""

    def __init__(self, x_validation: Tensor):
        self.x = x_validation
        self.nll, self.state, self.step, self.trainer = math.inf, None, None, None

    def __call__(self, model: TextModel) -> dict[str, float]:
        nll = model.held_out_nll(self.x)
        if nll < self.nll:
            self.nll, self.step = nll, self.trainer.step
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"nll": nll, "best_nll": self.nll}


def _sentences(data: list[str] | str) -> list[str]:
    if data == "demo" or data == ["demo"]:
        corpus = demo_corpus()
        return list(dict.fromkeys(corpus["positive"] + corpus["negative"] + corpus["sts"].sentences()))
    return read_training_sentences([data] if isinstance(data, str) else list(data))


def _loss(model: nn.Module, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, float]]:
    x = batch[0]
    nll = (-model(x) / x.shape[1]).mean()
    return nll, {"nll": float(nll.detach())}


def fit_text(data: list[str] | str = "demo", out: str | Path = "out/text", preset_name: str = "affine",
             steps: int | None = None, minutes: float | None = None, seed: int = 0, resume: bool = False,
             checkpoint_every: int | None = None, encoder: str = DEFAULT_MODEL, progress: bool = True) -> dict[str, Any]:
    """Fit whitening and an embedding flow on the sentences of ``data``; writes ``fit.json``."""
    out = Path(out)
    resuming = prepare_run_folder(out, resume)
    train_defaults = TRAIN_DEFAULTS
    if resuming:
        saved = saved_run_config(out, "text")
        encoder, flow_config, train_defaults = saved["model"]["encoder"], saved["model"]["flow"], saved["train"]
    sentences = _sentences(data)
    train, validation, test = split_held_out(sentences)
    if len(train) < MIN_SENTENCES or not validation or not test:
        raise DataError(f"fitting needs at least {MIN_SENTENCES} distinct sentences (a tenth is held out); "
                        f"got {len(sentences)}")
    embedder = SentenceEncoder(encoder, progress=progress)
    x, x_validation, x_test = (torch.from_numpy(embedder.encode(part)) for part in (train, validation, test))
    if not resuming:
        flow_config = preset(preset_name, x.shape[1]).to_dict()
    norms = x.double().norm(dim=1)
    config = TextModelConfig(encoder, bool(torch.allclose(norms, torch.ones_like(norms), atol=1e-3)), flow_config)
    explicit = {"steps": steps, "max_minutes": minutes, "seed": seed, "checkpoint_every": checkpoint_every}
    train_config = TrainConfig.from_dict({**train_defaults, **{k: v for k, v in explicit.items() if v is not None}})
    torch.manual_seed(seed)
    model = TextModel(config)
    model._encoder = embedder
    model.flow.initialise(x)
    model.whitening.fit(x)
    schedule = IndexSchedule(len(x), min(train_config.batch_size, len(x)), seed)
    batches = lambda step: (model.flow.dequantise(x[schedule.indices(step)], schedule.generator(step)),)  # noqa: E731
    started = time.monotonic()
    best = _BestWeights(x_validation)
    trainer = Trainer(model, _loss, batches, train_config, out, evaluate=best,
                      model_config={"kind": "text", **config.to_dict()}, resume=resume, progress=progress)
    best.trainer = trainer
    if not resuming:
        best(model.eval())  # the starting point: with the whitening init, the Gaussian itself
    metrics = trainer.fit()
    if best.step is not None and best.step < trainer.step:
        model.load_state_dict(best.state)  # early stopping: keep the weights that generalise best
        trainer.save()
    report = {"steps": trainer.step, "best_step": best.step,
              "held_out_nll": model.held_out_nll(x_test), "validation_nll": best.nll,
              "gaussian_nll": model.gaussian_nll(x, x_test), "train_nll": metrics.get("nll"),
              "fit_seconds": round(time.monotonic() - started, 1),
              "train_sentences": len(train), "held_out_sentences": len(test), "encoder": encoder,
              "dim": model.dim, "preset": preset_name if not resuming else None,
              "noise_std": float(model.flow.noise_std[0])}
    (out / "fit.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    return report


def load_text_model(checkpoint: str | Path) -> TextModel:
    """A :class:`TextModel` from a text run (its folder or ``checkpoint/``)."""
    saved = load_checkpoint(checkpoint)
    described = dict(saved.config.get("model", {}))
    if described.pop("kind", None) != "text":
        raise CheckpointError(f"{checkpoint} is not a text-flow checkpoint")
    try:
        model = TextModel(TextModelConfig.from_dict(described))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{checkpoint}: invalid text-model config ({error})") from None
    load_weights(model, saved.model, f"checkpoint {checkpoint}")
    return model.eval()


def evaluate_sts(model: TextModel, pairs: Pairs) -> dict[str, Any]:
    """Spearman x100 of cosine similarity in the raw, whitened and flow-latent spaces."""
    a, b = model.encode_sentences(pairs.first), model.encode_sentences(pairs.second)
    result: dict[str, Any] = {space: spearman_x100(model.to_space(a, space), model.to_space(b, space), pairs.scores)
                              for space in SPACES}
    return {"raw": result["raw"], "whitened": result["whitened"], "flow": result["latent"], "pairs": len(pairs)}


def steer(model: TextModel, positive: list[str], negative: list[str], inputs: list[str], alpha: float,
          corpus: list[str] | None = None, show: int = 5, k: int = 3) -> tuple[Tensor, dict[str, Any]]:
    """Move the embeddings of ``inputs`` along the flow-latent direction from ``negative``
    to ``positive`` sentences by ``alpha``; returns the edited embeddings (encoder's space)
    and a summary: mean cosine to the originals and, given a ``corpus``, the nearest corpus
    sentences of the first ``show`` inputs before and after."""
    if not positive or not negative:
        raise DataError("steering needs positive and negative example sentences")
    direction = fk.attribute_direction(model.flow, model.encode_sentences(positive), model.encode_sentences(negative))
    x = model.encode_sentences(inputs)
    edited = torch.cat([flow_edit(model.flow, chunk, direction, alpha, model.config.normalised)
                        for chunk in x.split(1024)])
    summary: dict[str, Any] = {"alpha": alpha, "sentences": len(inputs), "mean_cosine": mean_cosine(x, edited)}
    if corpus:
        c = model.encode_sentences(corpus)
        before, after = nearest(x[:show], c, corpus, k), nearest(edited[:show], c, corpus, k)
        summary["neighbours"] = [{"sentence": s, "before": b, "after": a}
                                 for s, b, a in zip(inputs[:show], before.sentences, after.sentences)]
    return edited, summary


@dataclass
class SteeringSplit:
    """Disjoint labelled sentences: for the direction, for the probe, and held-out negatives to edit."""

    direction_positive: list[str]
    direction_negative: list[str]
    probe_positive: list[str]
    probe_negative: list[str]
    test_negative: list[str]

    @classmethod
    def of(cls, positive: list[str], negative: list[str], test_fraction: float = 0.2) -> SteeringSplit:
        """Split labelled sentences: the test negatives first, then the rest in two halves."""
        n_test = max(1, int(len(negative) * test_fraction))
        rest_neg, rest_pos = negative[n_test:], positive[n_test:]
        half_neg, half_pos = len(rest_neg) // 2, len(rest_pos) // 2
        if min(half_neg, half_pos) < 5:
            raise DataError("steering needs at least 10 positive and 10 negative sentences besides the test ones")
        return cls(rest_pos[:half_pos], rest_neg[:half_neg], rest_pos[half_pos:], rest_neg[half_neg:], negative[:n_test])


def evaluate_steering(model: TextModel, split: SteeringSplit, alphas: list[float]) -> list[dict[str, float]]:
    """For each ``alpha``: the flow-latent edit's mean cosine to the originals and the share
    of held-out negatives the probe then calls positive, beside the raw-space mean-difference
    edit scaled to the same mean cosine."""
    enc = model.encode_sentences
    latent_direction = fk.attribute_direction(model.flow, enc(split.direction_positive), enc(split.direction_negative))
    raw = raw_direction(enc(split.direction_positive), enc(split.direction_negative))
    probe = train_probe(enc(split.probe_positive), enc(split.probe_negative))
    x = enc(split.test_negative)
    positive_share = lambda e: float(probe.predict(e.double().numpy()).mean())  # noqa: E731
    probability = lambda e: float(probe.predict_proba(e.double().numpy())[:, 1].mean())  # noqa: E731
    rows = []
    for alpha in alphas:
        edited = flow_edit(model.flow, x, latent_direction, alpha, model.config.normalised)
        cosine = mean_cosine(x, edited)
        beta = matching_raw_strength(x, raw, cosine, model.config.normalised)
        raw_edited = raw_edit(x, raw, beta, model.config.normalised)
        rows.append({"alpha": alpha, "mean_cosine": round(cosine, 5), "flow_flip_rate": positive_share(edited),
                     "flow_positive_probability": probability(edited), "raw_beta": round(beta, 5),
                     "raw_mean_cosine": round(mean_cosine(x, raw_edited), 5), "raw_flip_rate": positive_share(raw_edited),
                     "raw_positive_probability": probability(raw_edited), "unedited_flip_rate": positive_share(x)})
    return rows
