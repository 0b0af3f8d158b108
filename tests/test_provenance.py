"""A row's code version is the commit the run started at, marked -dirty when the checkout
changed before it finished."""

from __future__ import annotations

import pytest

from gdrq_bench.reporting import provenance


@pytest.mark.parametrize(
    "started, now, recorded",
    [
        ("abc123", "abc123", "abc123"),
        ("abc123", "def456", "abc123-dirty"),  # a commit or checkout during the run
        ("abc123", "abc123-dirty", "abc123-dirty"),  # an edit during the run
        ("abc123-dirty", "abc123", "abc123-dirty"),
        ("unknown", "unknown", "unknown"),
    ],
)
def test_the_code_version_is_the_start_commit_or_dirty(
    monkeypatch: pytest.MonkeyPatch, started: str, now: str, recorded: str
) -> None:
    monkeypatch.setattr(provenance, "git_sha", lambda: now)
    assert provenance.code_version_since(started) == recorded


def test_the_checkout_is_read_afresh() -> None:
    """git_sha is not cached: a commit made during a run is seen at its end."""
    assert not hasattr(provenance.git_sha, "cache_info")
    assert provenance.git_sha() == provenance.git_sha()
