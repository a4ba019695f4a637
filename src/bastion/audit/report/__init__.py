"""The audit, written out: a table for people, JSON for scripts, SARIF for code scanning,
one HTML file to hand around.

Threat: a finding nobody sees or nobody can act on, because the output hides it, a tool
cannot read it, or the report itself becomes an attack. Findings quote what the audited
site sent (header values, cookie attributes, script URLs, its routes), and that text is
chosen by whoever controls the site: in a terminal it could carry Rich markup or escape
sequences, in the HTML report markup and script, in a code-scanning page a link; and
anywhere a bidi override that makes the report read otherwise than it says. A grade
from an audit that did not verify TLS certificates may describe whoever answered.
Defence: every writer takes a list of `AuditReport` (one target, or two side by side) and
shows every failed finding with its check id, route, severity and fix, in the order
`common` decides once; every writer shows the target's text through `escape`, and says
when an audit ran without certificate verification (`common.INSECURE_TLS_NOTE`).

* `escape`: what a reader cannot see as itself, shown as `\\x1b`, `\\u202e`; JSON
  written with those characters escaped; SARIF message text bounded and inert.
* `table.render_table`: Rich tables; every cell is a `Text`, never markup, invisible
  characters escaped; no colour unless the output is a terminal.
* `json.render_json`: the keys documented in `JSON_KEYS`, stable; `parse_json` reads
  it back.
* `sarif.render_sarif`: SARIF 2.1.0, one run per target, one rule per check id, one
  result per failed finding, each with a location.
* `html.render_html`: one self-contained file: no external resource, no script, every
  text escaped, and its own CSP.

Not covered: paging or filtering big reports; localisation.

References: SARIF 2.1.0 (OASIS Standard, errata 01)
https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/sarif-v2.1.0-errata01-os-complete.html ;
HTML escaping: OWASP XSS Prevention Cheat Sheet, rule 1; Unicode UAX #9 (bidi) and
Trojan Source (CVE-2021-42574) https://trojansource.codes/
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
