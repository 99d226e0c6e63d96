"""One tiny mock sky and tiny model per session for the catalog tests that run inference."""

import pytest
from tinysky import TinySky, make_tiny_sky


@pytest.fixture(scope="session")
def tiny_sky(tmp_path_factory) -> TinySky:
    return make_tiny_sky(tmp_path_factory.mktemp("tiny_sky"))
