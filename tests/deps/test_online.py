"""The online path against a fake OSV API on 127.0.0.1 (the suite never uses the network)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.deps import Installed, OSVUnavailable, Report, query_osv

FIXTURE = Path(__file__).parent / "osv"


class FakeOSV(BaseHTTPRequestHandler):
    """Canned querybatch answers: starlette's vulnerability arrives on a second page."""

    mode: ClassVar[str] = "ok"
    requests: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.requests.append(self.path)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.path != "/v1/querybatch" or self.mode == "error":
            self._answer(500, b"{}")
            return
        if self.mode == "huge":
            self._answer(200, b" " * (17 * 1024 * 1024))
            return
        results: list[dict[str, Any]] = []
        for query in body["queries"]:
            name = query["package"]["name"]
            if self.mode == "bad-id" and name == "starlette":
                results.append({"vulns": [{"id": "../admin"}]})
            elif name == "starlette" and "page_token" not in query:
                results.append({"next_page_token": "page-2"})
            elif name == "starlette":
                results.append({"vulns": [{"id": "BASTION-TEST-0001", "modified": "x"}]})
            else:
                results.append({})
        self._answer(200, json.dumps({"results": results}).encode())

    def do_GET(self) -> None:
        self.requests.append(self.path)
        name = self.path.removeprefix("/v1/vulns/")
        path = FIXTURE / f"{name}.json"
        if self.path.startswith("/v1/vulns/BASTION-TEST-") and path.is_file():
            self._answer(200, path.read_bytes())
        else:
            self._answer(404, b"{}")


@pytest.fixture
def fake_osv() -> Iterator[str]:
    FakeOSV.mode = "ok"
    FakeOSV.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOSV)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["deps", *args])
    return result.exit_code, result.stdout, result.stderr


def test_query_follows_pages_and_fetches_each_advisory(fake_osv: str) -> None:
    report = Report()
    packages = [Installed("starlette", "0.40.0"), Installed("httpx", "0.27.0")]
    advisories = query_osv(packages, report, base_url=fake_osv)
    assert list(advisories) == ["BASTION-TEST-0001"]
    assert FakeOSV.requests == ["/v1/querybatch", "/v1/querybatch", "/v1/vulns/BASTION-TEST-0001"]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        pytest.param("error", "HTTPStatusError", id="server-error"),
        pytest.param("huge", "answer larger than", id="oversized-answer"),
        pytest.param("bad-id", "invalid id", id="path-injection-id"),
    ],
)
def test_bad_answers_are_refused(fake_osv: str, mode: str, message: str) -> None:
    FakeOSV.mode = mode
    with pytest.raises(OSVUnavailable, match=message):
        query_osv([Installed("starlette", "1.0")], Report(), base_url=fake_osv)
    assert not any(path.startswith("/v1/vulns/") for path in FakeOSV.requests)


def test_command_online_finds_the_installed_starlette(fake_osv: str) -> None:
    exit_code, stdout, _ = run("--osv-api", fake_osv, "--format", "json")
    assert exit_code == 1
    findings = json.loads(stdout)["findings"]
    assert [(f["id"], f["package"]) for f in findings] == [("BASTION-TEST-0001", "starlette")]


def test_command_online_failure_without_export_exits_2(closed_port_url: str) -> None:
    exit_code, stdout, stderr = run("--osv-api", closed_port_url)
    assert exit_code == 2
    assert stdout == ""
    assert f"the OSV API at {closed_port_url} could not be queried (ConnectError" in stderr
    assert "nothing was checked" in stderr


def test_command_online_failure_with_export_uses_the_export(closed_port_url: str) -> None:
    exit_code, stdout, stderr = run("--osv-api", closed_port_url, "--osv", str(FIXTURE), "--online")
    assert exit_code == 1
    assert "BASTION-TEST-0001" in stdout
    assert "results are from the local export only" in stderr


def test_export_alone_does_not_go_online(fake_osv: str) -> None:
    assert run("--osv-api", fake_osv, "--osv", str(FIXTURE))[0] == 1
    assert FakeOSV.requests == []
