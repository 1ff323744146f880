"""Fitting, STS and steering on real sentences with the real encoder."""

import json

import pytest
import torch

from flowkit.errors import CheckpointError, DataError, FlowkitError
from flowkit_text.run import SteeringSplit, evaluate, evaluate_steering, load, split_held_out, steer, train


def test_fit_beats_the_full_covariance_gaussian_on_held_out_sentences(text_run):
    out, report = text_run
    assert report["held_out_nll"] < report["gaussian_nll"], report
    assert report["train_sentences"] > 10000 and report["held_out_sentences"] > 400
    assert json.loads((out / "fit.json").read_text()) == report


def test_held_out_split_depends_only_on_the_text():
    sentences = [f"sentence number {i}" for i in range(400)]
    train, validation, test = split_held_out(sentences)
    again = split_held_out(sentences[::-1])
    assert set(validation) == set(again[1]) and set(test) == set(again[2])
    assert not (set(train) & set(validation)) | (set(train) & set(test)) | (set(validation) & set(test))
    assert len(train) + len(validation) + len(test) == 400 and 5 < len(validation) < 40 and 5 < len(test) < 40


def test_early_stopping_keeps_the_best_validation_weights(text_run, text_files):
    from flowkit_text.data import read_training_sentences

    out, report = text_run
    assert report["best_step"] is not None and report["best_step"] % 50 == 0
    import json as _json
    log = [_json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = {r["step"]: r["eval_nll"] for r in log if "eval_nll" in r}
    assert min(evaluated.values()) == pytest.approx(report["validation_nll"])
    assert evaluated[report["best_step"]] == pytest.approx(report["validation_nll"])
    if report["best_step"] < report["steps"]:
        assert evaluated[report["steps"]] > report["validation_nll"]
    sentences = read_training_sentences([text_files["pos"], text_files["neg"], text_files["sts"]])
    model = load(out)
    validation = model.encode_sentences(split_held_out(sentences)[1])
    assert model.held_out_nll(validation) == pytest.approx(report["validation_nll"], abs=1e-5)  # the saved weights


def test_checkpoint_embeds_in_three_spaces_and_round_trips(text_run, rt_polarity):
    model = load(text_run[0])
    x = model.encode_sentences(rt_polarity[1][:64])
    assert model.to_space(x, "raw") is x
    white, latent = model.to_space(x, "whitened"), model.to_space(x, "latent")
    assert white.shape == latent.shape == (64, 384)
    with torch.no_grad():
        back = model.flow.decode(latent)
    assert (back - x).abs().max() < 5e-4


def test_sts_in_three_spaces(text_run, sts_dev):
    result = evaluate(load(text_run[0]), sts_dev)
    assert result["pairs"] == 1500
    assert 86.0 < result["raw"] < 87.5  # all-MiniLM-L6-v2 on STS-B dev
    assert 70 < result["whitened"] < result["raw"] and 70 < result["flow"] < result["raw"]


def test_steering_raises_the_independent_probe_on_held_out_negatives(text_run, rt_polarity):
    model = load(text_run[0])
    split = SteeringSplit.of(*rt_polarity)
    assert not set(split.test_negative) & set(split.direction_negative + split.probe_negative)
    rows = evaluate_steering(model, split, [0.5, 1.0])
    for row in rows:
        assert row["flow_flip_rate"] > row["unedited_flip_rate"] + 0.2, row
        assert abs(row["raw_mean_cosine"] - row["mean_cosine"]) < 1e-4
    assert rows[1]["flow_flip_rate"] > rows[0]["flow_flip_rate"]
    assert rows[1]["mean_cosine"] < rows[0]["mean_cosine"] < 1


def test_steer_shows_neighbours_before_and_after(text_run, rt_polarity):
    pos, neg = rt_polarity
    model = load(text_run[0])
    edited, summary = steer(model, pos[:300], neg[:300], neg[900:905], 3.0, corpus=pos[300:600] + neg[300:600], show=5)
    assert edited.shape == (5, 384)
    torch.testing.assert_close(edited.norm(dim=1), torch.ones(5))
    assert len(summary["neighbours"]) == 5 and 0.8 < summary["mean_cosine"] < 1
    after_positive = sum(s in pos for item in summary["neighbours"] for s in item["after"])
    before_positive = sum(s in pos for item in summary["neighbours"] for s in item["before"])
    assert after_positive > before_positive


def test_resume_continues_the_run_and_a_new_fit_refuses_it(tmp_path, text_files):
    files = [str(text_files["pos"]), str(text_files["neg"])]
    train(files, tmp_path, "bert-flow", steps=4, progress=False)
    with pytest.raises(FlowkitError, match="already holds a checkpoint"):
        train(files, tmp_path, "bert-flow", steps=4, progress=False)
    report = train(files, tmp_path, steps=7, resume=True, progress=False)
    assert report["steps"] == 7


def test_too_few_sentences_and_missing_checkpoints_are_refused(tmp_path):
    few = tmp_path / "few.txt"
    few.write_text("one sentence\nanother one\n")
    with pytest.raises(DataError, match="at least"):
        train([str(few)], tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError):
        load(tmp_path / "nothing-here")


def test_early_stopping_restores_the_best_weights_when_training_overfits(tmp_path, rt_polarity):
    from flowkit_text.data import read_sentences

    pos, neg = rt_polarity
    data = tmp_path / "few.txt"
    data.write_text("\n".join(pos[:400] + neg[:400]) + "\n")
    report = train([str(data)], tmp_path / "run", steps=150, progress=False)
    assert report["best_step"] < report["steps"] == 150  # 720 sentences in 384 dims: overfits within 150 steps
    model = load(tmp_path / "run")
    validation = model.encode_sentences(split_held_out(read_sentences(data))[1])
    assert model.held_out_nll(validation) == pytest.approx(report["validation_nll"], abs=1e-5)


def test_a_fit_stopped_and_resumed_without_its_arguments_ends_as_the_uninterrupted_one(tmp_path, rt_polarity,
                                                                                         capsys):
    """Issue 30, items 5 and 6: the early-stopping state (best score, step and weights) and
    the last weights come back with --resume, and --resume reuses the saved data and seed."""
    from flowkit.cli import main

    pos, neg = rt_polarity
    data = tmp_path / "few.txt"
    data.write_text("\n".join(pos[:400] + neg[:400]) + "\n")
    fit = ["text", "fit", "--data", str(data), "--seed", "3"]
    assert main([*fit, "--out", str(tmp_path / "whole"), "--steps", "150"]) == 0
    assert main([*fit, "--out", str(tmp_path / "parts"), "--steps", "100"]) == 0
    capsys.readouterr()
    assert main(["text", "fit", "--out", str(tmp_path / "parts"), "--resume", "--steps", "150"]) == 0
    note = capsys.readouterr().err
    assert f"resumed at step 100 with the saved seed 3 and data ['{data}']; changed: steps 100 -> 150" in note
    whole, parts = (json.loads((tmp_path / name / "fit.json").read_text()) for name in ("whole", "parts"))
    assert whole["best_step"] < 100  # the best step was found before the interruption
    for key in ("steps", "best_step", "validation_nll", "held_out_nll", "train_nll"):
        assert parts[key] == pytest.approx(whole[key], abs=1e-5), key
    assert main(["text", "fit", "--out", str(tmp_path / "parts"), "--resume"]) == 0  # finished: nothing to train
    again = json.loads((tmp_path / "parts" / "fit.json").read_text())
    assert (again["steps"], again["best_step"]) == (150, parts["best_step"])
    assert again["held_out_nll"] == pytest.approx(parts["held_out_nll"], abs=1e-6)
