import sys

import pytest

from raycat import background


def test_in_background_hands_back_the_value_or_the_error():
    assert background.in_background(sum, [1, 2, 3]).result(timeout=10) == 6
    with pytest.raises(ZeroDivisionError):
        background.in_background(divmod, 1, 0).result(timeout=10)


def test_a_background_import_is_started_once_and_waited_for(monkeypatch):
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    background.import_in_background("colorsys")
    started = background._IMPORTS.get("colorsys")
    background.import_in_background("colorsys")  # already under way: not started again
    assert background._IMPORTS.get("colorsys") is started
    background.imported("colorsys")
    assert "colorsys" in sys.modules and "colorsys" not in background._IMPORTS
    background.import_in_background("colorsys")  # imported: nothing to start
    assert "colorsys" not in background._IMPORTS


def test_a_failed_background_import_raises_where_it_is_waited_for():
    background.import_in_background("raycat_no_such_module")
    with pytest.raises(ModuleNotFoundError):
        background.imported("raycat_no_such_module")
