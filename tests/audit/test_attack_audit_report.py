"""Attacks on the reader of an audit report, by the server it audits.

The target is a real server on 127.0.0.1 (the raw HTTP/1.1 `hostile_server` of
test_attack_audit_hostile_target.py) that puts its words where the report quotes
them: routes in its OpenAPI document (the table's route column, the SARIF location),
a `Server` banner (the evidence in JSON, SARIF and HTML). The words are a bidi
override that makes a route read backwards (Trojan Source), invisible characters,
terminal controls, a Markdown link for the code-scanning page, SARIF placeholders;
every format must show them inert, and plain text as it was.

And a grade from an audit that did not verify the certificate: served over TLS with
a self-signed certificate, audited with `--insecure`, every format must say so.
"""

from __future__ import annotations

import datetime
import json
import re
import ssl
import threading
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from bastion.audit.findings import AuditReport, Finding
from bastion.audit.report import parse_json, render_html, render_json, render_sarif, render_table
from bastion.audit.report.common import INSECURE_TLS_NOTE
from bastion.audit.report.escape import CUT_MARK, SARIF_TEXT_CHARS
from bastion.audit.runner import run_audit
from bastion.audit.target import URLTarget
from bastion.cli import app
from bastion.demo.tls import build_certificate
from tests.audit.test_attack_audit_hostile_target import Answer, hostile_server
from tests.audit.test_report import VALIDATOR

pytestmark = pytest.mark.anyio

HTML = ("content-type", "text/html")
TRACEBACK = b"Traceback (most recent call last):\n  ValueError: boom"
RENDERERS: dict[str, Callable[[list[AuditReport]], str]] = {
    "table": render_table,
    "json": render_json,
    "sarif": render_sarif,
    "html": render_html,
}


def _site(route: str = "/plain", banner: str = "nginx/1.2") -> Callable[[str, str], Answer | None]:
    """A site whose OpenAPI lists `route` (its page shows a traceback, so the route
    is in a failed finding) and whose every answer carries `banner` as `Server`."""
    document = json.dumps({"openapi": "3.1.0", "paths": {route: {"get": {}}}}).encode()

    def handler(method: str, path: str) -> Answer | None:
        server = ("server", banner)
        if path == "/openapi.json":
            return 200, (("content-type", "application/json"), server), document
        if path == "/":
            return 200, (HTML, server), b"<p>home</p>"
        return 500, (HTML, server), TRACEBACK

    return handler


async def _audit(handler: Callable[[str, str], Answer | None]) -> AuditReport:
    async with hostile_server(handler) as target:
        return await run_audit(
            URLTarget(f"http://{target.authority}", timeout_seconds=5), max_requests=300
        )


def _strings(value: object) -> Iterator[str]:
    """Every string in a decoded JSON document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# Said here again rather than imported, so the check does not share a mistake with
# the code it checks: controls, format characters, surrogates, private use,
# unassigned, line and paragraph separators, and the Hangul filler used above.
_UNSEEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _visible(output: str) -> None:
    """No character a reader cannot see as itself, but the lines' own newlines."""
    hidden = sorted(
        f"U+{ord(c):04X}"
        for c in set(output)
        if c != "\n" and (unicodedata.category(c) in _UNSEEN_CATEGORIES or c == "\u3164")
    )
    assert hidden == [], hidden


# ---------------------------------------------------------------------------
# Invisible and reordering characters, in every format


# (route the site lists, as the text shows it, as the JSON reads back)
ROUTES = [
    pytest.param("/\u202eexe.txt", "\\u202eexe.txt", id="audit-report-bidi-override"),
    pytest.param("/a\u2067b\u2069c", "a\\u2067b\\u2069c", id="audit-report-bidi-isolate"),
    pytest.param("/ad\u200bmin\ufeff", "ad\\u200bmin\\ufeff", id="audit-report-zero-width"),
    pytest.param("/x\U000e0041y", "x\\U000e0041y", id="audit-report-tag-character"),
    pytest.param("/h\u3164i", "h\\u3164i", id="audit-report-hangul-filler"),
    pytest.param("/line\u2028sep", "line\\u2028sep", id="audit-report-line-separator"),
    pytest.param("/plain", "/plain", id="audit-report-plain-route-ok"),
    pytest.param("/caf\u00e9", "/caf\u00e9", id="audit-report-accented-route-ok"),
]


@pytest.mark.parametrize(("route", "shown"), ROUTES)
async def test_the_target_s_routes_are_shown_inert(route: str, shown: str) -> None:
    report = await _audit(_site(route=route))
    [finding] = [f for f in report.failed if f.check == "leakage.error-page"]
    assert finding.route == f"GET {route}"  # the finding itself keeps the route as sent
    for output_format, render in RENDERERS.items():
        output = render([report])
        _visible(output)
        if output_format == "json":
            # The document says exactly what was seen, written inert.
            assert parse_json(output) == [report]
            continue
        if output_format == "sarif":
            # Written ASCII-only: what a code-scanning page shows is the decoded text.
            output = "\n".join(_strings(json.loads(output)))
            _visible(output)
        assert shown in output, output_format


# (Server banner, as the JSON's text shows it)
BANNERS = [
    pytest.param("nginx/1.2 \x9b2J", "\\u009b2J", id="audit-json-c1-csi"),
    pytest.param("nginx/1.2 \x1b]0;owned\x07", "\\u001b]0;owned\\u0007", id="audit-json-osc"),
    pytest.param("nginx/1.2 ad\xadmin", "ad\\u00admin", id="audit-json-soft-hyphen"),
    pytest.param("nginx/1.2 \x7f", "\\u007f", id="audit-json-delete"),
    pytest.param("nginx/1.2", "nginx/1.2", id="audit-json-plain-banner-ok"),
]


@pytest.mark.parametrize(("banner", "shown"), BANNERS)
async def test_json_writes_the_banner_inert_and_reads_it_back(banner: str, shown: str) -> None:
    """Headers come as latin-1: the C1 controls and the soft hyphen are the format
    and control characters a header can carry. `json.dumps(ensure_ascii=False)`
    wrote them raw, and `cat report.json` obeyed them."""
    report = await _audit(_site(banner=banner))
    output = render_json([report])
    _visible(output)
    assert shown in output
    [finding] = [f for f in parse_json(output)[0].failed if f.check == "leakage.server-banner"]
    assert finding.evidence.endswith(f"server: {banner}")


async def test_a_lone_surrogate_from_openapi_is_reported_not_raised() -> None:
    """A JSON document can carry half a surrogate pair, which no output encoding can
    write: the audit drops the route (no request can carry it), names it in
    `skipped`, and every report shows it escaped."""
    document = b'{"paths": {"/a\\ud800": {"get": {}}}}'

    def handler(method: str, path: str) -> Answer | None:
        if path == "/openapi.json":
            return 200, (("content-type", "application/json"),), document
        return None

    report = await _audit(handler)
    assert "GET /a\ud800" not in report.routes
    assert [s for s in report.skipped if "/a\ud800" in s] == [
        "discovery: GET /a\ud800: not a path a request can carry (a space, a control "
        "character or invalid Unicode); not probed"
    ]
    for render in RENDERERS.values():
        output = render([report])
        output.encode("utf-8")  # printable, and writable to any UTF-8 stream
        _visible(output)
    assert parse_json(render_json([report])) == [report]


# ---------------------------------------------------------------------------
# SARIF: what a code-scanning page would make of the evidence


def _unescaped(text: str) -> list[str]:
    """What in a SARIF plain-text message would act: `[` (embedded link, section
    3.11.6), `<` (HTML, autolink), `&` (character reference), a single brace
    (placeholder, section 3.11.5). A backslash escapes the character after it."""
    acting: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char in "{}":
            if text[index + 1 : index + 2] != char:
                acting.append(char)
            index += 2
            continue
        if char in "[<&":
            acting.append(char)
        index += 1
    return acting


def _banner_message(report: AuditReport) -> str:
    log = json.loads(render_sarif([report], tool_version="0.1.0"))
    VALIDATOR.validate(log)
    [result] = [r for r in log["runs"][0]["results"] if r["ruleId"] == "leakage.server-banner"]
    text: str = result["message"]["text"]
    return text


@pytest.mark.parametrize(
    ("banner", "shown"),
    [
        pytest.param(
            "nginx/1.2 [Update now](https://evil.example/fix)",
            "nginx/1.2 \\[Update now\\](https://evil.example/fix)",
            id="audit-sarif-markdown-link",
        ),
        pytest.param(
            "nginx/1.2 \\[Update now](https://evil.example/fix)",
            "nginx/1.2 \\\\\\[Update now\\](https://evil.example/fix)",
            id="audit-sarif-link-escape-undone",
        ),
        pytest.param(
            "nginx/1.2 ![x](https://evil.example/pixel.png)",
            "nginx/1.2 !\\[x\\](https://evil.example/pixel.png)",
            id="audit-sarif-markdown-image",
        ),
        pytest.param(
            'nginx/1.2 <a href="https://evil.example">fixed</a>',
            'nginx/1.2 \\<a href="https://evil.example">fixed\\</a>',
            id="audit-sarif-html-link",
        ),
        pytest.param(
            "nginx/1.2 <https://evil.example>",
            "nginx/1.2 \\<https://evil.example>",
            id="audit-sarif-autolink",
        ),
        pytest.param(
            "nginx/1.2 &#x202e;gnp.exe",
            "nginx/1.2 \\&#x202e;gnp.exe",
            id="audit-sarif-entity-bidi",
        ),
        pytest.param("nginx/1.2 {0}", "nginx/1.2 {{0}}", id="audit-sarif-placeholder"),
        pytest.param(
            "nginx/1.2 \x9b2J\xad", "nginx/1.2 \\x9b2J\\xad", id="audit-sarif-c1-and-soft-hyphen"
        ),
        pytest.param(
            "nginx/1.2 (Ubuntu) mod_ssl/2.4",
            "nginx/1.2 (Ubuntu) mod_ssl/2.4",
            id="audit-sarif-plain-banner-ok",
        ),
    ],
)
async def test_sarif_messages_cannot_link_or_hide(banner: str, shown: str) -> None:
    text = _banner_message(await _audit(_site(banner=banner)))
    assert text.startswith("Failed: Server and X-Powered-By headers name no version. Evidence: ")
    assert text.endswith(f"answered with server: {shown}")
    assert _unescaped(text) == []
    _visible(text)


@pytest.mark.parametrize(
    ("banner", "cut"),
    [
        pytest.param("nginx/1.2 " + "A" * 8000, True, id="audit-sarif-long-evidence"),
        pytest.param("nginx/1.2 " + "[" * 3000, True, id="audit-sarif-long-escaped-evidence"),
        pytest.param("nginx/1.2 " + "A" * 100, False, id="audit-sarif-short-evidence-ok"),
    ],
)
async def test_sarif_evidence_is_bounded(banner: str, cut: bool) -> None:
    text = _banner_message(await _audit(_site(banner=banner)))
    evidence = text.split(" Evidence: ", 1)[1]
    assert len(evidence) <= SARIF_TEXT_CHARS + len(CUT_MARK)
    assert evidence.endswith(CUT_MARK) is cut
    assert _unescaped(text) == []  # no escape cut in two
    # The JSON report keeps the whole evidence.


async def test_sarif_locations_and_notifications_show_routes_inert() -> None:
    report = await _audit(_site(route="/\u202e[x](https://evil.example)"))
    log = json.loads(render_sarif([report]))
    VALIDATOR.validate(log)
    run = log["runs"][0]
    [result] = [r for r in run["results"] if r["ruleId"] == "leakage.error-page"]
    uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri.endswith("/%E2%80%AE%5Bx%5D(https://evil.example)")
    assert "\\u202e" in result["message"]["text"]
    assert _unescaped(result["message"]["text"]) == []
    _visible("\n".join(_strings(log)))


@pytest.mark.parametrize(
    ("route", "name"),
    [
        # 493 "a"s after "GET /" leave 2 characters of the 500: the old cut kept the
        # backslash and "u" of the first escape, a broken escape that text after it
        # (the site's own hex digits) would complete into another character.
        pytest.param(
            "GET /" + "a" * 493 + "\u202e" * 3,
            "GET /" + "a" * 493 + CUT_MARK,
            id="audit-sarif-location-name-not-cut-inside-escape",
        ),
        pytest.param(
            "GET /" + "a" * 495,
            "GET /" + "a" * 495,
            id="audit-sarif-location-name-at-limit-ok",
        ),
        pytest.param("GET /\u202ex", "GET /\\u202ex", id="audit-sarif-location-name-short-ok"),
    ],
)
def test_sarif_logical_location_names_are_cut_between_characters(route: str, name: str) -> None:
    """A target that is not a URL (in-process) is located by name: the route, bounded
    like a message's quote, and never cut in the middle of an escape."""
    from tests.audit.test_report import BARE

    finding = Finding(
        check="leakage.error-page",
        title="t",
        severity="high",
        passed=False,
        evidence="e",
        fix="f",
        route=route,
    )
    report = AuditReport(target="myapp:app", grade=BARE.grade, findings=[finding])
    log = json.loads(render_sarif([report]))
    VALIDATOR.validate(log)
    [location] = log["runs"][0]["results"][0]["locations"][0]["logicalLocations"]
    assert location["name"] == name
    assert len(location["name"]) <= SARIF_TEXT_CHARS + len(CUT_MARK)


# ---------------------------------------------------------------------------
# Audited without verifying the certificate


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, as a development server has."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = build_certificate(key, "127.0.0.1", datetime.datetime.now(datetime.UTC))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _server_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    return context


def _stated(output_format: str, output: str) -> bool:
    """Whether a report says its audit did not verify the certificate."""
    if output_format == "json":
        return all(t["insecure_tls"] is True for t in json.loads(output)["targets"])
    if output_format == "sarif":
        run = json.loads(output)["runs"][0]
        notes = run["invocations"][0]["toolExecutionNotifications"]
        return (
            run["properties"].get("insecureTls") is True
            and notes[0] == {"level": "warning", "message": {"text": f"{INSECURE_TLS_NOTE}."}}
            and all(INSECURE_TLS_NOTE in r["message"]["text"] for r in run["results"])
            and all(r["properties"].get("insecureTls") is True for r in run["results"])
        )
    if output_format == "table":
        return "(TLS unverified)" in output and "WARNING" in output
    return INSECURE_TLS_NOTE in output


def _unflagged(output_format: str, output: str) -> bool:
    if output_format == "json":
        return all(t["insecure_tls"] is False for t in json.loads(output)["targets"])
    return (
        "insecureTls" not in output
        and "TLS unverified" not in output
        and "not verified" not in output
    )


@pytest.mark.parametrize(
    ("scheme", "insecure"),
    [
        pytest.param("https", True, id="audit-insecure-stated"),
        pytest.param("http", False, id="audit-plain-http-not-flagged"),
    ],
)
async def test_an_audit_without_certificate_checks_says_so(
    tls_files: tuple[Path, Path], scheme: str, insecure: bool
) -> None:
    """Served over TLS with a self-signed certificate and audited with
    `verify_tls=False`, every format says the grade is unverified; an audit that
    did not turn verification off says nothing of it."""
    tls = _server_context(tls_files) if scheme == "https" else None
    async with hostile_server(_site(), tls=tls) as target:
        report = await run_audit(
            URLTarget(f"{scheme}://{target.authority}", verify_tls=not insecure, timeout_seconds=5),
            max_requests=300,
        )
    assert report.insecure_tls is insecure
    assert report.failed
    for output_format, render in RENDERERS.items():
        output = render([report])
        if insecure:
            assert _stated(output_format, output), output_format
        else:
            assert _unflagged(output_format, output), output_format
    assert parse_json(render_json([report])) == [report]
    VALIDATOR.validate(json.loads(render_sarif([report])))


def test_insecure_report_keeps_the_grade_letter_for_scripts() -> None:
    """The JSON grade stays a letter (scripts compare it); the flag is beside it."""
    from tests.audit.test_report import BARE

    flagged = AuditReport(target=BARE.target, grade=BARE.grade, insecure_tls=True)
    (target,) = json.loads(render_json([flagged]))["targets"]
    assert target["grade"]["letter"] == BARE.grade.letter
    assert target["insecure_tls"] is True
    assert re.search(rf"{BARE.grade.letter} \(TLS unverified\)", render_table([flagged]))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param('"false"', id="audit-json-insecure-tls-as-string"),
        pytest.param("0", id="audit-json-insecure-tls-as-number"),
        pytest.param("null", id="audit-json-insecure-tls-null"),
    ],
)
def test_parse_json_refuses_a_flag_that_is_not_a_boolean(value: str) -> None:
    from tests.audit.test_report import BARE

    text = render_json([BARE]).replace('"insecure_tls": false', f'"insecure_tls": {value}')
    with pytest.raises(ValueError, match="insecure_tls"):
        parse_json(text)


def test_parse_json_reads_documents_without_the_flag() -> None:
    from tests.audit.test_report import BARE

    text = render_json([BARE]).replace('  "insecure_tls": false,\n', "")
    assert "insecure_tls" not in text
    assert parse_json(text) == [BARE]


# --- through the command line ----------------------------------------------------


class _Page(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = b"<p>home</p>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _threaded_tls_server(tls_files: tuple[Path, Path]) -> Iterator[str]:
    """A TLS server in a thread: the command runs its own event loop."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    server.socket = _server_context(tls_files).wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("output_format", ["table", "json", "sarif"])
def test_cli_audit_insecure_stated(tls_files: tuple[Path, Path], output_format: str) -> None:
    with _threaded_tls_server(tls_files) as url:
        result = CliRunner().invoke(
            app, ["audit", url, "--insecure", "--format", output_format, "--max-requests", "200"]
        )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert _stated(output_format, result.stdout)


def test_cli_audit_verifies_tls_by_default(tls_files: tuple[Path, Path]) -> None:
    """Without --insecure the self-signed certificate is refused: nothing is graded."""
    with _threaded_tls_server(tls_files) as url:
        result = CliRunner().invoke(app, ["audit", url])
    assert result.exit_code == 2
    assert "cannot audit" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
