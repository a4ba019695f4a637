"""The audit, written out: a table for people, JSON for scripts, SARIF for code scanning,
one HTML file to hand around.

Threat: a finding nobody sees or nobody can act on, because the output hides it, a tool
cannot read it, or the report itself becomes an attack. Findings quote what the audited
site sent (header values, cookie attributes, script URLs), and that text is chosen by
whoever controls the site: in a terminal it could carry Rich markup, in the HTML report
it could carry markup and script.
Defence: every writer takes a list of `AuditReport` (one target, or two side by side) and
shows every failed finding with its check id, route, severity and fix, in the order
`common` decides once.

* `table.render_table`: Rich tables; every cell is a `Text`, never markup, control
  characters shown as `\\xNN`; no colour unless the output is a terminal.
* `json.render_json`: the keys documented in `JSON_KEYS`, stable; `parse_json` reads
  it back.
* `sarif.render_sarif`: SARIF 2.1.0, one run per target, one rule per check id, one
  result per failed finding, each with a location.
* `html.render_html`: one self-contained file: no external resource, no script, every
  text escaped, and its own CSP.

Not covered: paging or filtering big reports; localisation.

References: SARIF 2.1.0 (OASIS Standard, errata 01)
https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/sarif-v2.1.0-errata01-os-complete.html ;
HTML escaping: OWASP XSS Prevention Cheat Sheet, rule 1.
"""

from __future__ import annotations

from bastion.audit.report.html import render_html
from bastion.audit.report.json import JSON_FORMAT, JSON_KEYS, parse_json, render_json, report_dict
from bastion.audit.report.sarif import (
    SARIF_LEVEL,
    SARIF_SCHEMA,
    SECURITY_SEVERITY,
    TOOL_NAME,
    render_sarif,
)
from bastion.audit.report.table import TABLE_WIDTH, render_table

__all__ = [
    "JSON_FORMAT",
    "JSON_KEYS",
    "SARIF_LEVEL",
    "SARIF_SCHEMA",
    "SECURITY_SEVERITY",
    "TABLE_WIDTH",
    "TOOL_NAME",
    "parse_json",
    "render_html",
    "render_json",
    "render_sarif",
    "render_table",
    "report_dict",
]
