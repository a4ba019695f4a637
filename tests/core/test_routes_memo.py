"""`RouteTable.lookup` remembers its answers: the memo never changes an answer, and a
spray of distinct or long paths cannot grow it past its bound."""

from __future__ import annotations

import pytest

from bastion import routes
from bastion.routes import RouteTable

RULES = {"/login": "exact", "POST /items/{id}": "param", "/api/*": "prefix", "*": "any"}


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        pytest.param("GET", "/login", "exact", id="legit-exact"),
        pytest.param("POST", "/items/7", "param", id="legit-param"),
        pytest.param("GET", "/items/7", "any", id="routes-memo-method-kept-apart"),
        pytest.param("GET", "/api/x", "prefix", id="legit-prefix"),
        pytest.param("GET", "/Login", "any", id="routes-memo-case-kept-apart"),
    ],
)
def test_remembered_answer_is_the_answer(method: str, path: str, expected: str) -> None:
    table = RouteTable(RULES)
    for _ in range(3):  # the first lookup fills the memo, the next ones read it
        assert table.lookup(method, path) == expected
    assert table.lookup(method, path) == RouteTable(RULES)._find(method, path)


def test_memo_is_bounded_under_a_path_spray() -> None:
    table = RouteTable(RULES)
    for n in range(routes._MEMO_ENTRIES * 3):
        assert table.lookup("GET", f"/spray/{n}") == "any"
    assert len(table._memo) <= routes._MEMO_ENTRIES
    long_path = "/api/" + "a" * routes._MEMO_MAX_PATH
    assert table.lookup("GET", long_path) == "prefix"
    assert ("GET", long_path) not in table._memo  # long paths are looked up, not kept
    assert table.lookup("GET", "/login") == "exact"
