"""Prometheus metrics from the event stream.

Threats: an operator who cannot see refusals cannot see an attack; and a metrics
system fed attacker-chosen label values (client addresses, paths) is itself a
denial-of-service target, since every distinct label set is a new time series held
in memory forever.

Defence: `MetricsSink` is an event sink, so every refusal and every
security-relevant success any layer reports is counted, by `layer`, `kind`,
`reason` and `action` only. Those four come from constants in Bastion's code (and a
sink refuses any value outside a bounded vocabulary of short, token-shaped strings,
counting it as `other`), so the number of series is bounded whatever clients send.
Client addresses, paths and principals are never labels.

Beside the event counter, from the same stream:

* `bastion_ratelimit_decisions` counts the rate-limit layer's decisions by
  `outcome` (`limited`, `login_throttled`, `banned`, `ban_started`,
  `store_unavailable`) and `action`. Requests the layer lets through are not
  counted: that would cost every request a counter increment, and the server's own
  request metrics already count them.
* `bastion_store_errors` counts store failures by layer. A layer that reports an
  outage at most once per interval (the rate-limit layer) puts the number of
  failures the event stands for in `details.failures`, which is added.
* `bastion_websocket_connections` is a gauge of accepted WebSocket connections by
  route pattern (`bastion.websocket.middleware.ConnectionObserver`: the guard tells
  the sink directly, on accept and on every way a socket ends). Route labels come
  from the guard's settings; past `MAX_ROUTE_LABELS` distinct ones, `other`.

`metrics_app(registry)` is a small ASGI app serving the text exposition format.
Mount it behind your authentication (a route policy that requires a role, or a
separate listener): metrics describe your defences to whoever can read them.

Not covered: per-client dashboards (use the audit log or the JSON event log).

References: Prometheus naming and label cardinality
https://prometheus.io/docs/practices/naming/#labels
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from bastion.ratelimit.jail import is_ban_start
from bastion.ratelimit.reasons import (
    LAYER as RATELIMIT_LAYER,
)
from bastion.ratelimit.reasons import (
    REASON_BANNED,
    REASON_CONCURRENCY_LIMITED,
    REASON_LOGIN_LOCKED,
    REASON_LOGIN_THROTTLED,
    REASON_RATE_LIMITED,
    REASON_STORE_UNAVAILABLE,
)
from bastion.responses import send_response
from bastion.types import Receive, Scope, Send

# A label value must look like one of our constants; anything else is "other".
_LABEL_VALUE: Final = re.compile(r"[a-z0-9_.-]{1,64}")
# Far above the number of (layer, kind, reason, action) combinations Bastion emits
# (a few hundred); reaching it means something unexpected feeds the sink.
MAX_SERIES: Final = 2000
OTHER: Final = "other"
# Route patterns are typed by the operator, a handful per application; the cap only
# guards against a misbehaving caller of the observer methods.
MAX_ROUTE_LABELS: Final = 100
_ROUTE_VALUE: Final = re.compile(r"[\x21-\x7e]{1,128}( [\x21-\x7e]{1,128})?")
# One throttled outage report stands for at most this many failures: a larger or
# malformed `details.failures` counts as one, so no event can inflate the counter.
MAX_FAILURES_PER_EVENT: Final = 1_000_000
STORE_UNAVAILABLE: Final = "store-unavailable"
# The rate-limit layer's reasons, by the outcome they report.
_RATELIMIT_OUTCOMES: Final[Mapping[str, str]] = {
    REASON_RATE_LIMITED: "limited",
    REASON_CONCURRENCY_LIMITED: "limited",
    REASON_LOGIN_LOCKED: "login_throttled",
    REASON_LOGIN_THROTTLED: "login_throttled",
    REASON_BANNED: "banned",
    REASON_STORE_UNAVAILABLE: "store_unavailable",
}


def _label(value: object) -> str:
    text = str(value) if value is not None else "none"
    return text if _LABEL_VALUE.fullmatch(text) else OTHER


def _failures(record: Mapping[str, object]) -> int:
    """How many store failures an outage event stands for (1 unless it says more)."""
    details = record.get("details")
    count = details.get("failures") if isinstance(details, Mapping) else None
    if isinstance(count, bool) or not isinstance(count, int):
        return 1
    return count if 1 <= count <= MAX_FAILURES_PER_EVENT else 1


class MetricsSink:
    """Counts events into Prometheus counters with bounded labels, and tracks
    accepted WebSocket connections as a `ConnectionObserver` of the guard."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.events = Counter(
            "bastion_events",
            "Security events by layer, kind, reason and action (blocked, monitored, allowed).",
            ("layer", "kind", "reason", "action"),
            registry=self.registry,
        )
        self.store_errors = Counter(
            "bastion_store_errors",
            "Store failures seen by a layer (its fail mode then applied).",
            ("layer",),
            registry=self.registry,
        )
        self.ratelimit_decisions = Counter(
            "bastion_ratelimit_decisions",
            "Rate-limit refusals and outages by outcome and action (allowed requests"
            " are not counted).",
            ("outcome", "action"),
            registry=self.registry,
        )
        self.websocket_connections = Gauge(
            "bastion_websocket_connections",
            "Accepted WebSocket connections open now, by route pattern.",
            ("route",),
            registry=self.registry,
        )
        self._series: set[tuple[str, str, str, str]] = set()
        self._routes: set[str] = set()

    def handle(self, record: Mapping[str, object]) -> None:
        labels = (
            _label(record.get("layer")),
            _label(record.get("kind")),
            _label(record.get("reason")),
            _label(record.get("action")),
        )
        if labels not in self._series:
            if len(self._series) >= MAX_SERIES:
                labels = (labels[0], OTHER, OTHER, labels[3])
            else:
                self._series.add(labels)
        self.events.labels(*labels).inc()
        reason = record.get("reason")
        if reason == STORE_UNAVAILABLE:
            self.store_errors.labels(labels[0]).inc(_failures(record))
        if record.get("layer") == RATELIMIT_LAYER and isinstance(reason, str):
            outcome = _RATELIMIT_OUTCOMES.get(reason)
            if outcome is not None:
                if is_ban_start(record):
                    outcome = "ban_started"
                self.ratelimit_decisions.labels(outcome, labels[3]).inc()

    def _route(self, route: str) -> str:
        if route in self._routes:
            return route
        if len(self._routes) >= MAX_ROUTE_LABELS or not _ROUTE_VALUE.fullmatch(route):
            return OTHER
        self._routes.add(route)
        return route

    def websocket_opened(self, route: str) -> None:
        self.websocket_connections.labels(self._route(route)).inc()

    def websocket_closed(self, route: str) -> None:
        self.websocket_connections.labels(self._route(route)).dec()


def metrics_app(registry: CollectorRegistry) -> MetricsASGI:
    return MetricsASGI(registry)


class MetricsASGI:
    """Serves `registry` in the Prometheus text format to GET and HEAD."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._headers = [(b"content-type", CONTENT_TYPE_LATEST.encode("latin-1"))]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_response(send, 405, b"", [(b"allow", b"GET, HEAD")])
            return
        await send_response(
            send,
            200,
            generate_latest(self.registry),
            self._headers,
            head=scope["method"] == "HEAD",
        )
