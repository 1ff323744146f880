"""``flowkit text demo``: the whole text workflow on the embedded sample, on a fresh machine.

1. Fits whitening and the default flow on the sample's review sentences (embedded with the
   offline all-MiniLM-L6-v2) and evaluates STS on the sample's STS-B dev pairs, which the
   flow was not fitted on. The summary names the step early stopping kept, and says when it
   is the whitening start (the "flow" is then the Gaussian, a linear map).
2. Steers held-out negative reviews along the latent sentiment direction: the share a probe
   (fitted on other sentences) calls positive, beside the unedited share and the raw-space
   edit at equal cosine; the nearest sample sentences before and after, from a corpus that
   excludes the sentences the direction was made from.
3. Fits a flow conditioned on the emotion of the sample's GoEmotions comments (neutral, joy,
   anger, sadness) and moves held-out neutral comments to each emotion (encode under
   ``neutral``, decode under the emotion, at the calibrated strength); the nearest held-out
   real comments before and after each edit, and the share whose nearest comment carries
   the target emotion, beside the unedited share.

Writes ``summary.json``, the two runs (checkpoint, ``fit.json``, metrics) to ``out``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from flowkit.train import DEMO_ADVICE, prepare_run_folder

from . import run as text_run
from .data import DEMO_EMOTIONS, demo_corpus
from .run import SteeringSplit, evaluate_steering, steer
from .steer import mean_cosine, nearest

__all__ = ["run"]

ALPHAS = [0.5, 1.0, 2.0]
SHOW_ALPHA = 1.0
NEIGHBOUR_ALPHA = 2.0
HELD_OUT_COMMENTS = 100  # per emotion: the last ones of the sample, never fitted on
SHOWN = 3


def run(out: str | Path = "out/text-demo", minutes: float = 1.0, overwrite: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Run the demo; returns ``{"summary": ..., "steering": ..., "neighbours": ..., "emotions": ...}``."""
    out = Path(out)
    for run_folder in ("run", "emotions"):
        prepare_run_folder(out / run_folder, resume=False, overwrite=overwrite, advice=DEMO_ADVICE)
    corpus = demo_corpus()
    reviews = out / "reviews.txt"
    out.mkdir(parents=True, exist_ok=True)
    reviews.write_text("\n".join(corpus["positive"] + corpus["negative"]) + "\n")
    fit = text_run.train([str(reviews)], out / "run", minutes=minutes / 2, progress=progress)
    reviews_fitted = set(corpus["positive"] + corpus["negative"])
    model = text_run.load(out / "run")
    sts = text_run.evaluate(model, corpus["sts"])
    split = SteeringSplit.of(corpus["positive"], corpus["negative"])
    steering = evaluate_steering(model, split, ALPHAS)
    _, shown = steer(model, split.direction_positive, split.direction_negative, split.test_negative[:4],
                     NEIGHBOUR_ALPHA,
                     corpus=split.probe_positive + split.probe_negative, show=4, k=2)
    at = next(r for r in steering if r["alpha"] == SHOW_ALPHA)
    emotions = emotion_transfer(out, corpus["emotions"], minutes / 2, progress)
    summary = {"out": str(out), "steps": fit["steps"], "kept_step": fit["best_step"],
               "kept_whitening_start": fit["kept_whitening_start"], "held_out_nll": fit["held_out_nll"],
               "gaussian_nll": fit["gaussian_nll"], "sts_raw": sts["raw"], "sts_whitened": sts["whitened"],
               "sts_flow": sts["flow"], "sts_pairs": sts["pairs"],
               "sts_pairs_fitted_on": _pairs_seen(corpus["sts"], reviews_fitted),
               "steer_alpha": SHOW_ALPHA, "steer_mean_cosine": at["mean_cosine"],
               "flow_flip_rate": at["flow_flip_rate"], "unedited_flip_rate": at["unedited_flip_rate"],
               "raw_flip_rate_at_equal_cosine": at["raw_flip_rate"],
               "emotion_kept_step": emotions["fit"]["best_step"],
               **{f"neutral_to_{e}_nearest_rate": emotions["edits"][e]["nearest_target_rate"]
                  for e in DEMO_EMOTIONS[1:]},
               **{f"neutral_unedited_{e}_nearest_rate": emotions["edits"][e]["unedited_nearest_target_rate"]
                  for e in DEMO_EMOTIONS[1:]}}
    result = {"summary": summary, "fit": fit, "sts": sts, "steering": steering, "neighbours": shown["neighbours"],
              "emotions": emotions}
    (out / "summary.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    _print(fit, shown, emotions)
    return result


def emotion_transfer(out: Path, comments: dict[str, list[str]], minutes: float, progress: bool) -> dict[str, Any]:
    """Fit a flow conditioned on the emotions, move held-out neutral comments to each one."""
    specs = []
    for emotion, lines in comments.items():
        path = out / f"emotion-{emotion}.txt"
        path.write_text("\n".join(lines[:-HELD_OUT_COMMENTS]) + "\n")
        specs.append((emotion, str(path)))
    fit = text_run.train(None, out / "emotions", minutes=minutes, progress=progress, labels=specs)
    model = text_run.load(out / "emotions")
    held_out = {e: lines[-HELD_OUT_COMMENTS:] for e, lines in comments.items()}
    neutral = held_out["neutral"]
    corpus = [c for e in DEMO_EMOTIONS[1:] for c in held_out[e]]  # real comments of the emotions, none edited
    owner = [e for e in DEMO_EMOTIONS[1:] for _ in held_out[e]]
    x, c = model.encode_sentences(neutral), model.encode_sentences(corpus)
    before = _nearest_owner(x, c, owner)
    edits = {}
    for target in DEMO_EMOTIONS[1:]:
        edited = model.transfer(x, target, "neutral")
        after = _nearest_owner(edited, c, owner)
        neighbours = nearest(x[:SHOWN], c, corpus, 1), nearest(edited[:SHOWN], c, corpus, 1)
        edits[target] = {"strength": model.strength("neutral", target), "mean_cosine": mean_cosine(x, edited),
                         "nearest_target_rate": sum(o == target for o in after) / len(after),
                         "unedited_nearest_target_rate": sum(o == target for o in before) / len(before),
                         "neighbours": [{"comment": s, "before": b[0], "after": a[0]}
                                        for s, b, a in zip(neutral, neighbours[0].sentences, neighbours[1].sentences)]}
    return {"fit": {k: fit[k] for k in ("steps", "best_step", "kept_whitening_start", "transfer_strength")},
            "edits": edits}


def _pairs_seen(pairs, fitted: set[str]) -> int:
    """How many STS pairs have a sentence the flow was fitted on."""
    return sum(a in fitted or b in fitted for a, b in zip(pairs.first, pairs.second))


def _nearest_owner(x: torch.Tensor, corpus: torch.Tensor, owner: list[str]) -> list[str]:
    normalize = torch.nn.functional.normalize
    similarity = normalize(x.double(), dim=1) @ normalize(corpus.double(), dim=1).T
    return [owner[i] for i in similarity.argmax(1).tolist()]


def _print(fit: dict[str, Any], shown: dict[str, Any], emotions: dict[str, Any]) -> None:
    kept = "the whitening start (the Gaussian: no step improved on it)" if fit["kept_whitening_start"] else \
        f"step {fit['best_step']} of {fit['steps']}"
    print(f"early stopping kept {kept}")
    print(f"nearest sentences of held-out negative reviews, before and after alpha = {NEIGHBOUR_ALPHA}:")
    for item in shown["neighbours"]:
        print(f"\n  {item['sentence']}\n    before: {item['before'][0]}\n    after:  {item['after'][0]}")
    for target, edit in emotions["edits"].items():
        print(f"\nneutral -> {target} (strength {edit['strength']:g}): nearest real comment is {target} for "
              f"{edit['nearest_target_rate']:.0%} of edits ({edit['unedited_nearest_target_rate']:.0%} unedited)")
        for item in edit["neighbours"]:
            print(f"  {item['comment']}\n    before: {item['before']}\n    after:  {item['after']}")
