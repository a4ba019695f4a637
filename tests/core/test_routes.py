from __future__ import annotations

import pytest

from bastion.routes import RouteTable, parse_route_pattern

TABLE_RULES = {
    "*": "any",
    "/api/*": "api",
    "/api/admin/*": "admin",
    "/users/{id}": "user",
    "/users/me": "me",
    "POST /login": "login-post",
    "/login": "login",
    "GET,HEAD /feed/*": "feed-read",
}
TABLE = RouteTable(TABLE_RULES)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/", "any"),
        ("GET", "/api/x", "api"),
        ("GET", "/api", "any"),
        ("GET", "/apiary", "any"),
        ("GET", "/api/admin/users", "admin"),
        ("GET", "/users/42", "user"),
        ("GET", "/users/me", "me"),
        ("GET", "/users/", "any"),
        ("GET", "/users/42/x", "any"),
        ("POST", "/login", "login-post"),
        ("GET", "/login", "login"),
        ("GET", "/feed/1", "feed-read"),
        ("HEAD", "/login", "login"),
        ("POST", "/feed/1", "any"),
        # Paths are matched exactly as the router sees them.
        ("GET", "/API/x", "any"),
        ("GET", "//api/x", "any"),
        ("GET", "/Login", "any"),
    ],
)
def test_most_specific_rule_wins(method: str, path: str, expected: str) -> None:
    assert TABLE.lookup(method, path) == expected


def test_no_match_is_none() -> None:
    assert RouteTable({"/a": 1}).lookup("GET", "/b") is None
    assert not RouteTable({})


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("api/*", id="route-no-leading-slash"),
        pytest.param("/a*", id="route-partial-wildcard"),
        pytest.param("/a/*/b", id="route-inner-wildcard"),
        pytest.param("/a?x=1", id="route-query"),
        pytest.param("/a#f", id="route-fragment"),
        pytest.param("/a\\b", id="route-backslash"),
        pytest.param("/u/{id", id="route-broken-param"),
        pytest.param("/u/x{id}", id="route-partial-param"),
        pytest.param("FETCH /a", id="route-unknown-method"),
        pytest.param("/a\tb", id="route-control-char"),
    ],
)
def test_invalid_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="route pattern"):
        parse_route_pattern(pattern)


def test_a_get_rule_covers_head() -> None:
    table = RouteTable({"GET /admin": "admin-only", "*": "open"})
    assert table.lookup("GET", "/admin") == "admin-only"
    assert table.lookup("HEAD", "/admin") == "admin-only"
    assert table.lookup("POST", "/admin") == "open"


# A server may pass the method as the client spelt it (uvicorn's h11 protocol), and
# Django and Quart upper-case it before dispatching: `post /login` runs the POST
# handler, so it must meet the POST rule (a login guard or body limit keyed on the
# exact spelling would be skipped).
@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        pytest.param("post", "/login", "login-post", id="route-method-lowercase-post"),
        pytest.param("Post", "/login", "login-post", id="route-method-mixed-case-post"),
        pytest.param("head", "/feed/1", "feed-read", id="route-method-lowercase-head"),
        pytest.param("gEt", "/feed/2", "feed-read", id="route-method-mixed-case-get"),
        pytest.param("POST", "/login", "login-post", id="route-method-exact-ok"),
    ],
)
def test_method_is_matched_in_upper_case(method: str, path: str, expected: str) -> None:
    table = RouteTable(dict(TABLE_RULES))
    assert table.lookup(method, path) == expected
    assert table.lookup(method, path) == expected  # and so is the remembered answer
