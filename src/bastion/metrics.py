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

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from bastion.responses import send_response
from bastion.types import Receive, Scope, Send

# A label value must look like one of our constants; anything else is "other".
_LABEL_VALUE: Final = re.compile(r"[a-z0-9_.-]{1,64}")
# Far above the number of (layer, kind, reason, action) combinations Bastion emits
# (a few hundred); reaching it means something unexpected feeds the sink.
MAX_SERIES: Final = 2000
OTHER: Final = "other"


def _label(value: object) -> str:
    text = str(value) if value is not None else "none"
    return text if _LABEL_VALUE.fullmatch(text) else OTHER


class MetricsSink:
    """Counts events into Prometheus counters with bounded labels."""

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
        self._series: set[tuple[str, str, str, str]] = set()

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
        if labels[2] == "store-unavailable":
            self.store_errors.labels(labels[0]).inc()


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
