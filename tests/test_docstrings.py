"""The public classes document their arguments (an ``Args:`` section naming each one) and
the layers cite their paper (``References:``), as zuko does."""

import inspect
import re

import pytest

import flowkit
import flowkit.nn
import flowkit.train

PUBLIC = [(module, name) for module in (flowkit, flowkit.nn) for name in module.__all__
          if inspect.isclass(getattr(module, name)) and not issubclass(getattr(module, name), Exception)]


def arguments(cls) -> list[str]:
    if not cls.__init__.__module__.startswith("flowkit"):
        return []  # torch's nn.Module.__init__: the class takes no arguments of its own
    parameters = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD]


@pytest.mark.parametrize("module, name", PUBLIC, ids=[f"{m.__name__}.{n}" for m, n in PUBLIC])
def test_public_classes_document_every_argument(module, name):
    cls = getattr(module, name)
    doc = inspect.getdoc(cls) or ""
    names = arguments(cls)
    if not names:
        return
    assert re.search(r"^(Args|Arguments|Attributes):", doc, flags=re.M), f"{name} has no Args: section"
    missing = [n for n in names if not re.search(rf"\b{n}\b", doc)]
    assert not missing, f"{name}'s docstring does not name {missing}"


LAYERS = [name for name in flowkit.layers.__all__ if inspect.isclass(getattr(flowkit.layers, name))
          and issubclass(getattr(flowkit.layers, name), flowkit.Bijector)]


@pytest.mark.parametrize("name", LAYERS)
def test_layers_cite_their_paper(name):
    doc = inspect.getdoc(getattr(flowkit.layers, name)) or ""
    assert "References:" in doc and "arxiv.org" in doc, f"{name} cites no paper"
