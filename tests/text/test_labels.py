"""Labelled text flows on real Yelp sentences: `fit --label`, `steer --to`, transfer round
trips, the calibrated strength, and one-line errors."""

import json

import numpy as np
import pytest
import torch

import flowkit as fk
from flowkit.cli import main
from tests.conftest import require_data

FIT_STEPS = 150


@pytest.fixture(scope="module")
def yelp(tmp_path_factory) -> dict:
    """600 negative and 600 positive Yelp dev sentences as label files, the next 200 of each
    as held-out sentences, and the shared rewrite pairs."""
    from flowkit_text.data import read_rewrites, read_sentences

    folder = require_data("yelp")
    files = tmp_path_factory.mktemp("yelp")
    neg, pos = read_sentences(folder / "sentiment.dev.0"), read_sentences(folder / "sentiment.dev.1")
    (files / "neg.txt").write_text("\n".join(neg[:600]) + "\n")
    (files / "pos.txt").write_text("\n".join(pos[:600]) + "\n")
    return {"neg": files / "neg.txt", "pos": files / "pos.txt", "held_out_neg": neg[600:800],
            "held_out_pos": pos[600:800], "rewrites": read_rewrites(folder / "reference.0")}


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory, yelp) -> tuple:
    from flowkit_text.run import load, train

    out = tmp_path_factory.mktemp("labelled") / "run"
    report = train(None, out, steps=FIT_STEPS, progress=False,
                      labels=[("negative", str(yelp["neg"])), ("positive", str(yelp["pos"]))])
    return out, report, load(out)


def test_a_labelled_fit_saves_its_labels_and_the_strengths_it_calibrated(labelled_run):
    from flowkit_text.transfer import STRENGTHS

    out, report, model = labelled_run
    assert model.flow.labels == ["negative", "positive"] and report["labels"] == ["negative", "positive"]
    assert set(report["transfer_strength"]) == {"flow", "conditional Gaussian", "raw"}
    for way in report["transfer_strength"].values():
        assert set(way) == {"negative->positive", "positive->negative"} and set(way.values()) <= set(STRENGTHS)
    saved = json.loads((out / "fit.json").read_text())
    assert saved["transfer_strength"]["flow"]["negative->positive"] == model.strength("negative", "positive")
    assert np.isfinite(report["labelled_held_out_nll"]) and report["labelled_train_sentences"]["positive"] > 400


def test_the_flow_tells_the_labels_of_held_out_sentences_apart(labelled_run, yelp):
    model = labelled_run[2]
    x = model.encode_sentences(yelp["held_out_neg"] + yelp["held_out_pos"])
    truth = ["negative"] * 200 + ["positive"] * 200
    accuracy = np.mean([a == b for a, b in zip(model.classify(x), truth)])
    # log p(x | label) from the labels, judged on unseen sentences: chance is 0.5 (a flow that
    # ignored its label context would sit there); measured 0.69 after 150 steps on 1,080 sentences
    assert accuracy > 0.62


def test_transfer_is_an_exact_round_trip_under_one_label_and_moves_under_another(labelled_run, yelp):
    from flowkit_text.transfer import LabelProbe

    model = labelled_run[2]
    x = model.encode_sentences(yelp["held_out_neg"][:100])
    negative, positive = model.flow.label_context(["negative"]), model.flow.label_context(["positive"])
    same = fk.transfer(model.flow, x, negative, negative)
    assert (same - x).abs().max() < 1e-4
    moved = fk.transfer(model.flow, x, negative, positive)
    assert (fk.transfer(model.flow, moved, positive, negative) - x).abs().max() < 1e-4
    assert (moved - x).norm(dim=1).min() > 1e-3  # every sentence moved
    probe = LabelProbe(model.encode_sentences(yelp["held_out_neg"][100:] + yelp["held_out_pos"][100:]),
                       ["negative"] * 100 + ["positive"] * 100)
    edited = model.transfer(x, "positive", "negative")  # the calibrated strength
    assert probe.rate(edited, "positive") > probe.rate(x, "positive") + 0.3


def test_fit_and_steer_to_through_the_cli(labelled_run, yelp, tmp_path, capsys):
    sentences = yelp["held_out_neg"][:6] + yelp["held_out_pos"][:6]
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n")
    run, model = labelled_run[0], labelled_run[2]
    out = tmp_path / "to.npy"
    assert main(["text", "steer", "--checkpoint", str(run), "--input", str(tmp_path / "in.txt"), "--to", "positive",
                 "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    edited = np.load(out)
    assert edited.shape == (12, 384) and np.allclose(np.linalg.norm(edited, axis=1), 1, atol=1e-5)
    assert summary["from"] == "the flow's classification" and sum(summary["sources"].values()) == 12
    x = model.encode_sentences(sentences).numpy()
    kept = [i for i, s in enumerate(model.classify(torch.from_numpy(x))) if s == "positive"]
    np.testing.assert_allclose(edited[kept], x[kept], atol=1e-6)  # already positive: left as they are
    assert main(["text", "steer", "--checkpoint", str(run), "--input", str(tmp_path / "in.txt"), "--to", "positive",
                 "--from", "negative", "--strength", "0", "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), x, atol=1e-4)  # strength 0: the round trip


def test_resuming_with_other_labels_is_refused(labelled_run, yelp, capsys):
    run = labelled_run[0]
    assert main(["text", "fit", "--label", f"bad={yelp['neg']}", "--label", f"good={yelp['pos']}", "--out", str(run),
                 "--steps", str(FIT_STEPS + 1), "--resume"]) == 2
    assert "fitted with labels ['negative', 'positive']" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["steer", "--checkpoint", "{run}", "--input", "{neg}", "--to", "joy", "--out", "{tmp}/s.npy"],
     "unknown label 'joy'; this flow knows negative, positive"),
    (["steer", "--checkpoint", "{plain}", "--input", "{neg}", "--to", "positive", "--out", "{tmp}/s.npy"],
     "fitted without labels"),
    (["steer", "--checkpoint", "{run}", "--input", "{neg}", "--to", "positive", "--alpha", "1", "--out", "{tmp}/s.npy"],
     "not both"),
    (["steer", "--checkpoint", "{run}", "--input", "{neg}", "--from", "negative", "--out", "{tmp}/s.npy"],
     "--from and --strength need --to NAME"),
    (["fit", "--label", "negative={neg}", "--label", "positive={empty}", "--out", "{tmp}/r"],
     "label 'positive':"),
    (["fit", "--label", "negative={neg}", "--out", "{tmp}/r"], "at least two labels"),
    (["fit", "--label", "{neg}", "--label", "positive={pos}", "--out", "{tmp}/r"], "NAME=FILE"),
    (["fit", "--out", "{tmp}/r"], "fit needs sentences"),
])
def test_label_errors_are_one_line_and_exit_2(labelled_run, text_run, yelp, tmp_path, capsys, args, message):
    (tmp_path / "empty.txt").write_text("\n\n")
    values = {"run": labelled_run[0], "plain": text_run[0], "neg": yelp["neg"], "pos": yelp["pos"],
              "empty": tmp_path / "empty.txt", "tmp": tmp_path}
    assert main(["text", *(a.format(**values) for a in args)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowkit: error:") and message in lines[0], lines
