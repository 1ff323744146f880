"""The sentence encoder: the real offline MiniLM, batching, and the on-disk cache."""

import sqlite3

import numpy as np
import pytest

from flowkit.errors import DataError, FlowkitError
from flowkit_text.encoder import SentenceEncoder


def test_real_encoder_gives_unit_norm_384_d_embeddings_in_order(text_encoder, rt_polarity):
    sentences = rt_polarity[0][:5]
    x = text_encoder.encode(sentences + sentences[:2])
    assert x.shape == (7, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(x[5:], x[:2])
    similar = text_encoder.encode(["a fine , moving film .", "a moving and fine film .", "the tax forms are due ."])
    assert similar[0] @ similar[1] > similar[0] @ similar[2] + 0.3


def test_cached_sentences_are_not_encoded_again(tmp_path, monkeypatch, rt_polarity):
    monkeypatch.setenv("FLOWKIT_CACHE", str(tmp_path))
    encoder = SentenceEncoder(progress=False)
    first = encoder.encode(rt_polarity[1][:20])
    fresh = SentenceEncoder(progress=False)
    calls = []
    original = fresh.model.encode
    monkeypatch.setattr(fresh.model, "encode", lambda s, **k: calls.append(list(s)) or original(s, **k))
    again = fresh.encode(rt_polarity[1][:20] + ["a sentence never seen before ."])
    np.testing.assert_array_equal(again[:20], first)
    assert calls == [["a sentence never seen before ."]]


def test_the_cache_is_keyed_by_model(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWKIT_CACHE", str(tmp_path))
    encoder = SentenceEncoder(progress=False)
    encoder.encode(["one sentence ."])
    with sqlite3.connect(tmp_path / "embeddings.sqlite") as db:
        db.execute("UPDATE embeddings SET model = 'another-model'")
    calls = []
    original = encoder.model.encode
    monkeypatch.setattr(encoder.model, "encode", lambda s, **k: calls.append(list(s)) or original(s, **k))
    encoder.encode(["one sentence ."])
    assert calls == [["one sentence ."]]


def test_a_corrupt_cache_only_costs_a_re_encode(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWKIT_CACHE", str(tmp_path))
    (tmp_path / "embeddings.sqlite").write_bytes(b"this is not a database" * 100)
    x = SentenceEncoder(progress=False).encode(["still works ."])
    assert x.shape == (1, 384)


def test_bad_sentences_and_models_are_named(tmp_path):
    encoder = SentenceEncoder(progress=False)
    with pytest.raises(DataError, match="sentence 1 is empty"):
        encoder.encode(["fine", "   "])
    with pytest.raises(DataError, match="no sentences"):
        encoder.encode([])
    with pytest.raises(FlowkitError, match="does not exist"):
        SentenceEncoder(str(tmp_path / "no" / "model"))


def test_a_cached_vector_of_the_wrong_length_is_encoded_again(tmp_path, monkeypatch):
    """Issue 30, item 14: one damaged cache entry made stacking the embeddings an internal error."""
    monkeypatch.setenv("FLOWKIT_CACHE", str(tmp_path))
    sentences = ["the first sentence .", "the second sentence ."]
    before = SentenceEncoder(progress=False).encode(sentences)
    with sqlite3.connect(tmp_path / "embeddings.sqlite") as db:
        db.execute("UPDATE embeddings SET vector = ? WHERE rowid = 1", (np.ones(5, np.float32).tobytes(),))
    np.testing.assert_allclose(SentenceEncoder(progress=False).encode(sentences), before, atol=1e-6)


def test_an_unknown_encoder_name_is_one_line_without_network_retries(tmp_path):
    """Issue 30, item 16: an unknown name printed 33 lines of network retries."""
    import os
    import subprocess
    import sys

    (tmp_path / "s.txt").write_text("".join(f"sentence number {i} .\n" for i in range(100)))
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    done = subprocess.run([sys.executable, "-m", "flowkit.cli", "text", "fit", "--encoder", "no-such-encoder",
                           "--data", str(tmp_path / "s.txt"), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "cannot load the sentence encoder 'no-such-encoder'" in lines[0] and "flowkit never downloads" in lines[0]
