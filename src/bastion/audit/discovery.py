"""Which routes to probe, and how to log in: routes from OpenAPI, routing or the user.

Threat: an audit that probes only `/` reports a clean bill of health for an app
whose forms, APIs and sockets it never touched.
Defence: the routes come from every source available, merged:

* the OpenAPI document (`/openapi.json`, when the target serves one), which also
  gives each body-taking operation a sample body built from its schema, so a
  FastAPI form route answers its handler rather than 422. The document comes
  from the target, which may be hostile: a node of the wrong type counts as
  absent, nesting too deep for the parser means no document, and a path that
  does not start with "/" (`@internal.example/`, which appended to the target's
  authority would name another host) is skipped. A path no request can carry as
  written (`is_sendable_path`: a lone surrogate, a control character, a space)
  is left to the runner, which drops it before any probe and says so. A sample
  body that cannot be encoded (a lone surrogate in a form example: a form body is
  UTF-8, which has no form for half a surrogate pair) is dropped: the route is
  probed without a body, as one that takes none, and the runner says so;
* the routing table of an in-process Starlette or FastAPI app, walking `Mount`
  and `Router` and through wrappers that keep the inner app in `.app` (`Shield`,
  every Bastion layer, Starlette middleware);
* a list the user gives (`"GET /"`, `"POST /transfer"`, `"WS /ws"`).

Path parameters (`/items/{id}`, `/files/{path:path}`) are filled with `1`.

Login recipes say how to sign in so the authenticated probes (cookies after
login, CSRF with a session, session fixation, WebSocket with a session) can run;
a token recipe says where an access token comes from for the JWT probes.

Not covered: routes that exist only at run time (a catch-all handler), GraphQL
operations, and Host-based routing (`starlette.routing.Host` is skipped).

References: OpenAPI 3.1 "Paths Object" and "Request Body Object"
https://spec.openapis.org/oas/v3.1.0#paths-object
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlencode

from bastion.audit.target import unwrap

HTTP_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
WEBSOCKET: Final = "WS"
STATE_CHANGING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Sample values for a schema's leaves: harmless, short, and valid for the common
# types, so a validating framework passes the request on to the handler.
_SAMPLES: Final[Mapping[str, Any]] = {
    "string": "audit",
    "integer": 1,
    "number": 1,
    "boolean": True,
}
# Schemas nest; past this depth a sample body stops growing (cycles via $ref).
_MAX_SCHEMA_DEPTH: Final = 6
# Path segments that end a session or delete data: never sent a state-changing
# probe, so the audit neither logs itself out nor destroys anything.
_NEVER_POST: Final = re.compile(r"log-?out|sign-?out|delete|remove|destroy|revoke", re.I)
_PARAMETER: Final = re.compile(r"\{[^}]*\}")
# RFC 3986 section 2: a URI holds no space, C0 control or DEL. A client must
# percent-encode them (then it asks for a path other than the one listed) or
# refuses to (httpx: InvalidURL), so such a path is never probed.
_NOT_IN_A_URI: Final = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True, slots=True)
class Route:
    """One route to probe: `GET /`, `POST /transfer`, `WS /ws`."""

    method: str
    path: str
    body: bytes = field(default=b"", compare=False, repr=False)
    """A sample request body, when one is known (from the OpenAPI schema)."""
    content_type: str = field(default="", compare=False)
    body_dropped: bool = field(default=False, compare=False, repr=False)
    """The OpenAPI document gave a sample body no request can carry (invalid
    Unicode in a form): the route is probed without a body."""

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def is_websocket(self) -> bool:
        return self.method == WEBSOCKET

    @property
    def is_state_changing(self) -> bool:
        return self.method in STATE_CHANGING

    @property
    def may_be_probed_with_writes(self) -> bool:
        """Whether state-changing probes may target it (not logout, not delete)."""
        return (
            self.is_state_changing and self.method != "DELETE" and not _NEVER_POST.search(self.path)
        )


def parse_route(text: str) -> Route:
    """`"POST /transfer"` -> Route; a bare path means GET."""
    method, _, path = text.strip().partition(" ")
    if not path:
        method, path = "GET", method
    method = method.upper()
    path = path.strip()
    if method not in (*HTTP_METHODS, WEBSOCKET) or not path.startswith("/"):
        raise ValueError(
            f"expected 'METHOD /path' (METHOD one of GET POST PUT PATCH DELETE WS), got {text!r}"
        )
    if not is_sendable_path(path):
        raise ValueError(
            f"route {text!r}: a path cannot hold a space, a control character or "
            "invalid Unicode (write a space as %20)"
        )
    return Route(method, path)


def is_sendable_path(path: str) -> bool:
    """Whether a request can carry `path` as written: no space, C0 control or DEL
    (RFC 3986 section 2), and valid Unicode (a JSON document can escape half a
    surrogate pair, `\\ud800`, which has no UTF-8 form)."""
    if _NOT_IN_A_URI.search(path):
        return False
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def fill_parameters(path: str) -> str:
    """`/items/{id}` -> `/items/1`; also Starlette's `{id:int}` and `{p:path}`."""
    return _PARAMETER.sub("1", path)


@dataclass(frozen=True, slots=True)
class LoginRecipe:
    """How to sign in with a form or JSON body.

    The password is never shown (`repr=False`) and never put in evidence.
    """

    path: str
    username: str
    password: str = field(repr=False)
    username_field: str = "username"
    password_field: str = "password"  # noqa: S105 - a form field's name, not a password
    encoding: Literal["form", "json"] = "form"
    success_statuses: tuple[int, ...] = (200, 201, 204, 301, 302, 303, 307, 308)
    """Statuses that mean the login worked; anything else stops the session probes."""

    def body(
        self, *, password: str | None = None, username: str | None = None
    ) -> tuple[bytes, str]:
        """The login body and its content type (`password` overrides, for failures)."""
        values = {
            self.username_field: self.username if username is None else username,
            self.password_field: self.password if password is None else password,
        }
        if self.encoding == "json":
            return json.dumps(values).encode(), "application/json"
        return urlencode(values).encode(), "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class TokenRecipe:
    """Where an access token comes from, and a route that requires it.

    Two ways to get the token:

    * from credentials (the default): `path` answers a login body with JSON
      holding the token in `token_field` (OAuth 2 password grant style);
    * from a session (`from_session=True`): `path` issues a token to the caller
      signed in with the login recipe, by a same-origin POST carrying that
      session's cookies and no body; `username` and `password` are not used.

    `protected_path` is a GET route that answers 2xx with `Authorization: Bearer
    <token>` and 401/403 without.

    `expired_token`, when given, is a token the issuer really signed whose `exp`
    has passed. The auditor can forge no signature, so only such a token shows a
    server that verifies signatures but ignores `exp`; the issuer (a test or the
    bundled demo) can mint one. Never shown (`repr=False`), never in evidence.
    """

    path: str
    username: str = ""
    password: str = field(default="", repr=False)
    protected_path: str = "/"
    username_field: str = "username"
    password_field: str = "password"  # noqa: S105 - a form field's name, not a password
    encoding: Literal["form", "json"] = "form"
    token_field: str = "access_token"  # noqa: S105 - a JSON key, not a token
    from_session: bool = False
    expired_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.from_session and not self.username:
            raise ValueError("a token recipe needs a username unless the token is from_session")

    def body(self) -> tuple[bytes, str]:
        """The request body and its content type (empty for a session-issued token)."""
        if self.from_session:
            return b"", ""
        values = {self.username_field: self.username, self.password_field: self.password}
        if self.encoding == "json":
            return json.dumps(values).encode(), "application/json"
        return urlencode(values).encode(), "application/x-www-form-urlencoded"


# ---------------------------------------------------------------------------
# OpenAPI


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a JSON object, else an empty one: a hostile or broken
    document's list where an object belongs counts as absent."""
    return value if isinstance(value, Mapping) else {}


def _resolve(schema: Any, components: Mapping[str, Any]) -> Any:
    if isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str):
        name = schema["$ref"].rsplit("/", 1)[-1]
        return components.get(name, {})
    return schema


def sample_value(schema: Any, components: Mapping[str, Any], depth: int = 0) -> Any:
    """A small value matching `schema`: its example, default, first of its examples
    or first enum value, else a sample per type; objects get their required
    properties (all of them when none is marked required, up to the depth cap)."""
    schema = _resolve(schema, components)
    if not isinstance(schema, Mapping) or depth > _MAX_SCHEMA_DEPTH:
        return "audit"
    for key in ("example", "default"):
        if key in schema:
            return schema[key]
    examples = schema.get("examples")  # JSON Schema's list (OpenAPI 3.1)
    if isinstance(examples, list) and examples:
        return examples[0]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if _mapping(_resolve(o, components)).get("type") != "null"]
            return sample_value((usable or options)[0], components, depth + 1)
    kind = schema.get("type")
    if kind == "array":
        return [sample_value(schema.get("items", {}), components, depth + 1)]
    if kind == "object" or "properties" in schema:
        properties = _mapping(schema.get("properties"))
        required = schema.get("required")
        names = required if isinstance(required, list) and required else list(properties)
        return {
            name: sample_value(properties.get(name, {}), components, depth + 1)
            for name in names
            if isinstance(name, str)
        }
    if isinstance(kind, str):
        return _SAMPLES.get(kind, "audit")
    return "audit"


def sample_body(operation: Mapping[str, Any], components: Mapping[str, Any]) -> tuple[bytes, str]:
    """A request body for an OpenAPI operation: a form when it takes one, else JSON.

    Raises `ValueError` when the sample cannot be encoded: the target wrote it,
    and a form field holding a lone surrogate (`"\\ud800"`) has no UTF-8 form
    (`UnicodeEncodeError`); `routes_from_openapi` then drops the sample.
    """
    content = _mapping(_mapping(operation.get("requestBody")).get("content"))
    for media, encode in (
        ("application/x-www-form-urlencoded", _form),
        ("multipart/form-data", _form),
        ("application/json", _json),
    ):
        if media in content:
            value = sample_value(_mapping(content[media]).get("schema", {}), components)
            return encode(value)
    return b"", ""


def _form(value: Any) -> tuple[bytes, str]:
    fields = value if isinstance(value, Mapping) else {}
    pairs = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    return urlencode(pairs).encode(), "application/x-www-form-urlencoded"


def _json(value: Any) -> tuple[bytes, str]:
    return json.dumps(value).encode(), "application/json"


def routes_from_openapi(document: Mapping[str, Any]) -> list[Route]:
    """Every operation of an OpenAPI 3 document, with sample bodies."""
    components = _mapping(_mapping(document.get("components")).get("schemas"))
    routes: list[Route] = []
    for path, operations in _mapping(document.get("paths")).items():
        # The target wrote the path: one that does not start with "/" would be
        # appended to its authority and name another host (`@internal.example/`).
        if not isinstance(path, str) or not path.startswith("/"):
            continue
        if not isinstance(operations, Mapping):
            continue
        for method, operation in operations.items():
            if method.upper() not in HTTP_METHODS or not isinstance(operation, Mapping):
                continue
            dropped = False
            try:
                body, content_type = sample_body(operation, components)
            except (ValueError, RecursionError):
                # The target wrote the sample: one that cannot be encoded (or nests
                # past the encoder's stack) is dropped rather than end the audit.
                body, content_type, dropped = b"", "", True
            routes.append(Route(method.upper(), fill_parameters(path), body, content_type, dropped))
    return routes


# ---------------------------------------------------------------------------
# Starlette / FastAPI routing


def routes_from_app(app: object) -> list[Route]:
    """The routes of a Starlette or FastAPI app, found through any wrappers."""
    for layer in unwrap(app):
        routing = getattr(layer, "routes", None)
        if isinstance(routing, list):
            return list(_walk(routing, prefix="", depth=0))
    return []


def _walk(routing: Iterable[object], prefix: str, depth: int) -> Iterable[Route]:
    # Bounded: mounts nest a few levels in real apps; deeper is a cycle.
    if depth > 8:
        return
    for entry in routing:
        path = getattr(entry, "path", None)
        if not isinstance(path, str) or type(entry).__name__ == "Host":
            continue
        full = fill_parameters(prefix + path)
        children = getattr(entry, "routes", None)
        if type(entry).__name__ == "Mount":
            if isinstance(children, list) and children:
                yield from _walk(children, prefix + path, depth + 1)
            continue
        if "WebSocket" in type(entry).__name__:
            yield Route(WEBSOCKET, full)
            continue
        methods = getattr(entry, "methods", None) or {"GET"}
        for method in sorted(methods):
            if method in HTTP_METHODS:
                yield Route(method, full)


def merge_routes(*sources: Sequence[Route]) -> list[Route]:
    """One list, first source winning for a (method, path); order kept."""
    seen: dict[tuple[str, str], Route] = {}
    for source in sources:
        for route in source:
            seen.setdefault((route.method, route.path), route)
    return list(seen.values())


def openapi_document(text: str) -> Mapping[str, Any] | None:
    """The parsed document, or None when `text` is not an OpenAPI 3 document."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: `[[[[...` nested past the stack
        return None
    if isinstance(document, dict) and isinstance(document.get("paths"), dict):
        return document
    return None
