"""``flowkit text demo``: the whole text workflow on the embedded sample, on a fresh machine.

Fits whitening and the default flow on the sample's sentences (embedded with the offline
all-MiniLM-L6-v2), evaluates STS on its STS-B dev pairs, measures steering of held-out
negative reviews (probe flip rate of the flow-latent edit against the raw-space edit at
equal cosine) and prints the nearest labelled sample sentences (the held-out ones
excluded) of a few negatives before and after the edit. Writes ``summary.json`` and the run (checkpoint, ``fit.json``, metrics) to ``out``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowkit.train import prepare_run_folder

from .data import demo_corpus
from .recipe import SteeringSplit, evaluate_steering, evaluate_sts, fit_text, load_text_model, steer

__all__ = ["run"]

ALPHAS = [0.5, 1.0, 2.0]
SHOW_ALPHA = 1.0
NEIGHBOUR_ALPHA = 2.0


def run(out: str | Path = "out/text-demo", minutes: float = 1.0, overwrite: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Run the demo; returns ``{"summary": ..., "steering": ..., "neighbours": ...}``."""
    out = Path(out)
    prepare_run_folder(out / "run", resume=False, overwrite=overwrite)
    corpus = demo_corpus()
    fit = fit_text("demo", out / "run", minutes=minutes, progress=progress)
    model = load_text_model(out / "run")
    sts = evaluate_sts(model, corpus["sts"])
    split = SteeringSplit.of(corpus["positive"], corpus["negative"])
    steering = evaluate_steering(model, split, ALPHAS)
    labelled = split.direction_positive + split.direction_negative + split.probe_positive + split.probe_negative
    _, shown = steer(model, split.direction_positive, split.direction_negative, split.test_negative[:4], NEIGHBOUR_ALPHA,
                     corpus=labelled, show=4, k=2)
    at = next(r for r in steering if r["alpha"] == SHOW_ALPHA)
    summary = {"out": str(out), "steps": fit["steps"], "held_out_nll": fit["held_out_nll"],
               "gaussian_nll": fit["gaussian_nll"], "sts_raw": sts["raw"], "sts_whitened": sts["whitened"],
               "sts_flow": sts["flow"], "sts_pairs": sts["pairs"], "steer_alpha": SHOW_ALPHA,
               "steer_mean_cosine": at["mean_cosine"], "flow_flip_rate": at["flow_flip_rate"],
               "raw_flip_rate_at_equal_cosine": at["raw_flip_rate"]}
    result = {"summary": summary, "fit": fit, "sts": sts, "steering": steering, "neighbours": shown["neighbours"]}
    (out / "summary.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    print(f"nearest labelled sentences of held-out negative reviews, before and after alpha = {NEIGHBOUR_ALPHA}:")
    for item in shown["neighbours"]:
        print(f"\n  {item['sentence']}\n    before: {item['before'][0]}\n    after:  {item['after'][0]}")
    return result
