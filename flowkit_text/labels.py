"""Labelled sentences for a conditional text flow: ``NAME=FILE`` specifications.

``flowkit text fit --label positive=pos.txt --label negative=neg.txt`` gives each sentence
of ``pos.txt`` the label ``positive``; a name may be given several files. A sentence that
two labels claim is ambiguous: it is left out of training and counted in ``fit.json``. A
label file without a sentence, a spec without ``=`` and fewer than two labels are named
errors.

Example:
    >>> parse_label_spec("joy=comments/joy.txt")
    ('joy', 'comments/joy.txt')
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from flowkit.errors import DataError

from .data import read_sentences

__all__ = ["LabelledSentences", "parse_label_spec", "read_labelled"]


def parse_label_spec(spec: str) -> tuple[str, str]:
    """``"NAME=FILE"`` as ``(NAME, FILE)``."""
    name, sep, path = spec.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise DataError(f"a label is given as NAME=FILE (e.g. positive=pos.txt), not {spec!r}")
    return name.strip(), path.strip()


@dataclass
class LabelledSentences:
    """Sentences with their label names, in the order read, each sentence once."""

    names: list[str]
    sentences: list[str]
    labels: list[str]
    ambiguous: int = 0

    def of(self, name: str) -> list[str]:
        """The sentences labelled ``name``."""
        return [s for s, label in zip(self.sentences, self.labels) if label == name]


def read_labelled(specs: list[tuple[str, str | os.PathLike]]) -> LabelledSentences:
    """Read ``(name, file)`` pairs; names keep their first-seen order."""
    names = list(dict.fromkeys(name for name, _ in specs))
    if len(names) < 2:
        raise DataError(f"a labelled fit needs at least two labels, got {names or 'none'}")
    claimed: dict[str, str | None] = {}
    for name, path in specs:
        try:
            sentences = read_sentences(path)
        except DataError as error:  # name the label too: "holds no sentences" alone hides which one
            raise DataError(f"label {name!r}: {error}") from None
        for sentence in sentences:
            previous = claimed.setdefault(sentence, name)
            if previous != name:
                claimed[sentence] = None  # claimed by two labels
    kept = {s: label for s, label in claimed.items() if label is not None}
    return LabelledSentences(names, list(kept), list(kept.values()), ambiguous=len(claimed) - len(kept))
