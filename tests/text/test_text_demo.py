"""`flowkit text demo` on a fresh machine: the embedded sample, no data given."""

import json

from flowkit.cli import main


def test_demo_fits_evaluates_and_steers_the_embedded_sample(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["text", "demo", "--out", str(out), "--minutes", "0.15"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.splitlines()[-1])
    assert summary["sts_pairs"] == 500 and 80 < summary["sts_raw"] < 92
    assert summary["flow_flip_rate"] > 0.2 and 0.9 < summary["steer_mean_cosine"] < 1
    assert "before:" in printed and "after:" in printed
    saved = json.loads((out / "summary.json").read_text())
    assert saved["summary"] == summary and len(saved["neighbours"]) == 4
    assert (out / "run" / "checkpoint" / "config.json").exists() and (out / "run" / "fit.json").exists()
    assert main(["text", "demo", "--out", str(out), "--minutes", "0.05"]) == 2  # never overwrites silently
    assert main(["text", "demo", "--out", str(out), "--minutes", "0.05", "--overwrite"]) == 0
