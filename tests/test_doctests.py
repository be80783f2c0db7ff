"""Every docstring example in lib/ runs, so an example that lies fails (River runs its examples
the same way)."""

import doctest
import importlib
import pkgutil

import pytest

import lib

MODULES = sorted(m.name for m in pkgutil.walk_packages(lib.__path__, "lib."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"
