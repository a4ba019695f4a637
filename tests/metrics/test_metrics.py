from __future__ import annotations

import pytest

from bastion.events import EventEmitter
from bastion.metrics import MAX_SERIES, MetricsSink, metrics_app
from bastion.settings import Settings
from bastion.shield import Shield
from tests.conftest import asgi_client
from tests.support.apps import raw_app

pytestmark = pytest.mark.anyio


async def test_refusals_are_counted_by_bounded_labels() -> None:
    sink = MetricsSink()
    app = Shield(raw_app, Settings(mode="development"), events=EventEmitter([sink]))
    async with asgi_client(app) as client:
        for host in ("evil.example", "other.example", "x.example"):
            assert (await client.get("/", headers={"host": host})).status_code == 400
        assert (await client.get("/")).status_code == 200
    value = sink.registry.get_sample_value(
        "bastion_events_total",
        {
            "layer": "transport",
            "kind": "input_validation_fail",
            "reason": "host-not-allowed",
            "action": "blocked",
        },
    )
    assert value == 3
    exposition = (await _scrape(sink)).decode()
    # Attacker-chosen values (hosts, client addresses, paths) never become labels.
    assert "evil.example" not in exposition
    assert "127.0.0.1" not in exposition


async def _scrape(sink: MetricsSink) -> bytes:
    async with asgi_client(metrics_app(sink.registry)) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.content


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x" * 200, id="metrics-label-too-long"),
        pytest.param("Evil Value\n", id="metrics-label-not-token"),
        pytest.param("203.0.113.9:1234", id="metrics-label-address-like"),
    ],
)
def test_unexpected_label_values_become_other(value: str) -> None:
    sink = MetricsSink()
    sink.handle({"layer": "transport", "kind": "k", "reason": value, "action": "blocked"})
    assert (
        sink.registry.get_sample_value(
            "bastion_events_total",
            {"layer": "transport", "kind": "k", "reason": "other", "action": "blocked"},
        )
        == 1
    )


def test_series_are_capped() -> None:
    sink = MetricsSink()
    for index in range(MAX_SERIES + 50):
        sink.handle({"layer": "l", "kind": "k", "reason": f"r{index}", "action": "blocked"})
    assert len(sink._series) == MAX_SERIES
    assert (
        sink.registry.get_sample_value(
            "bastion_events_total",
            {"layer": "l", "kind": "other", "reason": "other", "action": "blocked"},
        )
        == 50
    )


def test_store_errors_are_counted() -> None:
    sink = MetricsSink()
    sink.handle(
        {
            "layer": "sessions",
            "kind": "sys_availability",
            "reason": "store-unavailable",
            "action": "blocked",
        }
    )
    assert sink.registry.get_sample_value("bastion_store_errors_total", {"layer": "sessions"}) == 1


async def test_metrics_endpoint_refuses_other_methods() -> None:
    async with asgi_client(metrics_app(MetricsSink().registry)) as client:
        response = await client.post("/metrics")
    assert response.status_code == 405


async def test_shield_serves_its_metrics_when_enabled() -> None:
    app = Shield(raw_app, Settings(mode="development", events={"prometheus": True}))
    async with asgi_client(app) as client:
        assert (await client.get("/", headers={"host": "evil.example"})).status_code == 400
    async with asgi_client(app.metrics_app()) as client:
        body = (await client.get("/metrics")).text
    assert 'reason="host-not-allowed"' in body


def test_metrics_app_needs_the_setting() -> None:
    from bastion.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="prometheus"):
        Shield(raw_app, Settings(mode="development")).metrics_app()


@pytest.mark.parametrize(
    ("credential", "status"),
    [
        pytest.param(None, 401, id="metrics-anonymous-refused-by-policy"),
        pytest.param("viewer", 403, id="metrics-without-the-role-refused-by-policy"),
        pytest.param("ops", 200, id="metrics-operator-served"),
    ],
)
async def test_metrics_endpoint_behind_the_route_policy(
    credential: str | None, status: int
) -> None:
    """The documented mounting: the app serves `shield.metrics_app()` at a route the
    policy restricts to a role, so the endpoint passes through the whole stack."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from bastion.auth.apikeys import create_api_key
    from bastion.auth.settings import APIKeySettings

    inner = Starlette()
    shield = Shield(
        inner,
        Settings(
            mode="development",
            events={"prometheus": True},
            auth={"api_keys": APIKeySettings(peppers=("pepper-" + "x" * 40,))},
            policy={"routes": {"/metrics": "roles:ops", "/metrics/*": "roles:ops"}},
        ),
    )
    inner.router.routes.append(Mount("/metrics", shield.metrics_app()))
    headers: dict[str, str] = {}
    if credential is not None:
        api_keys = shield.settings.auth.api_keys
        assert api_keys is not None
        key = await create_api_key(shield.store, api_keys, credential, roles=[credential])
        headers["x-api-key"] = key
    async with asgi_client(shield) as client:
        response = await client.get("/metrics/", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert "bastion_" in response.text
