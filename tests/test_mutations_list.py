"""``make mutate`` plants each bug of tools/mutate.py by replacing one snippet: the snippet
must still be in its file, once, and the tests named for it must exist, or a refactor
silently turns the mutation into a no-op."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("tools_mutate", ROOT / "tools" / "mutate.py")
mutate = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mutate  # dataclasses look their module up
spec.loader.exec_module(mutate)


@pytest.mark.parametrize("mutation", mutate.MUTATIONS, ids=lambda m: m.name)
def test_every_planted_bug_still_has_its_snippet_and_tests(mutation):
    assert (ROOT / mutation.file).read_text().count(mutation.original) == 1, f"{mutation.file} lost the snippet"
    assert mutation.original != mutation.mutated
    for test in mutation.tests:
        assert (ROOT / test.split("::")[0]).exists(), test
