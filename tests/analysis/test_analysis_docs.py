"""Every docstring example in forgetlab.analysis runs and prints what it claims."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "forgetlab.analysis",
    "forgetlab.analysis.activations",
    "forgetlab.analysis.cka",
    "forgetlab.analysis.fisher",
    "forgetlab.analysis.overlap",
    "forgetlab.analysis.subspace",
    "forgetlab.analysis.tables",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0


def test_every_public_function_has_an_example():
    import forgetlab.analysis as analysis

    for name in analysis.__all__:
        obj = getattr(analysis, name)
        if callable(obj) and not isinstance(obj, type) or name in ("LinearCKAAccumulator", "MinibatchCKA"):
            assert obj.__doc__ and ">>>" in obj.__doc__, name
