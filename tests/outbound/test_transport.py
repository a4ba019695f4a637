"""The transports around a recording inner transport: pinning, one lookup, pools, events."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Sequence

import httpx
import pytest

from bastion import outbound
from bastion.events import EventEmitter
from bastion.outbound import (
    IPAddress,
    OutboundBlocked,
    OutboundSettings,
    safe_async_client,
    safe_client,
)
from tests.conftest import RecordingSink
from tests.outbound.support import RebindingResolver, StaticResolver

PUBLIC = "93.184.215.14"


class Recorder:
    """Inner transports that record what they are asked to send."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.created = 0
        self.closed = 0
        self.refuse: set[str] = set()  # addresses that "do not answer"

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host in self.refuse:
            raise httpx.ConnectError("unreachable", request=request)
        return httpx.Response(200, content=b"ok")

    def factory(self) -> httpx.BaseTransport:
        self.created += 1
        recorder = self

        class Inner(httpx.MockTransport):
            def close(self) -> None:
                recorder.closed += 1

        return Inner(self.handler)

    def async_factory(self) -> httpx.AsyncBaseTransport:
        self.created += 1
        recorder = self

        class Inner(httpx.MockTransport):
            async def aclose(self) -> None:
                recorder.closed += 1

        return Inner(self.handler)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def test_ssrf_dns_rebinding(recorder: Recorder) -> None:
    # The name is public when checked and loopback on a second lookup: the transport
    # looks up once and connects to the address it checked.
    resolver = RebindingResolver()
    with safe_client(resolver=resolver, transport_factory=recorder.factory) as client:
        response = client.get("https://rebind.test/path?q=1")
        assert response.status_code == 200
        assert resolver.calls == 1
        [sent] = recorder.requests
        assert str(sent.url) == f"https://{PUBLIC}/path?q=1"
        assert sent.headers["host"] == "rebind.test"
        assert sent.extensions["sni_hostname"] == "rebind.test"
        assert sent.headers["accept-encoding"] == "identity"
        assert response.request.url == httpx.URL("https://rebind.test/path?q=1")
        # The next request looks up again, gets loopback, and is refused.
        with pytest.raises(OutboundBlocked, match="loopback"):
            client.get("https://rebind.test/")
    assert resolver.calls == 2
    assert len(recorder.requests) == 1


@pytest.mark.anyio
async def test_ssrf_dns_rebinding_async(recorder: Recorder) -> None:
    resolver = RebindingResolver()
    async with safe_async_client(resolver=resolver, transport_factory=recorder.async_factory) as c:
        await c.get("https://rebind.test/")
        with pytest.raises(OutboundBlocked, match="loopback"):
            await c.get("https://rebind.test/")
    assert resolver.calls == 2
    assert [r.url.host for r in recorder.requests] == [PUBLIC]


def test_ip_literal_is_not_looked_up_and_has_no_sni(recorder: Recorder) -> None:
    resolver = StaticResolver({})
    with safe_client(resolver=resolver, transport_factory=recorder.factory) as client:
        client.get("https://8.8.8.8/")
        client.get("https://[2606:4700:4700::1111]/")
    assert resolver.calls == []
    assert [str(r.url) for r in recorder.requests] == [
        "https://8.8.8.8/",
        "https://[2606:4700:4700::1111]/",
    ]
    assert all("sni_hostname" not in r.extensions for r in recorder.requests)


def test_every_checked_address_is_tried_in_turn(recorder: Recorder) -> None:
    resolver = StaticResolver({"multi.test": ["2606:4700::1", "8.8.8.8"]})
    recorder.refuse = {"2606:4700::1"}
    with safe_client(resolver=resolver, transport_factory=recorder.factory) as client:
        assert client.get("https://multi.test/").status_code == 200
    assert [r.url.host for r in recorder.requests] == ["2606:4700::1", "8.8.8.8"]
    recorder.refuse.add("8.8.8.8")
    with (
        safe_client(resolver=resolver, transport_factory=recorder.factory) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get("https://multi.test/")


def test_unresolvable_name_is_a_connect_error(recorder: Recorder) -> None:
    with (
        safe_client(resolver=StaticResolver({}), transport_factory=recorder.factory) as client,
        pytest.raises(httpx.ConnectError, match="cannot resolve"),
    ):
        client.get("https://nowhere.test/")


def test_one_pool_per_host_name(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = StaticResolver({"a.test": [PUBLIC], "b.test": [PUBLIC], "c.test": [PUBLIC]})
    monkeypatch.setattr(outbound, "MAX_POOLED_HOSTS", 2)
    with safe_client(resolver=resolver, transport_factory=recorder.factory) as client:
        for host in ("a.test", "b.test", "a.test", "b.test"):
            client.get(f"https://{host}/")
        assert recorder.created == 2  # same address, separate pools: one per name
        client.get("https://c.test/")  # past the bound: a one-off transport, closed after
        assert (recorder.created, recorder.closed) == (3, 1)
    assert recorder.closed == 3


def test_events_are_emitted_when_asked(recorder: Recorder) -> None:
    sink = RecordingSink()
    with (
        safe_client(events=EventEmitter([sink]), transport_factory=recorder.factory) as client,
        pytest.raises(OutboundBlocked),
    ):
        client.get("https://169.254.169.254/latest/meta-data/iam?token=secret")
    [record] = sink.records
    assert record["kind"] == "malicious_ssrf"
    assert record["reason"] == "cloud-metadata"
    assert record["layer"] == "outbound"
    assert record["details"] == {
        "host": "169.254.169.254",
        "scheme": "https",
        "address": "169.254.169.254",
    }
    assert "secret" not in str(record)


def test_streamed_body_over_the_cap_emits(recorder: Recorder) -> None:
    sink = RecordingSink()

    def undeclared(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"x" * 100))  # no length

    settings = OutboundSettings(max_response_bytes=10)
    with (
        safe_client(
            settings,
            resolver=StaticResolver({"big.test": [PUBLIC]}),
            events=EventEmitter([sink]),
            transport_factory=lambda: httpx.MockTransport(undeclared),
        ) as client,
        pytest.raises(OutboundBlocked, match="response-too-large"),
    ):
        client.get("https://big.test/")
    assert sink.reasons() == ["response-too-large"]


def test_nothing_is_emitted_by_default(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Callers decide: without an emitter, not even the default logging sink hears of it.
    with (
        caplog.at_level(logging.DEBUG),
        safe_client(transport_factory=recorder.factory) as client,
        pytest.raises(OutboundBlocked),
    ):
        client.get("https://10.0.0.1/")
    assert caplog.records == []


def test_client_ignores_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    with safe_client() as client:
        assert client._mounts == {}
        assert isinstance(client._transport, outbound.SafeTransport)


def test_client_settings(recorder: Recorder) -> None:
    settings = OutboundSettings(max_redirects=2, timeout_seconds=3.0)
    with safe_client(settings, headers={"user-agent": "bastion-test"}) as client:
        assert client.max_redirects == 2
        assert client.timeout == httpx.Timeout(3.0)
        assert client.follow_redirects is True
        assert client.headers["user-agent"] == "bastion-test"


class SlowResolver:
    def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        time.sleep(0.5)  # a slow DNS server
        return [ipaddress.ip_address(PUBLIC)]


@pytest.mark.anyio
async def test_async_lookup_is_bounded_by_the_connect_timeout(recorder: Recorder) -> None:
    settings = OutboundSettings(timeout_seconds=0.05)
    async with safe_async_client(
        settings, resolver=SlowResolver(), transport_factory=recorder.async_factory
    ) as client:
        with pytest.raises(httpx.ConnectTimeout):
            await client.get("https://slow.test/")
