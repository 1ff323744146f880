"""Every `flowkit text` command end to end on real sentences, and their one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from flowkit.cli import main


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_fit_takes_sentence_and_pair_files_and_resumes(tmp_path, text_files, capsys):
    out = tmp_path / "run"
    assert main(["text", "fit", "--data", str(text_files["pos"]), str(text_files["sts"]), "--out", str(out),
                 "--preset", "bert-flow", "--steps", "3"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert first["steps"] == 3 and first["train_sentences"] > 6000
    assert main(["text", "fit", "--data", str(text_files["pos"]), str(text_files["sts"]), "--out", str(out),
                 "--steps", "5", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["steps"] == 5


@pytest.mark.parametrize("space", ["raw", "whitened", "latent"])
def test_embed_writes_one_row_per_non_empty_line(text_run, text_encoder, tmp_path, rt_polarity, space, capsys):
    sentences = rt_polarity[0][:7]
    (tmp_path / "in.txt").write_text("\n".join(sentences[:3]) + "\n\n" + "\n".join(sentences[3:]) + "\n")
    out = tmp_path / "e.npy"
    assert main(["text", "embed", "--checkpoint", str(text_run[0]), "--input", str(tmp_path / "in.txt"),
                 "--space", space, "--out", str(out)]) == 0
    array = np.load(out)
    assert array.shape == (7, 384) and array.dtype == np.float32
    raw = text_encoder.encode(sentences)
    if space == "raw":
        np.testing.assert_array_equal(array, raw)
    else:
        assert np.abs(array - raw).max() > 0.5  # moved to another space
        assert abs(float(np.linalg.norm(array, axis=1).mean()) - np.sqrt(384)) < 12


def test_eval_sts_prints_one_json_object(text_run, text_data, capsys):
    assert main(["text", "eval-sts", "--checkpoint", str(text_run[0] / "checkpoint"),
                 "--data", str(text_data / "sts" / "SICK_trial.txt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(result) == {"raw", "whitened", "flow", "pairs"} and result["pairs"] == 500
    assert 70 < result["raw"] < 90 and 50 < result["flow"] < 90


def test_steer_writes_edits_and_neighbours(text_run, text_files, rt_polarity, tmp_path, capsys):
    pos, neg = rt_polarity
    (tmp_path / "in.txt").write_text("\n".join(neg[950:960]) + "\n")
    (tmp_path / "corpus.txt").write_text("\n".join(pos[500:700] + neg[500:700]) + "\n")
    out = tmp_path / "s.npy"
    assert main(["text", "steer", "--checkpoint", str(text_run[0]), "--positive", str(text_files["pos"]),
                 "--negative", str(text_files["neg"]), "--input", str(tmp_path / "in.txt"), "--alpha", "1.5",
                 "--out", str(out), "--neighbours", str(tmp_path / "corpus.txt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert np.load(out).shape == (10, 384)
    assert 0.8 < result["mean_cosine"] < 1 and len(result["neighbours"]) == 5
    assert all(len(item["before"]) == len(item["after"]) == 3 for item in result["neighbours"])


@pytest.mark.parametrize("args, message", [
    (["fit", "--data", "{tmp}/missing.txt", "--out", "{tmp}/r"], "does not exist"),
    (["fit", "--data", "{binary}", "--out", "{tmp}/r"], "not a text file"),
    (["fit", "--data", "{pos}", "--out", "{tmp}/r", "--preset", "huge"], "--preset: invalid choice"),
    (["fit", "--data", "{pos}", "--out", "{run}", "--steps", "1"], "already holds a checkpoint"),
    (["embed", "--checkpoint", "{tmp}/nothing", "--input", "{pos}", "--space", "latent", "--out", "{tmp}/e.npy"],
     "no checkpoint"),
    (["embed", "--checkpoint", "{run}", "--input", "{pos}", "--space", "polar", "--out", "{tmp}/e.npy"],
     "--space: invalid choice"),
    (["embed", "--checkpoint", "{run}", "--input", "{pos}", "--space", "raw", "--out", "{tmp}/e.txt"],
     "must name a .npy file"),
    (["eval-sts", "--checkpoint", "{run}", "--data", "{pos}"], "neither an STS Benchmark file"),
    (["steer", "--checkpoint", "{run}", "--positive", "{pos}", "--negative", "{neg}", "--input", "{pos}",
      "--alpha", "nan", "--out", "{tmp}/s.npy"], "--alpha: must be a finite number"),
])
def test_errors_are_one_line_and_exit_2(text_run, text_files, tmp_path, args, message):
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02")
    values = {"run": text_run[0], "pos": text_files["pos"], "neg": text_files["neg"], "tmp": tmp_path,
              "binary": tmp_path / "binary.txt"}
    done = subprocess.run([sys.executable, "-m", "flowkit.cli", "text", *(a.format(**values) for a in args)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowkit: error:") and message in lines[0], done.stderr


def test_a_missing_text_extra_is_named_and_other_plugins_still_work():
    probe = ("import sys; sys.modules['sentence_transformers'] = None; from flowkit.cli import main; "
             "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", probe, "text", "eval-sts", "--checkpoint", "x", "--data", "y"],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 2 and "the text commands need sentence-transformers" in done.stderr
    help_text = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True, text=True, env=_env(),
                               timeout=120).stdout
    assert "image" in help_text and "audio" in help_text and "text" in help_text


def test_a_full_disk_while_writing_embeddings_is_one_line_and_leaves_no_temporary_file(text_run, tmp_path,
                                                                                       rt_polarity):
    """Issue 30, item 11: `text embed` said "153600 requested and 62432 written" and left emb.npy.tmp.npy."""
    from tests.conftest import run_cli_with_file_size_limit

    (tmp_path / "in.txt").write_text("\n".join(rt_polarity[0][:100]) + "\n")
    done = run_cli_with_file_size_limit(["text", "embed", "--checkpoint", text_run[0], "--input", tmp_path / "in.txt",
                                         "--space", "raw", "--out", tmp_path / "out" / "emb.npy"], limit=60_000)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowkit: error: could not write"), done.stderr
    assert "153728 bytes" in lines[0] and "nothing was left half-written" in lines[0]
    assert list((tmp_path / "out").iterdir()) == []
