"""Route patterns: how settings name the routes a per-route rule applies to.

Patterns are deliberately simple so that a reader can check them, never regular
expressions:

* `/login`          exactly that path;
* `/users/{id}`     one non-empty path segment in place of `{id}`;
* `/api/*`          every path under `/api/` (not `/api` itself, nor `/apiary`);
* `*`               every path.

A pattern may start with methods: `POST /login`, `GET,HEAD /feed/*`. A rule for
`GET` also covers `HEAD`, which every framework serves with the GET handler. The
request's method is matched in upper case: some servers pass it as sent (uvicorn's
h11 protocol) and some frameworks upper-case it before dispatching (Django, Quart),
so `post /login` runs the POST handler, and must meet the POST rule (a rule keyed
on the exact spelling would let a lower-case method skip it).

Patterns match `scope["path"]`, the decoded path the application's router dispatches
on, exactly as it is: no case folding, no slash merging, no dot-segment removal. A
rule for `/admin` therefore applies to the very requests the router sends to the
`/admin` endpoint; a request for `/Admin` or `//admin` is another path, and is
matched by whatever rule covers that path.

The most specific match wins: an exact path, then the pattern with the most literal
segments, then the longest prefix, then `*`. Tables are compiled once, at
construction; a lookup is a dictionary probe plus a short scan, and its answer is
remembered (the table never changes, so a remembered answer is the answer) in a
memo bounded in entries and in the length of the paths it keeps, so a spray of
distinct or long paths costs a rescan, never memory.

A WebSocket handshake is an HTTP GET (RFC 6455 section 4.1), so a rule written for
`GET /ws` is meant for the socket at `/ws` too, though a `websocket` scope has no
method and layers look it up under `WEBSOCKET`. `RouteTable.for_websocket_handshake`
builds, once, the table a handshake is looked up in: the patterns naming `GET` count
as if they named `WEBSOCKET`, a `WEBSOCKET` pattern winning a tie. Each layer decides
how the rule found there combines with the one found under `WEBSOCKET` in the table
itself (the authorization and rate-limit layers apply both).

Reference: RFC 6455 section 4.1 (the opening handshake is a GET)
https://www.rfc-editor.org/rfc/rfc6455#section-4.1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

T = TypeVar("T")

# The lookup memo: at most this many (method, path) answers, for a method and path
# at most this long together; about 512 x 256 characters, a few hundred KiB at worst. A site has far
# fewer routes; a spray of distinct paths empties it (the lookups are still right).
_MEMO_ENTRIES: Final = 512
_MEMO_MAX_PATH: Final = 256
_MISSING: Final = object()

_HTTP_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "WEBSOCKET"}
)


@dataclass(frozen=True, slots=True)
class RoutePattern:
    """A parsed pattern. `methods` is empty when the pattern applies to every method."""

    text: str
    methods: frozenset[str]
    kind: str  # "exact", "param", "prefix" or "any"
    path: str
    segments: tuple[str | None, ...] = ()  # for "param": literal or None for `{name}`

    @property
    def path_text(self) -> str:
        """The pattern's path, as written after its methods (`*`, `/a`, `/a/*`, `/a/{id}`)."""
        if self.kind == "any":
            return "*"
        return self.path + "*" if self.kind == "prefix" else self.path

    def matches_method(self, method: str) -> bool:
        # HEAD is GET without the body (RFC 9110 section 9.3.2): frameworks run the GET
        # handler for it, so a rule for GET must hold for HEAD too.
        return (
            not self.methods
            or method in self.methods
            or (method == "HEAD" and "GET" in self.methods)
        )

    def matches(self, method: str, path: str) -> bool:
        if not self.matches_method(method):
            return False
        if self.kind == "any":
            return True
        if self.kind == "exact":
            return path == self.path
        if self.kind == "prefix":
            return path.startswith(self.path)
        parts = path.split("/")
        if len(parts) != len(self.segments):
            return False
        return all(
            part == literal if literal is not None else bool(part)
            for part, literal in zip(parts, self.segments, strict=True)
        )


def parse_route_pattern(text: str) -> RoutePattern:
    """Parse one pattern, raising ValueError with the rule it breaks."""
    spec = text.strip()
    methods: frozenset[str] = frozenset()
    if " " in spec:
        method_part, spec = spec.split(None, 1)
        methods = frozenset(m.strip().upper() for m in method_part.split(",") if m.strip())
        unknown = methods - _HTTP_METHODS
        if unknown:
            raise ValueError(f"route pattern {text!r}: unknown method {sorted(unknown)[0]!r}")
    if spec == "*":
        return RoutePattern(text, methods, "any", "")
    if not spec.startswith("/"):
        raise ValueError(f"route pattern {text!r}: a path must start with '/'")
    if any(c in spec for c in "?#\\") or any(ord(c) < 0x21 for c in spec):
        raise ValueError(f"route pattern {text!r}: no query, fragment, backslash or spaces")
    if spec.endswith("/*"):
        prefix = spec[:-1]
        if "*" in prefix or "{" in prefix:
            raise ValueError(f"route pattern {text!r}: '*' only as the last segment")
        return RoutePattern(text, methods, "prefix", prefix)
    if "*" in spec:
        raise ValueError(f"route pattern {text!r}: '*' only as a whole last segment ('/a/*')")
    if "{" not in spec:
        return RoutePattern(text, methods, "exact", spec)
    segments: list[str | None] = []
    for part in spec.split("/"):
        if part.startswith("{") and part.endswith("}") and len(part) > 2:
            segments.append(None)
        elif "{" in part or "}" in part:
            raise ValueError(f"route pattern {text!r}: a parameter must be a whole segment")
        else:
            segments.append(part)
    return RoutePattern(text, methods, "param", spec, tuple(segments))


def _specificity(pattern: RoutePattern) -> tuple[int, int, int]:
    rank = {"exact": 3, "param": 2, "prefix": 1, "any": 0}[pattern.kind]
    literal = sum(1 for s in pattern.segments if s is not None) if pattern.kind == "param" else 0
    # Patterns naming methods beat the same path for every method.
    return (rank, literal or len(pattern.path), 1 if pattern.methods else 0)


def _literal_prefix(pattern: RoutePattern) -> str:
    """What every path `pattern` matches starts with (for any method)."""
    if pattern.kind == "param":  # the literal segments before the first parameter
        literals = pattern.segments[: pattern.segments.index(None)]
        return "/".join(segment or "" for segment in literals) + "/"
    return pattern.path  # exact: the path itself; prefix: it ends in "/"; any: ""


class RouteTable(Generic[T]):
    """Maps route patterns to values; `lookup` returns the most specific match."""

    __slots__ = ("_exact", "_memo", "_ordered", "path_prefixes", "patterns")

    def __init__(self, rules: Mapping[str, T] | None = None) -> None:
        parsed = [(parse_route_pattern(text), value) for text, value in (rules or {}).items()]
        parsed.sort(key=lambda item: _specificity(item[0]), reverse=True)
        self.patterns: tuple[tuple[RoutePattern, T], ...] = tuple(parsed)
        # Exact, method-less paths are the common case: one dictionary probe.
        self._exact: dict[str, T] = {
            p.path: v for p, v in parsed if p.kind == "exact" and not p.methods
        }
        self._ordered = tuple(
            (p, v) for p, v in parsed if not (p.kind == "exact" and not p.methods)
        )
        self._memo: dict[tuple[str, str], T | None] = {}
        self.path_prefixes: tuple[str, ...] = tuple(
            dict.fromkeys(_literal_prefix(p) for p, _ in parsed)
        )
        """Every path a pattern matches starts with one of these (a path that starts
        with none, `path.startswith(table.path_prefixes)` False, has no match: one C
        call, no lookup); a prefix does not promise a match."""

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def for_websocket_handshake(self) -> RouteTable[T]:
        """The table a WebSocket handshake is looked up in under `WEBSOCKET` (module
        docstring): this table's patterns naming `WEBSOCKET` or no method as they are,
        and those naming `GET` (the handshake's method) as if they named `WEBSOCKET`,
        with the same value objects (a caller may compare them by identity). Patterns
        naming `WEBSOCKET` go in first: the sort is stable, so they win a tie of
        specificity; and a `GET` pattern on the same path as one is left out, being
        the same pattern that loses the tie. Other methods (`HEAD` included) cannot
        match a handshake and are left out.

        Built once, at construction: an http request never looks at it. When the
        handshake's rule is a pattern naming `WEBSOCKET` or no method, it is the rule
        that `lookup("WEBSOCKET", path)` finds in the table it was built from (the same
        object); when it has none, that table has none either."""
        naming_websocket: dict[str, T] = {}
        naming_get: dict[str, T] = {}
        for pattern, value in self.patterns:  # most specific first, ties as written
            if not pattern.methods:
                naming_websocket.setdefault(pattern.text, value)
            elif "WEBSOCKET" in pattern.methods:
                naming_websocket.setdefault(f"WEBSOCKET {pattern.path_text}", value)
            elif "GET" in pattern.methods:
                naming_get.setdefault(f"WEBSOCKET {pattern.path_text}", value)
        for text, value in naming_get.items():
            naming_websocket.setdefault(text, value)
        return RouteTable(naming_websocket)

    def lookup(self, method: str, path: str) -> T | None:
        memo = self._memo
        key = (method, path)
        found = memo.get(key, _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[return-value]  # a T | None stored by this method
        value = self._find(method, path)
        if len(path) + len(method) <= _MEMO_MAX_PATH:
            if len(memo) >= _MEMO_ENTRIES:
                memo.clear()
            memo[key] = value
        return value

    def _find(self, method: str, path: str) -> T | None:
        method = method.upper()  # the method the framework dispatches on (module docstring)
        for pattern, value in self._ordered:
            if pattern.kind == "exact" and pattern.path == path and pattern.matches_method(method):
                return value
        if path in self._exact:
            return self._exact[path]
        for pattern, value in self._ordered:
            if pattern.kind != "exact" and pattern.matches(method, path):
                return value
        return None
