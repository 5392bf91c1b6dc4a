"""Fixtures for every test."""
import pytest


@pytest.fixture(autouse=True)
def _own_digest_cache(tmp_path_factory, monkeypatch):
    """Checkpoint digests are remembered in a folder of the test session, not the user's cache."""
    from clipae.core import weights
    monkeypatch.setattr(weights, "DIGEST_CACHE", tmp_path_factory.getbasetemp() / "digests.json")
