"""Real TLS on 127.0.0.1: the socket goes to the checked address, while SNI, Host and
the certificate check use the name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bastion.outbound import OutboundSettings, safe_async_client, safe_client
from tests.outbound.support import CertificateAuthority, Running, StaticResolver, make_ca, serve

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return make_ca()


@pytest.fixture(scope="module")
def tls_server(
    ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    directory: Path = tmp_path_factory.mktemp("tls")
    with serve(ca.server_context(directory, ["service.test"])) as running:
        yield running


def settings_for(server: Running) -> OutboundSettings:
    return OutboundSettings.model_validate(
        {"allowed_ports": [server.port], "insecure_allowed_networks": ["127.0.0.1/32"]}
    )


RESOLVER = {"service.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}


def test_tls_by_name_to_the_checked_address(ca: CertificateAuthority, tls_server: Running) -> None:
    resolver = StaticResolver(RESOLVER)
    with safe_client(
        settings_for(tls_server), resolver=resolver, verify=ca.client_context()
    ) as client:
        response = client.get(f"https://service.test:{tls_server.port}/ok")
    assert response.text == "hello"
    assert response.url == httpx.URL(f"https://service.test:{tls_server.port}/ok")
    assert tls_server.seen.sni[-1] == "service.test"
    assert tls_server.seen.hosts[-1] == f"service.test:{tls_server.port}"
    assert resolver.calls == ["service.test"]


@pytest.mark.anyio
async def test_tls_by_name_async(ca: CertificateAuthority, tls_server: Running) -> None:
    async with safe_async_client(
        settings_for(tls_server), resolver=StaticResolver(RESOLVER), verify=ca.client_context()
    ) as client:
        response = await client.get(f"https://service.test:{tls_server.port}/ok")
    assert response.text == "hello"
    assert tls_server.seen.sni[-1] == "service.test"


def test_certificate_is_checked_against_the_name(
    ca: CertificateAuthority, tls_server: Running
) -> None:
    # The server's certificate names service.test only; other.test resolves to the
    # same address, so only the name check can tell them apart.
    with (
        safe_client(
            settings_for(tls_server), resolver=StaticResolver(RESOLVER), verify=ca.client_context()
        ) as client,
        pytest.raises(httpx.ConnectError, match="certificate verify failed"),
    ):
        client.get(f"https://other.test:{tls_server.port}/ok")


def test_a_verified_connection_is_not_reused_for_another_name(
    ca: CertificateAuthority, tls_server: Running
) -> None:
    # Same address and port, so a pool keyed by address would hand other.test the
    # connection verified for service.test. Pools are per name.
    with safe_client(
        settings_for(tls_server), resolver=StaticResolver(RESOLVER), verify=ca.client_context()
    ) as client:
        assert client.get(f"https://service.test:{tls_server.port}/ok").text == "hello"
        with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
            client.get(f"https://other.test:{tls_server.port}/ok")


def test_untrusted_certificate_is_refused(tls_server: Running) -> None:
    with (
        safe_client(settings_for(tls_server), resolver=StaticResolver(RESOLVER)) as client,
        pytest.raises(httpx.ConnectError, match="certificate verify failed"),
    ):
        client.get(f"https://service.test:{tls_server.port}/ok")
