"""The report writers: table, JSON, SARIF (validated against the official schema), HTML.

`fixtures/sarif-schema-2.1.0.json` is the OASIS SARIF 2.1.0 schema (errata 01, as in
oasis-tcs/sarif-spec `Schemata/sarif-schema-2.1.0.json`), unmodified.
"""

from __future__ import annotations

import base64
import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest

from bastion.audit.findings import AuditReport, Finding
from bastion.audit.observatory import Observation, grade, grade_findings
from bastion.audit.report import (
    JSON_FORMAT,
    JSON_KEYS,
    parse_json,
    render_html,
    render_json,
    render_sarif,
    render_table,
)
from bastion.audit.report.escape import sarif_text
from bastion.deps.osv import Finding as DepFinding
from bastion.deps.osv import Report as DepReport
from bastion.deps.report import render_sarif as render_deps_sarif

SCHEMA = json.loads(
    (Path(__file__).parent / "fixtures" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8")
)
VALIDATOR = jsonschema.Draft4Validator(SCHEMA)

EVIL = "<script>alert(1)</script>[bold red]boom[/bold red]\x1b[31m"
HTML = ("content-type", "text/html")


def _report(target: str, *headers: tuple[str, str]) -> AuditReport:
    observation = Observation(
        url="https://testserver/", status=200, headers=(HTML, *headers), body="<p>x</p>"
    )
    result = grade(observation)
    probe = Finding(
        check="csrf.cross-site-post",
        title=f"Cross-site POST accepted {EVIL}",
        severity="critical",
        passed=False,
        evidence=f"POST /transfer origin: {EVIL}",
        fix="Keep the csrf layer on.",
        route="POST /transfer",
        references=("https://owasp.org/www-community/attacks/csrf",),
    )
    passed = Finding(
        check="hosts.unlisted-host",
        title="Unlisted Host refused",
        severity="high",
        passed=True,
        evidence="GET / host: evil.example -> 400",
        fix="transport.allowed_hosts",
        route="GET /",
    )
    return AuditReport(
        target=target,
        grade=result,
        findings=[*grade_findings(result), probe, passed],
        routes=["GET /", "POST /transfer"],
        requests_sent=42,
        duration_seconds=1.5,
        skipped=["sessions: no login recipe", f"jwt: expired token {EVIL}"],
    )


BARE = _report("https://bare.example", ("x-frame-options", EVIL))
HARDENED = _report(
    "demo (protected)",
    ("content-security-policy", "default-src 'self'; frame-ancestors 'none'"),
    ("strict-transport-security", "max-age=31536000"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-resource-policy", "same-origin"),
)
REPORT_SETS = [
    pytest.param([BARE], id="one-target"),
    pytest.param([HARDENED], id="one-target-not-a-url"),
    pytest.param([BARE, HARDENED], id="two-targets"),
    pytest.param([], id="no-target"),
]


# --- SARIF -------------------------------------------------------------------------


@pytest.mark.parametrize("reports", REPORT_SETS)
def test_sarif_is_valid_2_1_0(reports: list[AuditReport]) -> None:
    log = json.loads(render_sarif(reports, tool_version="0.1.0"))
    VALIDATOR.validate(log)
    assert len(log["runs"]) == len(reports)
    for run, report in zip(log["runs"], reports, strict=True):
        rules = run["tool"]["driver"]["rules"]
        rule_ids = [rule["id"] for rule in rules]
        assert len(rule_ids) == len(set(rule_ids)) == len({f.check for f in report.findings})
        for rule in rules:
            assert rule["shortDescription"]["text"]
            assert rule["fullDescription"]["text"]
            assert rule["help"]["text"]
        assert len(run["results"]) == len(report.failed)
        for result in run["results"]:
            assert rule_ids[result["ruleIndex"]] == result["ruleId"]
            assert result["locations"]
            assert result["properties"]["grade"] == report.grade.letter
            assert result["properties"]["score"] == report.grade.score


def test_sarif_levels_and_locations() -> None:
    log = json.loads(render_sarif([BARE, HARDENED]))
    bare, hardened = log["runs"]
    by_rule = {r["ruleId"]: r for r in bare["results"]}
    csrf = by_rule["csrf.cross-site-post"]
    assert csrf["level"] == "error"
    assert csrf["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "https://bare.example/transfer"
    )
    assert by_rule["headers.content-security-policy"]["level"] == "error"  # high
    assert by_rule["headers.x-content-type-options"]["level"] == "warning"  # medium
    assert "hosts.unlisted-host" not in by_rule  # passed: a rule, no result
    whole = by_rule["headers.strict-transport-security"]["locations"][0]
    assert whole["physicalLocation"]["artifactLocation"]["uri"] == "https://bare.example/"
    logical = {r["ruleId"]: r for r in hardened["results"]}["csrf.cross-site-post"]
    assert logical["locations"][0]["logicalLocations"][0]["name"] == "POST /transfer"


def test_sarif_runs_are_distinct_and_say_what_was_not_tested() -> None:
    log = json.loads(render_sarif([BARE, HARDENED]))
    VALIDATOR.validate(log)
    ids = [run["automationDetails"]["id"] for run in log["runs"]]
    assert ids == ["bastion-audit/https-bare-example/", "bastion-audit/demo-protected/"]
    for run, report in zip(log["runs"], [BARE, HARDENED], strict=True):
        [invocation] = run["invocations"]
        notes = invocation["toolExecutionNotifications"]
        assert [n["level"] for n in notes] == ["note"] * len(report.skipped)
        assert [n["message"]["text"] for n in notes] == [
            f"Not tested: {sarif_text(reason)}" for reason in report.skipped
        ]
        assert notes[0]["message"]["text"] == "Not tested: sessions: no login recipe"
        for result in run["results"]:
            assert result["message"]["text"].startswith("Failed: ")
            assert " Evidence: " in result["message"]["text"]


def test_deps_sarif_is_valid_2_1_0_with_locations() -> None:
    findings = [
        DepFinding("GHSA-1", ("CVE-1",), "lib", "1.0", ("1.1",), "critical", "Bad thing"),
        DepFinding("PYSEC-2", (), "other", "0.1", (), "unknown", ""),
    ]
    log = json.loads(render_deps_sarif(DepReport(findings=findings), tool_version="0.1.0"))
    VALIDATOR.validate(log)
    locations = [r["locations"][0]["logicalLocations"][0] for r in log["runs"][0]["results"]]
    assert [loc["fullyQualifiedName"] for loc in locations] == ["lib==1.0", "other==0.1"]
    VALIDATOR.validate(json.loads(render_deps_sarif(DepReport())))


def test_the_schema_rejects_a_broken_log() -> None:
    # The validator is live: a result without a message is refused.
    log = json.loads(render_sarif([BARE]))
    del log["runs"][0]["results"][0]["message"]
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(log)


# --- JSON --------------------------------------------------------------------------


@pytest.mark.parametrize("reports", REPORT_SETS)
def test_json_round_trip(reports: list[AuditReport]) -> None:
    text = render_json(reports)
    assert parse_json(text) == reports
    document = json.loads(text)
    assert document["format"] == JSON_FORMAT
    keys = {f"targets[].{key}" for target in document["targets"] for key in target}
    assert keys | {"format", "targets"} <= set(JSON_KEYS)


def test_json_summary() -> None:
    (target,) = json.loads(render_json([BARE]))["targets"]
    assert target["grade"]["letter"] == BARE.grade.letter
    assert target["summary"]["failed"] == len(BARE.failed)
    assert target["summary"]["failed_by_severity"]["critical"] == 1
    assert set(target["summary"]["failed_by_severity"]) == {
        "critical",
        "high",
        "medium",
        "low",
        "info",
    }


def test_json_refuses_other_documents() -> None:
    with pytest.raises(ValueError, match="bastion-audit"):
        parse_json('{"format": "other", "targets": []}')


# --- table -------------------------------------------------------------------------


def test_table_shows_grades_and_failed_findings() -> None:
    text = render_table([BARE])
    # No colour, and the site's terminal escape is shown, not obeyed.
    assert "\x1b" not in text
    assert "\\x1b[31m" in text
    assert f"{BARE.grade.letter}" in text
    assert "csrf.cross-site-post" in text
    assert "POST /transfer" in text
    assert "hosts.unlisted-host" not in text  # passed checks are not listed
    # Markup from the audited site prints as typed, never as style.
    assert "boom[/bold" in text
    assert max(len(line) for line in text.splitlines()) <= 120


def test_table_lists_what_was_not_tested() -> None:
    many = AuditReport(target="many", grade=BARE.grade, skipped=[f"reason {n}" for n in range(20)])
    text = render_table([BARE, many])
    assert "Not tested (https://bare.example):" in text
    assert "sessions: no login recipe" in text
    assert "\x1b" not in text  # a skip reason quoting the target is shown inert
    assert "reason 0" in text
    assert "reason 19" not in text
    assert "and 12 more" in text
    assert "Not tested" not in render_table([AuditReport(target="x", grade=BARE.grade)])


def test_table_two_targets_side_by_side() -> None:
    text = render_table([BARE, HARDENED])
    assert "Side by side" in text
    (row,) = [
        line
        for line in text.splitlines()
        if "headers.content-security-policy" in line and "FAIL high" in line
    ]
    assert row.rstrip(" │").endswith("pass")


def test_table_in_colour_for_a_terminal() -> None:
    assert "\x1b[" in render_table([BARE], color=True)


# --- HTML --------------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.grades: list[str] = []
        self._in_grade = False
        self.texts: list[str] = []
        self.meta_csp = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        attributes = dict(attrs)
        for name in ("src", "href", "action", "xlink:href", "data", "poster"):
            if attributes.get(name):
                self.urls.append(str(attributes[name]))
        self._in_grade = attributes.get("class") == "grade"
        if (attributes.get("http-equiv") or "").lower() == "content-security-policy":
            self.meta_csp = attributes.get("content") or ""

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._in_grade:
            self.grades.append(data)
            self._in_grade = False


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


@pytest.mark.parametrize("reports", REPORT_SETS)
def test_html_is_self_contained_and_escaped(reports: list[AuditReport]) -> None:
    page = render_html(reports)
    parsed = _parse(page)
    assert parsed.urls == []  # nothing to fetch: no src, href, action
    assert "script" not in parsed.tags
    assert "link" not in parsed.tags
    assert "http://" not in page.split("</style>")[0].split("<style>")[-1]  # no @import
    assert "<script>alert(1)</script>" not in page
    assert parsed.meta_csp.startswith("default-src 'none'")
    assert parsed.grades == [r.grade.letter for r in reports]
    if reports:
        # The hostile text is there, as text.
        assert any("<script>alert(1)</script>" in text for text in parsed.texts)
        assert "svg" in parsed.tags


def test_html_lists_what_was_not_tested() -> None:
    page = render_html([BARE])
    assert "<h2>Not tested: https://bare.example</h2>" in page
    assert "<li>sessions: no login recipe</li>" in page
    assert "<script>alert" not in page


def test_html_two_targets_compare() -> None:
    parsed = _parse(render_html([BARE, HARDENED]))
    texts = " ".join(parsed.texts)
    assert "Side by side" in texts
    assert "https://bare.example" in texts
    assert "demo (protected)" in texts


def test_html_style_hash_matches_the_policy() -> None:
    page = render_html([BARE])
    css = page.split("<style>", 1)[1].split("</style>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in _parse(page).meta_csp
