"""`flowkit text demo` on a fresh machine: the embedded sample, no data given."""

import json

from flowkit.cli import main


def test_demo_fits_evaluates_and_steers_the_embedded_sample(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["text", "demo", "--out", str(out), "--minutes", "0.15"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.splitlines()[-1])
    assert summary["sts_pairs"] == 500 and 80 < summary["sts_raw"] < 92 and summary["sts_pairs_fitted_on"] == 0
    # the edit against no edit at all (a bare threshold held with none: the unedited rate is 0.24)
    assert summary["flow_flip_rate"] > summary["unedited_flip_rate"] + 0.15 and 0.9 < summary["steer_mean_cosine"] < 1
    assert isinstance(summary["kept_step"], int) and "early stopping kept" in printed
    assert "before:" in printed and "after:" in printed
    saved = json.loads((out / "summary.json").read_text())
    assert saved["summary"] == summary and len(saved["neighbours"]) == 4
    direction = set(saved["neighbours"][0]["before"] + saved["neighbours"][0]["after"])
    from flowkit_text.data import demo_corpus
    from flowkit_text.run import SteeringSplit

    corpus = demo_corpus()
    split = SteeringSplit.of(corpus["positive"], corpus["negative"])
    assert not direction & set(split.direction_positive + split.direction_negative)  # never the direction's own
    for emotion in ("joy", "anger", "sadness"):  # the transfer lands among real comments of the emotion
        assert summary[f"neutral_to_{emotion}_nearest_rate"] > summary[f"neutral_unedited_{emotion}_nearest_rate"] + 0.1
        assert len(saved["emotions"]["edits"][emotion]["neighbours"]) == 3
    assert (out / "run" / "checkpoint" / "config.json").exists() and (out / "run" / "fit.json").exists()
    assert json.loads((out / "emotions" / "checkpoint" / "config.json").read_text())["model"]["flow"]["labels"] == [
        "neutral", "joy", "anger", "sadness"]
    assert main(["text", "demo", "--out", str(out), "--minutes", "0.05"]) == 2  # never overwrites silently
    assert main(["text", "demo", "--out", str(out), "--minutes", "0.05", "--overwrite"]) == 0
