"""`RouteTable.path_prefixes`: every path a pattern matches starts with one of them,
so a path that starts with none has no match and its lookup can be skipped (the
policy layer skips it for unlisted paths)."""

from __future__ import annotations

import pytest

from bastion.routes import RouteTable

RULE_SETS = [
    pytest.param({"/admin": 1, "/admin/*": 2, "/public": 3}, id="routes-prefixes-exact-and-prefix"),
    pytest.param({"GET /api": 1, "POST,PUT /api/items": 2}, id="routes-prefixes-methods"),
    pytest.param(
        {"/users/{id}": 1, "POST /items/{id}/tags/{tag}": 2, "/{page}": 3},
        id="routes-prefixes-params",
    ),
    pytest.param({"*": 1, "/login": 2}, id="routes-prefixes-any"),
    pytest.param({}, id="routes-prefixes-empty"),
]
# The policy layer's path tricks, near misses of each rule, and legitimate paths.
PATHS = [
    "",
    "/",
    "/admin",
    "/admin/",
    "/admin/x",
    "//admin",
    "/ADMIN",
    "/Admin",
    "/admin/../admin",
    "/%61dmin",
    "/adminx",
    "/api",
    "/api/",
    "/apiary",
    "/api/items",
    "/API",
    "/users",
    "/users/",
    "/users/42",
    "/users/42/x",
    "//users/42",
    "/items/1/tags/a",
    "/items//tags/a",
    "/public",
    "/login",
    "/x",
    "x",
]
METHODS = ["GET", "HEAD", "POST", "PUT", "WEBSOCKET"]


@pytest.mark.parametrize("rules", RULE_SETS)
def test_a_path_outside_the_prefixes_has_no_match(rules: dict[str, int]) -> None:
    table = RouteTable(rules)
    for path in PATHS:
        covered = path.startswith(table.path_prefixes)
        for method in METHODS:
            if not covered:
                assert table.lookup(method, path) is None, (method, path)
            for pattern, _ in table.patterns:
                if pattern.matches(method, path):
                    assert covered, (pattern.text, method, path)


@pytest.mark.parametrize(
    ("rules", "prefixes"),
    [
        pytest.param({"/a": 1, "GET /a": 2}, ("/a",), id="routes-prefixes-one-per-path"),
        pytest.param({"/api/*": 1}, ("/api/",), id="routes-prefixes-prefix-keeps-its-slash"),
        pytest.param({"/u/{id}/x": 1}, ("/u/",), id="routes-prefixes-param-literal-head"),
        pytest.param({"/{id}": 1}, ("/",), id="routes-prefixes-param-first"),
        pytest.param({"*": 1}, ("",), id="routes-prefixes-any-covers-all"),
        pytest.param({}, (), id="routes-prefixes-none"),
    ],
)
def test_prefixes(rules: dict[str, int], prefixes: tuple[str, ...]) -> None:
    assert RouteTable(rules).path_prefixes == prefixes
