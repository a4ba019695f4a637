"""Known-vulnerable dependencies: installed distributions checked against OSV advisories.

Threat: the application (or Bastion itself) runs a library version with a published
vulnerability, and nobody notices because nothing in the deploy pipeline looks.
Defence: list the installed distributions, match them against OSV advisories (a local
export, or the osv.dev API), and report each hit with its fixed versions and severity,
as a table, JSON or SARIF, with an exit code CI can gate on.

Hostile input: an export or an API answer is data from outside. Every file and answer
is read with a byte cap, the number of files and advisories is capped, a zip is read
member by member in memory (never extracted, so no path traversal or zip bomb on disk),
and a malformed advisory is skipped with a warning, never a crash. Advisory ids from
the API are validated before they become part of a URL.
Fail closed: a finding whose severity is unknown counts as meeting any `--fail-on`
threshold, because we cannot show it is below it; a withdrawn advisory is ignored.

The package reads in this order:

* `severity` the severity of an advisory (CVSS v3) and the `--fail-on` threshold;
* `osv`      the data types, advisory parsing, range evaluation and matching;
* `sources`  installed distributions, a local OSV export, the osv.dev API;
* `report`   the findings as a table, JSON or SARIF.

Not covered: vendored code, non-PyPI ecosystems, `GIT` ranges, CVSS v4 scoring (a v4
vector alone gives severity "unknown"), reachability of the vulnerable code.

References: OSV schema https://ossf.github.io/osv-schema/ (section "Evaluation" for
the range algorithm); osv.dev API https://google.github.io/osv.dev/post-v1-querybatch/ ;
PEP 503 (name normalisation); PEP 440 (versions); CVSS v3.1 specification
https://www.first.org/cvss/v3.1/specification-document sections 5 and 7, Appendix A;
SARIF 2.1.0 https://docs.oasis-open.org/sarif/sarif/v2.1.0/sarif-v2.1.0.html
"""

from __future__ import annotations

from bastion.deps.osv import (
    ECOSYSTEM,
    Advisory,
    AdvisoryError,
    AffectedPackage,
    Event,
    Finding,
    Installed,
    Report,
    in_range,
    is_affected,
    match,
    normalise_name,
    parse_advisory,
    parse_documents,
)
from bastion.deps.report import (
    SARIF_SCHEMA,
    finding_dict,
    render_json,
    render_sarif,
    render_table,
)
from bastion.deps.severity import (
    Severity,
    Threshold,
    cvss3_base_score,
    meets_threshold,
    severity_from_score,
    severity_of,
)
from bastion.deps.sources import (
    DEFAULT_OSV_API,
    MAX_ADVISORY_BYTES,
    MAX_ADVISORY_FILES,
    MAX_BATCH_RESPONSE_BYTES,
    MAX_EXPORT_BYTES,
    MAX_ONLINE_ADVISORIES,
    MAX_PAGES,
    NETWORK_TIMEOUT_SECONDS,
    QUERYBATCH_SIZE,
    OSVUnavailable,
    installed_distributions,
    load_export,
    query_osv,
)

__all__ = [
    "DEFAULT_OSV_API",
    "ECOSYSTEM",
    "MAX_ADVISORY_BYTES",
    "MAX_ADVISORY_FILES",
    "MAX_BATCH_RESPONSE_BYTES",
    "MAX_EXPORT_BYTES",
    "MAX_ONLINE_ADVISORIES",
    "MAX_PAGES",
    "NETWORK_TIMEOUT_SECONDS",
    "QUERYBATCH_SIZE",
    "SARIF_SCHEMA",
    "Advisory",
    "AdvisoryError",
    "AffectedPackage",
    "Event",
    "Finding",
    "Installed",
    "OSVUnavailable",
    "Report",
    "Severity",
    "Threshold",
    "cvss3_base_score",
    "finding_dict",
    "in_range",
    "installed_distributions",
    "is_affected",
    "load_export",
    "match",
    "meets_threshold",
    "normalise_name",
    "parse_advisory",
    "parse_documents",
    "query_osv",
    "render_json",
    "render_sarif",
    "render_table",
    "severity_from_score",
    "severity_of",
]
