from __future__ import annotations

from tests.support.secret_watch import find_leaks


def test_find_leaks_names_the_secret_and_the_record() -> None:
    leaks = find_leaks(["ok", "token=s3cr3t-value here"], ["s3cr3t-value", "absent"])
    assert leaks == [("s3cr3t...", "token=s3cr3t-value here")]


def test_no_leaks() -> None:
    assert find_leaks(["nothing to see"], ["s3cr3t-value", ""]) == []
