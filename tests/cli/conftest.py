import pytest


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    """One data cache for the command tests: the data is prepared once and shared."""
    return str(tmp_path_factory.mktemp("data"))
