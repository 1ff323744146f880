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
4. fit time on this CPU.

    python benchmarks/text.py            # about 15 minutes (embeddings cached after the first run)
    python benchmarks/text.py --quick    # smoke run (the test suite)

Writes benchmarks/results/text.json (or _quick.json) and prints the tables.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, options, table, write  # noqa: E402
from flowkit_text.data import read_pairs, read_sentences, read_training_sentences  # noqa: E402
from flowkit_text.recipe import SteeringSplit, evaluate_steering, evaluate_sts, fit_text, load_text_model  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ALPHAS = [0.25, 0.5, 1.0, 2.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the script runs")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each preset")
    parser.add_argument("--presets", default="bert-flow,affine")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    limit = 300 if args.quick else None
    steps = 3 if args.quick else args.steps

    positive = read_sentences(DATA / "rt-polarity" / "pos.txt")[:limit]
    negative = read_sentences(DATA / "rt-polarity" / "neg.txt")[:limit]
    split = SteeringSplit.of(positive, negative)
    sts = {"STS-B dev": read_pairs(DATA / "sts" / "sts-dev.csv"), "SICK-R trial": read_pairs(DATA / "sts" / "SICK_trial.txt")}
    if args.quick:
        sts = {name: type(p)(p.first[:100], p.second[:100], p.scores[:100], p.name) for name, p in sts.items()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fit_files = [DATA / "sts" / "sts-train.csv", DATA / "sts" / "SICK_train.txt"]
        excluded = set(split.test_negative)
        reviews = [s for s in positive + negative if s not in excluded]
        (folder / "reviews.txt").write_text("\n".join(reviews) + "\n")
        sentences = read_training_sentences(fit_files)[:limit and 3 * limit] + reviews
        (folder / "fit.txt").write_text("\n".join(dict.fromkeys(sentences)) + "\n")
        fits, sts_rows, steering_rows = [], [], []
        for name in args.presets.split(","):
            started = time.perf_counter()
            report = fit_text([str(folder / "fit.txt")], folder / name, name, steps=steps, progress=False)
            seconds = time.perf_counter() - started
            model = load_text_model(folder / name)
            fits.append({"preset": name, "steps": report["steps"], "best_step": report["best_step"], "sentences": report["train_sentences"],
                         "held_out": report["held_out_sentences"], "gaussian_nll": round(report["gaussian_nll"], 4),
                         "flow_nll": round(report["held_out_nll"], 4), "fit_s": round(seconds, 1),
                         "parameters": sum(p.numel() for p in model.flow.parameters())})
            for label, pairs in sts.items():
                result = evaluate_sts(model, pairs)
                sts_rows.append({"preset": name, "data": label, "pairs": result["pairs"], "raw": round(result["raw"], 2),
                                 "whitened": round(result["whitened"], 2), "flow": round(result["flow"], 2)})
            for row in evaluate_steering(model, split, ALPHAS):
                steering_rows.append({"preset": name, **{k: round(v, 4) for k, v in row.items()}})
    print(table(fits, ["preset", "steps", "best_step", "sentences", "held_out", "gaussian_nll", "flow_nll", "fit_s", "parameters"]))
    print()
    print(table(sts_rows, ["preset", "data", "pairs", "raw", "whitened", "flow"]))
    print()
    print(table(steering_rows, ["preset", "alpha", "mean_cosine", "flow_flip_rate", "raw_flip_rate",
                                "unedited_flip_rate", "flow_positive_probability", "raw_positive_probability"]))
    payload = {"config": options(args),
               "data": {"fit": "STS-B train + SICK train + rt-polarity (test negatives excluded), unlabelled",
                        "steering": {k: len(v) for k, v in vars(split).items()}},
               "fit": fits, "sts": sts_rows, "steering": steering_rows}
    path = write("text_quick" if args.quick else "text", payload, args.results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
