"""Build flowkit_text/assets/: the small attributed sample `flowkit text demo` embeds.

    python tools/make_text_demo.py [../shared/data]

1,000 positive and 1,000 negative rt-polarity sentences, 500 STS Benchmark dev pairs, and
500 single-label GoEmotions training comments of each of neutral, joy, anger and sadness,
drawn with fixed seeds.
"""

import random
import sys
from pathlib import Path

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
ASSETS = Path(__file__).resolve().parents[1] / "flowkit_text" / "assets"
EMOTIONS = ("neutral", "joy", "anger", "sadness")


def sample(lines: list[str], k: int, seed: int) -> list[str]:
    return random.Random(seed).sample(lines, k)


def main() -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    for name, seed in (("pos", 1), ("neg", 2)):
        text = (DATA / "rt-polarity" / f"{name}.txt").read_text("utf-8")
        lines = [line for line in text.splitlines() if line.strip()]
        (ASSETS / f"rt-polarity-{name}.txt").write_text("\n".join(sample(lines, 1000, seed)) + "\n", "utf-8")
    pairs = [line for line in (DATA / "sts" / "sts-dev.csv").read_text("utf-8").splitlines() if line.strip()]
    (ASSETS / "sts-dev-sample.csv").write_text("\n".join(sample(pairs, 500, 3)) + "\n", "utf-8")
    names = (DATA / "goemotions" / "labels.txt").read_text("utf-8").split()
    rows = [line.split("\t") for line in (DATA / "goemotions" / "ekman_train.tsv").read_text("utf-8").splitlines()]
    for seed, emotion in enumerate(EMOTIONS, start=4):
        single = [r[0].strip() for r in rows if len(r) > 1 and r[1] == str(names.index(emotion)) and r[0].strip()]
        unique = list(dict.fromkeys(c.replace("\t", " ") for c in single))
        (ASSETS / f"goemotions-{emotion}.txt").write_text("\n".join(sample(unique, 500, seed)) + "\n", "utf-8")


if __name__ == "__main__":
    main()
