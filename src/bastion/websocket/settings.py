"""Settings of the WebSocket guard (`Settings.websocket`).

Every default is justified where it is defined. Route access and origins are parsed
at construction, so a typo is an error at start-up, never a silently open route.

The guard looks every socket up under the method `WEBSOCKET`, so a route pattern
naming another method (`GET /ws`, natural since a handshake is a GET) would never
match: its access rule would silently give way to `default_access`, its schema would
validate nothing. `parse_websocket_route` refuses such a pattern instead, naming the
two spellings that work (`WEBSOCKET /ws`, `/ws`). It does not read `GET` as
`WEBSOCKET`: a configuration that said `GET /ws` has run under `default_access`, and
reading it now would change a route's access without the user seeing it; one
spelling per rule also leaves no tie to break between `GET /ws` and `WEBSOCKET /ws`.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, field_validator

from bastion.hosts import parse_origin
from bastion.routes import RoutePattern, parse_route_pattern
from bastion.sections import LayerSettings

Access = Literal["authenticated", "public"]
OnRateLimit = Literal["close", "drop"]
OnInvalidMessage = Literal["close", "error-frame"]

# A ticket is fetched by the page right before it connects; 30 seconds covers a slow
# mobile round trip, and the ticket is single use anyway (OWASP: short-lived).
DEFAULT_TICKET_MAX_AGE_SECONDS: Final = 30
# Chat and notification messages are a few hundred bytes; the `websockets` library
# defaults to 1 MiB and uvicorn to 16 MiB. 64 KiB leaves room for rich JSON while
# bounding what one message costs to validate.
DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_MESSAGE_BYTES_CEILING: Final = 16 * 1024 * 1024  # uvicorn's own default cap
# A person types a few messages a second; a UI may burst on reconnect. 10/s with a
# burst of 20 per connection, and twice that per principal (several tabs).
DEFAULT_MESSAGES_PER_SECOND: Final = 10.0
DEFAULT_MESSAGE_BURST: Final = 20
DEFAULT_PRINCIPAL_MESSAGES_PER_SECOND: Final = 20.0
DEFAULT_PRINCIPAL_MESSAGE_BURST: Final = 40
# Browsers and proxies drop idle sockets after 60-120 s unless pinged (nginx
# `proxy_read_timeout` is 60 s); an app that pings keeps its socket far below 5 min.
DEFAULT_IDLE_TIMEOUT_SECONDS: Final = 300.0
# A user with many tabs holds a handful of sockets; a NAT gateway fronts tens of
# users. Per principal 10, per client address 50.
DEFAULT_MAX_CONNECTIONS_PER_CLIENT: Final = 50
DEFAULT_MAX_CONNECTIONS_PER_PRINCIPAL: Final = 10
# The counters' safety net: a worker killed without running its `finally` leaks
# its slots for at most this long.
DEFAULT_CONNECTION_COUNT_TTL_SECONDS: Final = 3600
# How late a revoked session or a ban may close a live socket; one store read per
# connection per interval.
DEFAULT_REVOCATION_CHECK_SECONDS: Final = 5.0
# The one method a socket is looked up under (`bastion.routes` accepts every method).
SOCKET_METHOD: Final = "WEBSOCKET"


def parse_websocket_route(text: str) -> RoutePattern:
    """Parse a pattern of a WebSocket route table (access, labels, schemas): a route
    pattern naming no method or `WEBSOCKET` alone (module docstring). Raises
    ValueError with the rule it breaks."""
    pattern = parse_route_pattern(text)
    others = pattern.methods - {SOCKET_METHOD}
    if others:
        path = pattern.path_text
        raise ValueError(
            f"route pattern {text!r} names {', '.join(sorted(others))}, but the WebSocket "
            f"guard looks every socket up under {SOCKET_METHOD}, so it would never apply; "
            f"write '{SOCKET_METHOD} {path}' or '{path}'"
        )
    return pattern


class WebSocketSettings(LayerSettings):
    """The WebSocket guard (see the README's settings reference)."""

    allowed_origins: tuple[str, ...] = ()
    """Origins (`https://app.example`) whose pages may open sockets, besides this
    server's own origin. Stored normalised; `*` and `null` are refused."""

    allow_same_origin: bool = True
    """Also allow the handshake's own origin (scheme, host and port of the request)."""

    routes: dict[str, Access] = Field(default_factory=dict)
    """Route pattern -> `authenticated` or `public` (e.g. `{"/ws/public": "public"}`).
    A pattern names no method or `WEBSOCKET` (`WEBSOCKET /ws`); any other method,
    `GET` included, is refused (module docstring)."""

    default_access: Access = "authenticated"
    """Access of a route no pattern matches: deny anonymous sockets by default."""

    ticket_max_age_seconds: int = Field(default=DEFAULT_TICKET_MAX_AGE_SECONDS, ge=1, le=300)
    max_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES, ge=1, le=MAX_MESSAGE_BYTES_CEILING
    )
    messages_per_second: float = Field(default=DEFAULT_MESSAGES_PER_SECOND, gt=0, le=1e6)
    message_burst: int = Field(default=DEFAULT_MESSAGE_BURST, ge=1, le=1_000_000)
    principal_messages_per_second: float = Field(
        default=DEFAULT_PRINCIPAL_MESSAGES_PER_SECOND, gt=0, le=1e6
    )
    principal_message_burst: int = Field(
        default=DEFAULT_PRINCIPAL_MESSAGE_BURST, ge=1, le=1_000_000
    )
    on_rate_limit: OnRateLimit = "close"
    """`close` (1008) or `drop` the message and answer with an error frame."""
    on_invalid_message: OnInvalidMessage = "close"
    """`close` (1007) or answer with an error frame and drop the message."""
    idle_timeout_seconds: float = Field(default=DEFAULT_IDLE_TIMEOUT_SECONDS, gt=0, le=86400)
    max_connections_per_client: int = Field(
        default=DEFAULT_MAX_CONNECTIONS_PER_CLIENT, ge=1, le=1_000_000
    )
    max_connections_per_principal: int = Field(
        default=DEFAULT_MAX_CONNECTIONS_PER_PRINCIPAL, ge=1, le=1_000_000
    )
    connection_count_ttl_seconds: int = Field(
        default=DEFAULT_CONNECTION_COUNT_TTL_SECONDS, ge=60, le=7 * 86400
    )
    revocation_check_seconds: float = Field(default=DEFAULT_REVOCATION_CHECK_SECONDS, gt=0, le=300)

    @field_validator("allowed_origins")
    @classmethod
    def _parse_origins(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        parsed = []
        for value in values:
            origin = parse_origin(value)
            if origin is None or origin.scheme not in ("http", "https"):
                raise ValueError("each allowed origin must be scheme://host[:port], http(s)")
            parsed.append(origin.serialise())
        return tuple(parsed)

    @field_validator("routes")
    @classmethod
    def _parse_routes(cls, value: dict[str, Access]) -> dict[str, Access]:
        for pattern in value:
            parse_websocket_route(pattern)
        return value
