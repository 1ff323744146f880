"""Text data: sentence files, STS Benchmark and SICK pairs, and the embedded demo sample.

A sentence file has one sentence per line; blank lines are skipped (``embed`` and
``steer`` write one row per non-empty line, in order). Pair files are recognised by
their layout:

- STS Benchmark: tab separated ``genre, file, year, id, score (0-5), sentence1,
  sentence2[, licence fields]``, no header;
- SICK: tab separated with a header naming ``sentence_A``, ``sentence_B`` and
  ``relatedness_score`` (1-5).

Rewrite files (Li et al. 2018, ``reference.0`` / ``.1``) hold ``source<TAB>rewrite`` per line
(:func:`read_rewrites`); GoEmotions files hold ``text<TAB>label indices<TAB>id``
(:func:`read_emotions`, single-label comments only).

Unreadable files, undecodable bytes, rows with a missing sentence or a score that is not
a number in range get a :class:`~flowkit.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from flowkit.errors import DataError

__all__ = ["Pairs", "demo_corpus", "is_pair_file", "read_emotions", "read_pairs", "read_rewrites", "read_sentences",
           "read_training_sentences"]

SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score")


@dataclass
class Pairs:
    """Sentence pairs with a similarity score each."""

    first: list[str]
    second: list[str]
    scores: np.ndarray
    name: str = ""

    def __len__(self) -> int:
        return len(self.scores)

    def sentences(self) -> list[str]:
        """Both sentences of every pair, in file order."""
        return [s for pair in zip(self.first, self.second) for s in pair]


def _lines(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a text file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    if b"\x00" in data[:4096]:
        raise DataError(f"{path} is not a text file (it holds NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (byte {error.start})") from None
    return text.splitlines()


def read_sentences(path: str | os.PathLike) -> list[str]:
    """The non-empty lines of a sentence file, stripped, in order."""
    sentences = [line.strip() for line in _lines(path)]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise DataError(f"{path} holds no sentences")
    return sentences


def _score(value: str, path: str | os.PathLike, line: int, low: float, high: float) -> float:
    try:
        score = float(value)
    except ValueError:
        raise DataError(f"{path}, line {line}: the score {value!r} is not a number") from None
    if not (math.isfinite(score) and low <= score <= high):
        raise DataError(f"{path}, line {line}: the score {score} is outside {low}-{high}")
    return score


def is_pair_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like an STS Benchmark or SICK file (not a sentence file)."""
    lines = [line for line in _lines(path) if line.strip()][:2]
    if not lines:
        return False
    if all(c in lines[0].split("\t") for c in SICK_COLUMNS):
        return True
    fields = lines[0].split("\t")
    if len(fields) < 7:
        return False
    try:
        float(fields[4])
    except ValueError:
        return False
    return True


def read_pairs(path: str | os.PathLike) -> Pairs:
    """Read an STS Benchmark or SICK file."""
    lines = _lines(path)
    content = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not content:
        raise DataError(f"{path} holds no sentence pairs")
    header = content[0][1].split("\t")
    if all(c in header for c in SICK_COLUMNS):
        columns = [header.index(c) for c in SICK_COLUMNS]
        rows, low, high = content[1:], 1.0, 5.0
    elif is_pair_file(path):
        columns, rows, low, high = [5, 6, 4], content, 0.0, 5.0
    else:
        raise DataError(f"{path} is neither an STS Benchmark file (tab separated, score in the 5th column) "
                        f"nor a SICK file (a header with {', '.join(SICK_COLUMNS)})")
    first, second, scores = [], [], []
    for number, line in rows:
        fields = line.split("\t")
        if len(fields) <= max(columns):
            raise DataError(f"{path}, line {number}: expected at least {max(columns) + 1} tab-separated fields, "
                            f"got {len(fields)}")
        a, b = fields[columns[0]].strip(), fields[columns[1]].strip()
        if not a or not b:
            raise DataError(f"{path}, line {number}: a sentence of the pair is empty")
        first.append(a)
        second.append(b)
        scores.append(_score(fields[columns[2]], path, number, low, high))
    if not scores:
        raise DataError(f"{path} holds no sentence pairs")
    return Pairs(first, second, np.asarray(scores, dtype=np.float64), Path(path).name)


def read_rewrites(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``(sources, rewrites)`` of a ``source<TAB>rewrite`` file, in order."""
    sources, rewrites = [], []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != 2 or not all(fields):
            raise DataError(f"{path}, line {number}: expected a source and its rewrite, tab separated")
        sources.append(fields[0])
        rewrites.append(fields[1])
    if not sources:
        raise DataError(f"{path} holds no rewrite pairs")
    return sources, rewrites


def read_emotions(path: str | os.PathLike, names: list[str]) -> dict[str, list[str]]:
    """The comments of a GoEmotions file (``text<TAB>labels<TAB>id``, labels as comma-separated
    indices into ``names``) that carry exactly one label, grouped by label name."""
    groups: dict[str, list[str]] = {name: [] for name in names}
    for number, line in enumerate(_lines(path), start=1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or not fields[0].strip():
            raise DataError(f"{path}, line {number}: expected text<TAB>labels<TAB>id")
        try:
            labels = [int(v) for v in fields[1].split(",")]
        except ValueError:
            raise DataError(f"{path}, line {number}: labels must be comma-separated indices, "
                            f"not {fields[1]!r}") from None
        if any(not 0 <= v < len(names) for v in labels):
            raise DataError(f"{path}, line {number}: a label index is outside 0..{len(names) - 1}")
        if len(labels) == 1:
            groups[names[labels[0]]].append(fields[0].strip())
    return groups


def read_training_sentences(paths: list[str | os.PathLike]) -> list[str]:
    """Sentences to fit on: the lines of sentence files and both sentences of every pair
    of STS / SICK files, without duplicates, in first-seen order."""
    sentences: list[str] = []
    for path in paths:
        sentences += read_pairs(path).sentences() if is_pair_file(path) else read_sentences(path)
    return list(dict.fromkeys(sentences))


DEMO_EMOTIONS = ("neutral", "joy", "anger", "sadness")


def demo_corpus() -> dict[str, object]:
    """The embedded sample (see ``assets/README.md``): ``positive`` and ``negative``
    sentences (rt-polarity), ``sts`` (STS Benchmark dev pairs) and ``emotions`` (GoEmotions
    comments of neutral, joy, anger and sadness, by emotion)."""
    folder = resources.files("flowkit_text") / "assets"
    positive = [s for s in (folder / "rt-polarity-pos.txt").read_text("utf-8").splitlines() if s.strip()]
    negative = [s for s in (folder / "rt-polarity-neg.txt").read_text("utf-8").splitlines() if s.strip()]
    with resources.as_file(folder / "sts-dev-sample.csv") as sts:
        pairs = read_pairs(sts)
    emotions = {e: [c for c in (folder / f"goemotions-{e}.txt").read_text("utf-8").splitlines() if c.strip()]
                for e in DEMO_EMOTIONS}
    return {"positive": positive, "negative": negative, "sts": pairs, "emotions": emotions}
