"""Text plug-in: held-out NLL, STS and steering of flows over all-MiniLM-L6-v2 embeddings.

Each preset (``bert-flow`` and the default) is fitted on the unlabelled sentences of
STS-B train, SICK train and rt-polarity (minus the test negatives), with whitening and a
full-covariance Gaussian fitted on the same sentences. Reported:

1. held-out NLL (nats/dim, a tenth of the sentences held out by hash): Gaussian vs flow;
2. STS: Spearman x100 of cosine on STS-B dev and SICK trial (SICK-R): raw, whitened, flow;
3. steering: a sentiment direction from half of the rt-polarity sentences left after the
   test negatives, a logistic-regression probe trained on the other half; the share of the
   test negatives the probe calls positive after the flow-latent edit, beside the raw-space
   mean-difference edit scaled to the same mean cosine;
4. fit time on this CPU;
5. sentiment transfer judged against human rewrites (Yelp, Li et al. 2018): a flow conditioned
   on the label, fitted on the 2,000 + 2,000 Yelp dev sentences, moves each source of the
   shared ``reference.0`` / ``.1`` to the other sentiment (encode under one label, decode
   under the other). transfer@1 (is the edit's nearest neighbour, among all sources and
   rewrites, its own rewrite?), the rate at which a sentiment probe fitted on other data
   (rt-polarity) assigns the target, and the mean cosine to the source; for the flow, the
   conditional Gaussian (the flow replaced by per-label Gaussians after whitening) and the
   raw-space mean-difference edit, each at the strength calibrated on labelled sentences
   (never on rewrites), at strength 1, and at the best strength on these very pairs (an
   oracle, the most a strength can give); the raw edit also at the flow's mean cosine;
   unedited. The part ``sentiment-unlabelled`` fits the same flow with the 24 k unlabelled
   sentences of STS-B train, SICK train and rt-polarity beside the labelled ones;
6. emotion transfer (GoEmotions, Ekman labels): a flow conditioned on neutral, joy, anger and
   sadness (single-label training comments), neutral dev comments moved to each emotion;
   judged by a probe fitted on the other half of the dev comments and by the label of the
   nearest real dev comment; the same rows.

STS pairs with a sentence the flow was fitted on are left out (counted in the JSON).

    python -m benchmarks.text            # about 25 minutes (embeddings cached after the first run)
    python -m benchmarks.text --quick    # smoke run (the test suite)

Writes benchmarks/results/text.json (or _quick.json) and prints the tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import RESULTS, options, table, write
from flowkit_text import run as text_run
from flowkit_text.data import read_emotions, read_pairs, read_rewrites, read_sentences, read_training_sentences
from flowkit_text.run import (
    SteeringSplit,
    evaluate_steering,
    label_editors,
    split_held_out,
)
from flowkit_text.steer import mean_cosine
from flowkit_text.transfer import LabelProbe, transfer_at_1

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ALPHAS = [0.25, 0.5, 1.0, 2.0]
ORACLE_STRENGTHS = [round(0.25 * i, 2) for i in range(1, 25)]  # 0.25 .. 6
EMOTIONS = ["neutral", "joy", "anger", "sadness"]
WAYS = ("flow", "conditional Gaussian", "raw")


def fit_labelled(folder: Path, name: str, groups: dict[str, list[str]], steps: int,
                 unlabelled: list[str] | None = None) -> tuple:
    """Fit a flow conditioned on ``groups`` (label -> sentences), beside ``unlabelled``
    sentence files if given; returns the model, its fit report and the three editors built
    from the training split text_run.train used."""
    specs = []
    for label, sentences in groups.items():
        path = folder / f"{name}-{label}.txt"
        path.write_text("\n".join(sentences) + "\n")
        specs.append((label, str(path)))
    report = text_run.train(unlabelled, folder / name, steps=steps, progress=False, labels=specs)
    model = text_run.load(folder / name)
    label_of = {s: label for label, sentences in groups.items() for s in sentences}
    train = [s for s in split_held_out(list(label_of))[0] if s in label_of]
    editors = label_editors(model, model.encode_sentences(train), [label_of[s] for s in train])
    return model, report, editors


def edit_rows(editors: dict, report: dict, x, source: str, target: str, score, oracle: bool = True) -> list[dict]:
    """Rows for each way of editing at its calibrated strength, at 1 and (with ground truth,
    ``oracle``) at the best strength by ``score``, the raw edit at the flow's mean cosine, and
    the unedited input; ``score(edited)`` gives the row's measures."""
    pair = f"{source}->{target}"
    rows = [{"method": "unedited", "strength": 0.0, **score(x)}]
    for way in WAYS:
        edit = editors[way]
        calibrated = report["transfer_strength"][way][pair]
        rows.append({"method": f"{way} (calibrated)", "strength": calibrated,
                     **score(edit(x, source, target, calibrated))})
        rows.append({"method": f"{way}, strength 1", "strength": 1.0, **score(edit(x, source, target, 1.0))})
        if oracle:
            by_strength = {a: score(edit(x, source, target, a)) for a in ORACLE_STRENGTHS}
            best = max(by_strength, key=lambda a: by_strength[a]["key"])
            rows.append({"method": f"{way} (oracle: best on these pairs)", "strength": best, **by_strength[best]})
    flow_cosine = next(r["mean_cosine"] for r in rows if r["method"] == "flow (calibrated)")
    raw, low, high = editors["raw"], 0.0, max(ORACLE_STRENGTHS)
    for _ in range(40):  # bisection: the raw strength whose mean cosine equals the flow's
        middle = (low + high) / 2
        low, high = (middle, high) if mean_cosine(x, raw(x, source, target, middle)) > flow_cosine else (low, middle)
    rows.append({"method": "raw at the flow's mean cosine", "strength": round(high, 3),
                 **score(raw(x, source, target, high))})
    for row in rows:
        row.pop("key")
    return rows


def unlabelled_corpus(folder: Path, limit: int | None) -> list[str]:
    """STS-B train, SICK train and rt-polarity sentences, unlabelled, as one file."""
    sentences = read_training_sentences([DATA / "sts" / "sts-train.csv", DATA / "sts" / "SICK_train.txt",
                                         DATA / "rt-polarity" / "pos.txt", DATA / "rt-polarity" / "neg.txt"])
    path = folder / "unlabelled.txt"
    path.write_text("\n".join(sentences[:limit]) + "\n")
    return [str(path)]


def sentiment_transfer(folder: Path, steps: int, quick: bool, with_unlabelled: bool) -> dict:
    yelp = DATA / "yelp"
    limit = 300 if quick else None
    groups = {"negative": read_sentences(yelp / "sentiment.dev.0")[:limit],
              "positive": read_sentences(yelp / "sentiment.dev.1")[:limit]}
    unlabelled = unlabelled_corpus(folder, limit) if with_unlabelled else None
    name = "yelp-with-unlabelled" if with_unlabelled else "yelp"
    model, report, editors = fit_labelled(folder, name, groups, steps, unlabelled)
    judge_pos = read_sentences(DATA / "rt-polarity" / "pos.txt")[:limit]
    judge_neg = read_sentences(DATA / "rt-polarity" / "neg.txt")[:limit]
    judge = LabelProbe(model.encode_sentences(judge_pos + judge_neg),
                       ["positive"] * len(judge_pos) + ["negative"] * len(judge_neg))
    directions = [("negative", "positive", read_rewrites(yelp / "reference.0")),
                  ("positive", "negative", read_rewrites(yelp / "reference.1"))]
    if quick:
        directions = [(s, t, (a[:40], b[:40])) for s, t, (a, b) in directions]
    sources = [s for _, _, (a, _) in directions for s in a]
    rewrites = [r for _, _, (_, b) in directions for r in b]
    pool = model.encode_sentences(sources + rewrites)
    rows, offset = [], 0
    for source, target, (a, b) in directions:
        x = model.encode_sentences(a)
        own = [len(sources) + offset + i for i in range(len(a))]
        offset += len(a)

        def score(edited, x=x, own=own, target=target):
            t1 = transfer_at_1(edited, own, pool)
            return {"key": t1, "transfer@1": round(t1, 4), "judge_target_rate": round(judge.rate(edited, target), 4),
                    "mean_cosine": round(mean_cosine(x, edited), 4)}

        rows += [{"direction": f"{source} -> {target}", "pairs": len(a), **row}
                 for row in edit_rows(editors, report, x, source, target, score)]
    human = [round(mean_cosine(model.encode_sentences(a), model.encode_sentences(b)), 4) for _, _, (a, b) in directions]
    return {"rows": rows, "unlabelled_sentences_fitted": bool(unlabelled),
            "fit": {k: report[k] for k in ("steps", "best_step", "kept_whitening_start", "train_sentences",
                                           "labelled_held_out_nll", "conditional_gaussian_nll",
                                           "transfer_strength", "labelled_train_sentences")},
            "human_rewrite_mean_cosine": dict(zip(["negative -> positive", "positive -> negative"], human)),
            "judge": "logistic regression on rt-polarity (movie reviews; not Yelp)"}


def emotion_transfer(folder: Path, steps: int, quick: bool) -> dict:
    names = (DATA / "goemotions" / "labels.txt").read_text().split()
    cap = 60 if quick else 3000
    train = read_emotions(DATA / "goemotions" / "ekman_train.tsv", names)
    groups = {e: train[e][:cap] for e in EMOTIONS}
    model, report, editors = fit_labelled(folder, "emotions", groups, steps)
    dev = read_emotions(DATA / "goemotions" / "ekman_dev.tsv", names)
    judge_half = {e: dev[e][0::2] for e in EMOTIONS}
    corpus = [c for e in EMOTIONS for c in judge_half[e]]
    corpus_labels = [e for e in EMOTIONS for _ in judge_half[e]]
    corpus_x = model.encode_sentences(corpus)
    judge = LabelProbe(corpus_x, corpus_labels)
    neutral = dev["neutral"][1::2][:40 if quick else 400]
    x = model.encode_sentences(neutral)
    rows = []
    for target in EMOTIONS[1:]:
        def score(edited, target=target):
            near = (torch.nn.functional.normalize(edited.double(), dim=1)
                    @ torch.nn.functional.normalize(corpus_x.double(), dim=1).T).argmax(1)
            rate = judge.rate(edited, target)
            return {"key": rate, "judge_target_rate": round(rate, 4),
                    "nearest_comment_target_rate": round(float(sum(corpus_labels[i] == target for i in near.tolist())
                                                               / len(near)), 4),
                    "mean_cosine": round(mean_cosine(x, edited), 4)}

        rows += [{"edit": f"neutral -> {target}", "comments": len(neutral), **row}
                 for row in edit_rows(editors, report, x, "neutral", target, score, oracle=False)]
    return {"rows": rows, "fit": {k: report[k] for k in ("steps", "best_step", "kept_whitening_start",
                                                         "labelled_train_sentences", "transfer_strength")},
            "judge": "logistic regression on the even-numbered GoEmotions dev comments; the nearest-comment rate "
                     "uses the same comments; the edited neutral comments are odd-numbered dev comments"}


def unseen_pairs(pairs, fitted: set[str]):
    """The pairs neither of whose sentences the flow was fitted on, and how many were left out."""
    keep = [i for i, (a, b) in enumerate(zip(pairs.first, pairs.second)) if a not in fitted and b not in fitted]
    kept = type(pairs)([pairs.first[i] for i in keep], [pairs.second[i] for i in keep], pairs.scores[keep], pairs.name)
    return kept, len(pairs) - len(keep)


def density_sts_steering(folder: Path, args, steps: int, limit: int | None) -> dict:
    positive = read_sentences(DATA / "rt-polarity" / "pos.txt")[:limit]
    negative = read_sentences(DATA / "rt-polarity" / "neg.txt")[:limit]
    split = SteeringSplit.of(positive, negative)
    sts = {"STS-B dev": read_pairs(DATA / "sts" / "sts-dev.csv"),
           "SICK-R trial": read_pairs(DATA / "sts" / "SICK_trial.txt")}
    if args.quick:
        sts = {name: type(p)(p.first[:100], p.second[:100], p.scores[:100], p.name) for name, p in sts.items()}
    fit_files = [DATA / "sts" / "sts-train.csv", DATA / "sts" / "SICK_train.txt"]
    excluded = set(split.test_negative)
    reviews = [s for s in positive + negative if s not in excluded]
    sentences = list(dict.fromkeys(read_training_sentences(fit_files)[:limit and 3 * limit] + reviews))
    (folder / "fit.txt").write_text("\n".join(sentences) + "\n")
    fitted = set(sentences)
    fits, sts_rows, steering_rows = [], [], []
    for name in args.presets.split(","):
        started = time.perf_counter()
        report = text_run.train([str(folder / "fit.txt")], folder / name, name, steps=steps, progress=False)
        seconds = time.perf_counter() - started
        model = text_run.load(folder / name)
        fits.append({"preset": name, "steps": report["steps"], "best_step": report["best_step"],
                     "sentences": report["train_sentences"], "held_out": report["held_out_sentences"],
                     "gaussian_nll": round(report["gaussian_nll"], 4), "flow_nll": round(report["held_out_nll"], 4),
                     "fit_s": round(seconds, 1), "parameters": sum(p.numel() for p in model.flow.parameters())})
        for label, pairs in sts.items():
            unseen, left_out = unseen_pairs(pairs, fitted)
            result = text_run.evaluate(model, unseen)
            sts_rows.append({"preset": name, "data": label, "pairs": result["pairs"], "left_out_seen": left_out,
                             "raw": round(result["raw"], 2), "whitened": round(result["whitened"], 2),
                             "flow": round(result["flow"], 2)})
        for row in evaluate_steering(model, split, ALPHAS):
            steering_rows.append({"preset": name, **{k: round(v, 4) for k, v in row.items()}})
    print(table(fits, ["preset", "steps", "best_step", "sentences", "held_out", "gaussian_nll", "flow_nll", "fit_s",
                       "parameters"]))
    print()
    print(table(sts_rows, ["preset", "data", "pairs", "left_out_seen", "raw", "whitened", "flow"]))
    print()
    print(table(steering_rows, ["preset", "alpha", "mean_cosine", "flow_flip_rate", "raw_flip_rate",
                                "unedited_flip_rate", "flow_positive_probability", "raw_positive_probability"]))
    return {"data": {"fit": "STS-B train + SICK train + rt-polarity (test negatives excluded), unlabelled",
                     "steering": {k: len(v) for k, v in vars(split).items()},
                     "sts": "pairs with a sentence in the fitting data left out (left_out_seen)"},
            "fit": fits, "sts": sts_rows, "steering": steering_rows}


PARTS = ("density", "sentiment", "sentiment-unlabelled", "emotions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the script runs")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each preset")
    parser.add_argument("--transfer-steps", type=int, default=1500, help="training steps of the labelled flows")
    parser.add_argument("--presets", default="bert-flow,affine")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    limit = 300 if args.quick else None
    steps = 3 if args.quick else args.steps
    transfer_steps = 3 if args.quick else args.transfer_steps
    payload: dict = {"config": options(args)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "density" in parts:
            payload.update(density_sts_steering(folder, args, steps, limit))
        for part, key, unlabelled in (("sentiment", "sentiment_transfer", False),
                                      ("sentiment-unlabelled", "sentiment_transfer_unlabelled", True)):
            if part in parts:
                payload[key] = sentiment_transfer(folder, transfer_steps, args.quick, unlabelled)
                print(f"\n{part}:")
                print(table(payload[key]["rows"], ["direction", "method", "strength", "transfer@1",
                                                   "judge_target_rate", "mean_cosine"]))
        if "emotions" in parts:
            payload["emotion_transfer"] = emotion_transfer(folder, transfer_steps, args.quick)
            print()
            print(table(payload["emotion_transfer"]["rows"], ["edit", "method", "strength", "judge_target_rate",
                                                              "nearest_comment_target_rate", "mean_cosine"]))
    path = write("text_quick" if args.quick else "text", payload, args.results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
