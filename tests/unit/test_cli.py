"""The command-line runner's pure parts."""

import pytest

from mage_project.cli import dependency_order


def test_blocks_run_in_dependency_order():
    assert dependency_order({"load": ["validate"], "validate": ["fetch"], "fetch": []}) == [
        "fetch", "validate", "load"]
    with pytest.raises(ValueError, match="cycle"):
        dependency_order({"a": ["b"], "b": ["a"]})
