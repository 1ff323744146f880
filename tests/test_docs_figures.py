"""Every figure in the docs has a JSON behind it (the rule is written in benchmarks/README.md).

- A ratio written ``N.NNx`` in the README or docs/ is a ratio kept in a JSON under
  benchmarks/results/ (a number under a key naming a ratio: ``*_ratio``, ``*speedup``,
  ``*_vs_*``, growths; its value or its inverse, at the precision quoted), unless its
  sentence says it was "not kept as JSON" (history, trials), is a target, or shows the
  arithmetic that derives it (" = ").
- Every ``results/...json`` path the docs name exists.
- Every JSON under benchmarks/results/ carries a ``provenance`` naming a commit of this
  history, except the ones benchmarks/README.md lists as made before provenance existed.
- No JSON is older than the code it measures: its run had no uncommitted changes and its
  script has not changed since the commit in its provenance, except the ones
  benchmarks/README.md lists as stale (each with its reason, until it is rerun).
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KEPT = [p for p in RESULTS.rglob("*.json") if not p.stem.endswith(("_quick", "_tiny"))]


RATIO_KEY = re.compile(r"ratio|speedup|_vs_|\bvs\b|growth|/|times|faster|factor", re.I)
EXEMPT = ("not kept as JSON", "target", " = ")  # history and trials, goals, arithmetic shown in the sentence


def numbers(value, key: str = "") -> list[float]:
    """The ratios a JSON holds: numbers under keys that name a ratio (speed-ups, growths, ``_vs_``)."""
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in numbers(v, k)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v, key)]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and RATIO_KEY.search(key):
        return [float(value)]
    return []


JSON_NUMBERS = {n for path in KEPT for n in numbers(json.loads(path.read_text()))}


def backed(text: str) -> bool:
    value, decimals = float(text), len(text.split(".")[1])
    return any(round(n, decimals) == value or (n and round(1 / n, decimals) == value) for n in JSON_NUMBERS)


def sentence_at(text: str, start: int) -> str:
    begin = max(text.rfind(". ", 0, start), text.rfind("\n\n", 0, start), text.rfind("\n- ", 0, start))
    end = min(i for i in (text.find(". ", start), text.find("\n\n", start), len(text)) if i >= 0)
    return text[begin:end]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_ratio_in_the_docs_is_in_a_json(doc):
    text = doc.read_text()
    unbacked = [f"line {text[:m.start()].count(chr(10)) + 1}: {m.group(1)}x"
                for m in re.finditer(r"(?<![\w.\-])(\d+\.\d+)x\b", text)
                if not backed(m.group(1)) and not any(e in sentence_at(text, m.start()) for e in EXEMPT)]
    assert not unbacked, f"{doc.name}: figures with no JSON behind them: {unbacked}"


def test_the_checker_catches_a_figure_with_no_json():
    # time_to_quality.json's K = 4 step ratio, the top of a range the docs once quoted for bf16 steps with no
    # JSON, and a ratio no benchmark has measured
    assert backed("0.942") and not backed("1.23") and not backed("9.99")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_results_path_the_docs_name_exists(doc):
    named = set(re.findall(r"results/((?:[\w-]+/)*[\w-]+\.json)", doc.read_text()))
    missing = [n for n in named if not (RESULTS / n).exists() and not n.endswith(("_quick.json", "_tiny.json"))]
    assert not missing, f"{doc.name} names results that do not exist: {missing}"


def test_every_kept_json_has_provenance_or_is_listed_as_older():
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    listed = set(re.findall(r"^- `([\w/]+\.json)` \(before provenance\)", readme, flags=re.M))
    without = {p.relative_to(RESULTS).as_posix() for p in KEPT if "provenance" not in json.loads(p.read_text())}
    assert without == listed, (f"JSON without provenance: {sorted(without - listed)}; "
                               f"listed but has it: {sorted(listed - without)}")
    for path in KEPT:
        for commit in provenance_commits(json.loads(path.read_text())):
            known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, capture_output=True)
            assert known.returncode == 0, f"{path.name}: provenance commit {commit} is not in this history"


def provenance_commits(payload: dict) -> list[str]:
    """The commits a JSON was measured at: one, or several where merged pieces ran at different ones."""
    commit = payload.get("provenance", {}).get("commit")
    return commit if isinstance(commit, list) else [commit] if commit else []


def script_of(payload: dict) -> str | None:
    """The benchmark script that wrote a JSON, from the command in its provenance (or beside it)."""
    command = payload.get("provenance", {}).get("command") or payload.get("command") or ""
    found = re.search(r"benchmarks[./](\w+)", command)
    return found and f"benchmarks/{found.group(1)}.py"


def stale_reasons(payload: dict) -> list[str]:
    """Why a JSON is older than the code it measures: run from a tree with uncommitted
    changes, or its script changed after the commit in its provenance."""
    provenance = payload["provenance"]
    reasons = ["run with uncommitted changes (dirty)"] if provenance.get("dirty") else []
    script = script_of(payload)
    for commit in provenance_commits(payload):
        changed = subprocess.run(["git", "diff", "--quiet", commit, "HEAD", "--", script], cwd=ROOT)
        if changed.returncode:
            reasons.append(f"{script} changed after {commit[:7]}")
    return reasons


def test_no_kept_json_is_older_than_its_script_unless_listed():
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    listed = set(re.findall(r"^- `([\w/]+\.json)` \(stale: ", readme, flags=re.M))
    stale = {}
    for path in KEPT:
        payload = json.loads(path.read_text())
        if provenance_commits(payload):
            reasons = stale_reasons(payload)
            if reasons:
                stale[path.relative_to(RESULTS).as_posix()] = reasons
    assert set(stale) == listed, (f"stale JSON not listed in benchmarks/README.md (rerun them): "
                                  f"{ {k: v for k, v in stale.items() if k not in listed} }; "
                                  f"listed but fresh: {sorted(listed - set(stale))}")


def test_the_staleness_rule_catches_a_changed_script_and_a_dirty_tree():
    first = subprocess.run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=ROOT, capture_output=True,
                           text=True).stdout.split()[0]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    command = "python -m benchmarks.time_to_quality --part race"
    assert stale_reasons({"provenance": {"commit": first, "dirty": False, "command": command}})
    assert stale_reasons({"provenance": {"commit": head, "dirty": True, "command": command}})
    assert not stale_reasons({"provenance": {"commit": head, "dirty": False, "command": command}})
