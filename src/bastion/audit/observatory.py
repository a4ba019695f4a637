"""Header grading the way the MDN HTTP Observatory grades (interface; being written)."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.audit.findings import Finding, Grade


@dataclass(frozen=True, slots=True)
class Observation:
    """What the auditor saw of one page, the input of the grade."""

    url: str
    """The URL of the page graded, after redirects (`https://host/`)."""
    status: int
    headers: tuple[tuple[str, str], ...]
    """Response headers as received: names lower-case, repeats kept (`set-cookie`)."""
    body: str
    """The decoded body text, at most 1 MiB (HTML for `<meta>` CSP and SRI)."""
    cors_headers: tuple[tuple[str, str], ...] = ()
    """Headers of the same GET sent with a foreign `Origin`."""
    http_redirects: tuple[tuple[str, int], ...] | None = None
    """The chain followed from the `http://` URL, one `(url, status)` per response,
    ending at the final page; None when plain HTTP was not probed."""


def grade(observation: Observation) -> Grade:
    raise NotImplementedError


def grade_findings(result: Grade) -> list[Finding]:
    """One `Finding` per Observatory test (`headers.<test-name>`), passed or failed."""
    raise NotImplementedError
