"""The ``Example:`` of every module and public docstring runs as a doctest (with ``torch``
and ``flowkit`` in scope, as in zuko); examples marked ``+SKIP`` need a model download or data."""

import doctest
import importlib
import pkgutil

import pytest
import torch

import flowkit

PACKAGES = ["flowkit", "flowkit_image", "flowkit_audio", "flowkit_text"]


def modules() -> list[str]:
    names = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages(root.__path__, f"{package}.")]
    return names


@pytest.mark.parametrize("name", modules())
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs={"torch": torch, "flowkit": flowkit, **vars(module)}):
        torch.manual_seed(0)
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing example(s) in {name} (run with -s to see them)"
