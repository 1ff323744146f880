"""The text run: train a flow on sentence embeddings, load it, evaluate it, and use it.

:func:`train` embeds the sentences of the given files (a tenth held out by a hash of
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
from flowkit.config import SavedConfig, check_model_size
from flowkit.errors import CheckpointError, DataError, FlowkitError
from flowkit.train import IndexSchedule, Trainer, load_run, resume_run, start_run, train_config

from .data import Pairs, demo_corpus, read_training_sentences
from .encoder import DEFAULT_MODEL, SentenceEncoder
from .labels import LabelledSentences, read_labelled
from .model import EmbeddingFlow, EmbeddingFlowConfig
from .model import preset as preset_config
from .steer import flow_edit, matching_raw_strength, mean_cosine, nearest, raw_direction, raw_edit, train_probe
from .sts import spearman_x100
from .transfer import Edit, calibrate_strength, conditional_gaussian, raw_label_edit, scaled_transfer
from .whitening import Whitening

__all__ = ["SPACES", "SteeringSplit", "TextModel", "TextModelConfig", "evaluate", "evaluate_steering",
           "label_editors", "load", "split_held_out", "steer", "steer_to", "train"]

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

    Calling it is ``flow.log_prob`` (so the engine and DDP can train it). A flow fitted with
    labels also holds ``transfer_strength`` (``(K, K)``, a buffer saved with the weights):
    the strength of each label-to-label transfer, calibrated at the end of :func:`train`
    on held-out labelled sentences (:func:`flowkit_text.transfer.calibrate_strength`)."""

    def __init__(self, config: TextModelConfig):
        super().__init__()
        self.config = config
        self.flow = EmbeddingFlow(EmbeddingFlowConfig.from_dict(config.flow))
        self.whitening = Whitening(self.flow.config.dim)
        self._encoder: SentenceEncoder | None = None
        if self.flow.labels:
            k = len(self.flow.labels)
            self.register_buffer("transfer_strength", torch.ones(k, k, dtype=torch.float64))

    @property
    def dim(self) -> int:
        return self.flow.config.dim

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.flow.log_prob(x, context)

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
    def held_out_nll(self, x: Tensor, context: Tensor | None = None, seed: int = 0) -> float:
        """Mean NLL (nats per dimension) of ``x`` plus the training noise (a fixed draw),
        given the labels' ``context`` for a labelled flow."""
        parts = self.flow.dequantise(x, torch.Generator().manual_seed(seed)).split(1024)
        contexts = [None] * len(parts) if context is None else context.split(1024)
        with fk.evaluation_mode(self.flow):
            return float(torch.cat([self.flow.nll_per_dim(p, c) for p, c in zip(parts, contexts)]).mean())

    def strength(self, source: str, target: str) -> float:
        """The calibrated strength of a ``source`` to ``target`` transfer."""
        labels = self.flow.labels
        return float(self.transfer_strength[labels.index(source), labels.index(target)])

    @torch.no_grad()
    def classify(self, x: Tensor) -> list[str]:
        """The flow's most likely label of each embedding (equal priors)."""
        with fk.evaluation_mode(self.flow):
            best = self.flow.label_log_likelihoods(x).argmax(1)
        return [self.flow.labels[i] for i in best.tolist()]

    @torch.no_grad()
    def transfer(self, x: Tensor, target: str, source: str | list[str] | None = None,
                 strength: float | None = None) -> Tensor:
        """Encoder-space embeddings ``x`` moved to label ``target``: encoded under ``source``
        (one label for all, one per row, or ``None``: the flow's own classification of each),
        decoded under ``target`` (:func:`flowkit.transfer`), the move scaled by ``strength``
        (``None``: the calibrated one of each source-target pair; see
        :func:`~flowkit_text.transfer.scaled_transfer`), projected back onto the unit sphere for
        a unit-norm encoder. Rows already at ``target`` are left as they are."""
        self.flow.label_context([target])  # names an unknown label or an unlabelled flow
        sources = self.classify(x) if source is None else [source] * len(x) if isinstance(source, str) else source
        if len(sources) != len(x):
            raise FlowkitError(f"{len(sources)} source labels for {len(x)} sentences")
        out = x.clone()
        for name in dict.fromkeys(sources):
            if name == target:
                continue
            rows = torch.tensor([i for i, s in enumerate(sources) if s == name])
            amount = self.strength(name, target) if strength is None else strength
            with fk.evaluation_mode(self.flow):
                out[rows] = scaled_transfer(self.flow, x[rows], self.flow.label_context([name]),
                                            self.flow.label_context([target]), amount, self.config.normalised)
        return out

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
    """The evaluation hook of :func:`train`: validation NLL, remembering the best weights.

    Its state goes into every checkpoint (the trainer calls :meth:`state_dict`), so a
    resumed run keeps the best step found before the interruption. A finished run's
    checkpoint holds the best weights (what inference loads) and keeps the last ones in
    this state, so that ``--resume --steps N`` continues from where training stopped."""

    def __init__(self, x_validation: Tensor, context: Tensor | None, model: nn.Module):
        self.x, self.context, self.model = x_validation, context, model
        self.nll, self.state, self.step, self.trainer = math.inf, None, None, None
        self.last: dict[str, Tensor] | None = None

    def __call__(self, model: TextModel) -> dict[str, float]:
        nll = model.held_out_nll(self.x, self.context)
        if nll < self.nll:
            self.nll, self.step = nll, self.trainer.step
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"nll": nll, "best_nll": self.nll}

    def keep_best(self) -> None:
        """Early stopping: put the best weights in the model, keeping the last ones for a resume."""
        if self.step is not None and self.step < self.trainer.step:
            self.last = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(self.state)

    def state_dict(self) -> dict[str, Any]:
        weights = {f"best.{k}": v for k, v in (self.state or {}).items()}
        weights.update({f"last.{k}": v for k, v in (self.last or {}).items()})
        return {"best_nll": self.nll if math.isfinite(self.nll) else None, "best_step": self.step, **weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nll = math.inf if state.get("best_nll") is None else float(state["best_nll"])
        self.step = state.get("best_step")
        self.state = {k.removeprefix("best."): v for k, v in state.items() if k.startswith("best.")} or None
        last = {k.removeprefix("last."): v for k, v in state.items() if k.startswith("last.")}
        if last:  # the checkpoint of a finished run holds the best weights: training goes on from the last
            self.model.load_state_dict(last)


def _sentences(data: list[str] | str) -> list[str]:
    if data == "demo" or data == ["demo"]:
        corpus = demo_corpus()
        return list(dict.fromkeys(corpus["positive"] + corpus["negative"] + corpus["sts"].sentences()))
    return read_training_sentences([data] if isinstance(data, str) else list(data))


def _loss(model: nn.Module, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, float]]:
    x = batch[0]
    nll = (-model(*batch) / x.shape[1]).mean()
    return nll, {"nll": float(nll.detach())}


def train(data: list[str] | str | None = None, out: str | Path = "out/text", preset: str = "affine",
             steps: int | None = None, minutes: float | None = None, seed: int | None = None, resume: bool = False,
             checkpoint_every: int | None = None, encoder: str = DEFAULT_MODEL, progress: bool = True,
             labels: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Fit whitening and an embedding flow on the sentences of ``data`` (default: the
    embedded demo corpus); writes ``fit.json``.

    With ``labels`` (``(name, file)`` pairs, see :mod:`flowkit_text.labels`) the flow is
    conditioned on each sentence's label (unlabelled sentences of ``data`` get none), and
    the strength of each label-to-label transfer is calibrated on the held-out labelled
    sentences after training. A resumed run reuses its saved seed, data and labels unless
    given again (a differing value is applied and listed in the report's ``resumed``), and
    its early-stopping state (best score, step and weights) comes back with it."""
    out = Path(out)
    saved = start_run(out, resume, "text")
    resuming = saved is not None
    given = {"steps": steps, "max_minutes": minutes, "seed": seed, "checkpoint_every": checkpoint_every}
    arguments = {"data": data, "labels": [list(pair) for pair in labels] if labels else None}
    resumed = None
    if resuming:
        loop, arguments, resumed = resume_run(saved, arguments, **given)
        data, labels = arguments["data"], [tuple(pair) for pair in arguments["labels"] or []]
    else:
        loop = train_config(TRAIN_DEFAULTS, **given)
        data = "demo" if data is None and not labels else data
    if not data and not labels:
        raise DataError("fitting needs sentences: give data and/or labelled sentences")
    arguments = {"data": data, "labels": [list(pair) for pair in labels] if labels else None}
    labelled = read_labelled(labels) if labels else None
    if resuming:
        encoder, flow_config = saved["model"]["encoder"], saved["model"]["flow"]
        _check_resumed_labels(flow_config.get("labels", []), labelled)
    label_of: dict[str, str | None] = dict.fromkeys(_sentences(data) if data else [])
    if labelled is not None:
        label_of.update(zip(labelled.sentences, labelled.labels))
    sentences = list(label_of)
    train, validation, test = split_held_out(sentences)
    if len(train) < MIN_SENTENCES or not validation or not test:
        raise DataError(f"fitting needs at least {MIN_SENTENCES} distinct sentences (a tenth is held out); "
                        f"got {len(sentences)}")
    embedder = SentenceEncoder(encoder, progress=progress)
    x, x_validation, x_test = (torch.from_numpy(embedder.encode(part)) for part in (train, validation, test))
    if not resuming:
        flow_config = {**preset_config(preset, x.shape[1]).to_dict(), "labels": labelled.names if labelled else []}
    norms = x.double().norm(dim=1)
    config = TextModelConfig(encoder, bool(torch.allclose(norms, torch.ones_like(norms), atol=1e-3)), flow_config)
    if resuming:
        check_model_size(lambda: TextModel(config), f"the text flow in {out}")
    torch.manual_seed(loop.seed)
    model = TextModel(config)
    model._encoder = embedder
    contexts = [model.flow.label_context([label_of[s] for s in part]) if labelled else None
                for part in (train, validation, test)]
    model.flow.initialise(x, contexts[0])
    model.whitening.fit(x)
    schedule = IndexSchedule(len(x), min(loop.batch_size, len(x)), loop.seed)

    def batches(step: int) -> tuple[Tensor, ...]:
        rows = schedule.indices(step)
        noisy = model.flow.dequantise(x[rows], schedule.generator(step))
        return (noisy,) if contexts[0] is None else (noisy, contexts[0][rows])

    started = time.monotonic()
    best = _BestWeights(x_validation, contexts[1], model)
    trainer = Trainer(model, _loss, batches, loop, out, evaluate=best,
                      model_config={"kind": "text", **config.to_dict()}, resume=resume, progress=progress,
                      arguments=arguments)
    best.trainer = trainer
    if not resuming:
        best(model.eval())  # the starting point: with the whitening init, the Gaussian itself
    metrics = trainer.fit()
    best.keep_best()
    report = {"steps": trainer.step, "best_step": best.step,
              "kept_whitening_start": best.step == 0 and model.flow.config.init == "whitening",
              "held_out_nll": model.held_out_nll(x_test, contexts[2]),
              "validation_nll": best.nll if math.isfinite(best.nll) else None,
              "gaussian_nll": model.gaussian_nll(x, x_test), "train_nll": metrics.get("nll"),
              "fit_seconds": round(time.monotonic() - started, 1),
              "train_sentences": len(train), "held_out_sentences": len(test), "encoder": encoder,
              "dim": model.dim, "preset": preset if not resuming else None,
              "noise_std": float(model.flow.noise_std[0])}
    if resumed is not None:
        report["resumed"] = resumed.to_dict()
    if labelled is not None:
        report.update(_calibrate(model, x, train, x_validation, validation, x_test, contexts, label_of))
        report["ambiguous_sentences_left_out"] = labelled.ambiguous
    trainer.save()
    (out / "fit.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    return report


def _check_resumed_labels(saved: list[str], labelled: LabelledSentences | None) -> None:
    given = labelled.names if labelled else []
    if given != saved:
        raise DataError(f"this run was fitted with labels {saved or 'none'}; resume it with the same "
                        f"--label options (got {given or 'none'})")


def label_editors(model: TextModel, x_train: Tensor, labels_train: list[str]) -> dict[str, Edit]:
    """The three ways of moving embeddings between labels, as ``edit(x, source, target, strength)``:
    ``"flow"`` (:meth:`TextModel.transfer`), ``"conditional Gaussian"`` (the same transfer
    through :func:`~flowkit_text.transfer.conditional_gaussian` fitted on the training
    sentences) and ``"raw"`` (the mean-difference move in the encoder's space)."""
    names = model.flow.labels
    context = model.flow.label_context(labels_train)
    noise_var = float(model.flow.noise_std.double().square().mean())
    gaussian = conditional_gaussian(x_train, context, noise_var)
    means = {n: x_train[[i for i, label in enumerate(labels_train) if label == n]].double().mean(0) for n in names}
    sphere = model.config.normalised

    def through_gaussian(x: Tensor, source: str, target: str, strength: float) -> Tensor:
        return scaled_transfer(gaussian, x, model.flow.label_context([source]), model.flow.label_context([target]),
                               strength, sphere)

    return {"flow": lambda x, s, t, a: model.transfer(x, t, s, a),
            "conditional Gaussian": through_gaussian,
            "raw": lambda x, s, t, a: raw_label_edit(x, means[s], means[t], a, sphere)}


def _calibrate(model: TextModel, x: Tensor, train: list[str], x_validation: Tensor, validation: list[str],
               x_test: Tensor, contexts: list, label_of: dict) -> dict[str, Any]:
    """Set the flow's transfer strengths on the validation sentences
    (:func:`~flowkit_text.transfer.calibrate_strength`), calibrate the two baselines the same way for the reports,
    and give the conditional Gaussian's test NLL beside the flow's."""
    names = model.flow.labels
    x_labelled, labels_train = _labelled_rows(x, train, label_of)
    by_label = {name: x_validation[[i for i, s in enumerate(validation) if label_of[s] == name]] for name in names}
    if any(len(rows) == 0 for rows in by_label.values()):
        counts = {n: len(r) for n, r in by_label.items()}
        raise DataError(f"every label needs held-out sentences to calibrate its transfers; got {counts} "
                        f"(give more sentences)")
    editors = label_editors(model, x_labelled, labels_train)
    strengths = {way: calibrate_strength(edit, by_label) for way, edit in editors.items()}
    for (source, target), strength in strengths["flow"].items():
        model.transfer_strength[names.index(source), names.index(target)] = strength
    noise_var = float(model.flow.noise_std.double().square().mean())
    gaussian = conditional_gaussian(x, contexts[0], noise_var)
    labelled_test = contexts[2].sum(1) > 0
    x_test_labelled, c_test = x_test[labelled_test], contexts[2][labelled_test]
    noisy = model.flow.dequantise(x_test_labelled, torch.Generator().manual_seed(0)).double()  # held_out_nll's draw
    with torch.no_grad():
        gaussian_nll = -gaussian.double().log_prob(noisy, c_test.double()) / model.dim
    return {"labels": names, "labelled_train_sentences": {n: labels_train.count(n) for n in names},
            "transfer_strength": {way: {f"{s}->{t}": v for (s, t), v in chosen.items()}
                                  for way, chosen in strengths.items()},
            "conditional_gaussian_nll": float(gaussian_nll.mean()),
            "labelled_held_out_nll": model.held_out_nll(x_test_labelled, c_test)}


def _labelled_rows(x: Tensor, sentences: list[str], label_of: dict) -> tuple[Tensor, list[str]]:
    rows = [i for i, s in enumerate(sentences) if label_of[s] is not None]
    return x[rows], [label_of[sentences[i]] for i in rows]


def load(checkpoint: str | Path) -> TextModel:
    """A :class:`TextModel` from a text run (its folder or ``checkpoint/``)."""
    return load_run(checkpoint, "text", lambda saved: TextModel(TextModelConfig.from_dict(saved)), "text-flow").eval()


def evaluate(model: TextModel, pairs: Pairs) -> dict[str, Any]:
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
    return edited, _with_neighbours(summary, model, inputs, x, edited, corpus, show, k)


def steer_to(model: TextModel, inputs: list[str], target: str, source: str | None = None,
             strength: float | None = None, corpus: list[str] | None = None, show: int = 5,
             k: int = 3) -> tuple[Tensor, dict[str, Any]]:
    """Move ``inputs`` to label ``target`` (:meth:`TextModel.transfer`): from ``source``, or
    from the flow's own classification of each sentence; at ``strength``, or the calibrated
    one. Returns the edited embeddings (encoder's space) and a summary like :func:`steer`'s."""
    if not model.flow.labels:
        raise FlowkitError("this checkpoint was fitted without labels: --to needs a fit with --label NAME=FILE "
                           "(or steer along a direction with --positive --negative --alpha)")
    model.flow.label_context([target] + ([source] if source else []))  # names an unknown label first
    x = model.encode_sentences(inputs)
    sources = [source] * len(x) if source else model.classify(x)
    edited = model.transfer(x, target, sources, strength)
    used = {s: strength if strength is not None else model.strength(s, target) for s in dict.fromkeys(sources)
            if s != target}
    summary: dict[str, Any] = {"to": target, "from": source or "the flow's classification",
                               "sources": {s: sources.count(s) for s in dict.fromkeys(sources)},
                               "strength": used, "sentences": len(inputs), "mean_cosine": mean_cosine(x, edited)}
    return edited, _with_neighbours(summary, model, inputs, x, edited, corpus, show, k)


def _with_neighbours(summary: dict[str, Any], model: TextModel, inputs: list[str], x: Tensor, edited: Tensor,
                     corpus: list[str] | None, show: int, k: int) -> dict[str, Any]:
    """``summary`` with the nearest ``corpus`` sentences of the first ``show`` inputs, before and after."""
    if corpus:
        c = model.encode_sentences(corpus)
        before, after = nearest(x[:show], c, corpus, k), nearest(edited[:show], c, corpus, k)
        summary["neighbours"] = [{"sentence": s, "before": b, "after": a}
                                 for s, b, a in zip(inputs[:show], before.sentences, after.sentences)]
    return summary


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
        return cls(rest_pos[:half_pos], rest_neg[:half_neg], rest_pos[half_pos:], rest_neg[half_neg:],
                   negative[:n_test])


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
                     "raw_mean_cosine": round(mean_cosine(x, raw_edited), 5),
                     "raw_flip_rate": positive_share(raw_edited),
                     "raw_positive_probability": probability(raw_edited), "unedited_flip_rate": positive_share(x)})
    return rows
