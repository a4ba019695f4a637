"""Where advisories and packages come from: installed distributions, a local OSV
export (a directory or a zip), or the osv.dev API.

Threat: an export or an API answer is data from outside, and hostile: oversized
files, a zip bomb, paths that climb out of a directory, ids that rewrite a URL.
Defence: every file and answer is read with a byte cap, the number of files and
advisories is capped, a zip is read member by member in memory (never extracted, so
no path traversal or zip bomb on disk), and advisory ids from the API are validated
before they become part of a URL. The batch endpoint answers with ids only; each
advisory is fetched in full and matched locally, so the verdict never rests on the
server's matching alone. Redirects are not followed.

Not covered: an OSV server that lies (omits an advisory); vendored code and packages
not installed as distributions.

References: osv.dev API https://google.github.io/osv.dev/post-v1-querybatch/ ;
OSV schema https://ossf.github.io/osv-schema/ .
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from bastion.deps.osv import (
    ADVISORY_ID,
    ECOSYSTEM,
    Advisory,
    Installed,
    Report,
    normalise_name,
    parse_documents,
    shown,
)

# The osv.dev PyPI export holds about twenty thousand advisories; ten times that
# bounds a hostile or mistaken directory without refusing any real export.
MAX_ADVISORY_FILES: Final = 200_000
# The largest real advisories (long explicit `versions` lists) are a few hundred KiB.
MAX_ADVISORY_BYTES: Final = 4 * 1024 * 1024
# The whole PyPI export is well under 200 MiB uncompressed; this stops a zip bomb.
MAX_EXPORT_BYTES: Final = 1024 * 1024 * 1024
# osv.dev accepts at most 1000 queries per querybatch request.
QUERYBATCH_SIZE: Final = 1000
# A querybatch answer carries only ids; 16 MiB is far above 1000 packages' worth.
MAX_BATCH_RESPONSE_BYTES: Final = 16 * 1024 * 1024
# Advisories fetched one by one after the batch; more means a broken or hostile answer.
MAX_ONLINE_ADVISORIES: Final = 5_000
# Pages per query (`next_page_token`); osv.dev pages only very large result sets.
MAX_PAGES: Final = 10
NETWORK_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_OSV_API: Final = "https://api.osv.dev"


class OSVUnavailable(Exception):
    """The OSV API could not be queried (network, status, size or format)."""


# --- I/O: installed distributions, local exports, the OSV API ------------------------


def installed_distributions() -> list[Installed]:
    from importlib.metadata import distributions

    found: dict[str, Installed] = {}
    for dist in distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if isinstance(name, str) and name and dist.version:
            found.setdefault(normalise_name(name), Installed(normalise_name(name), dist.version))
    return sorted(found.values(), key=lambda d: d.name)


def _read_export(path: Path, report: Report) -> Iterator[tuple[str, bytes]]:
    """Raw advisory documents from a directory of JSON files or a zip of them."""
    total = 0
    if path.is_dir():
        members = sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file())
        if len(members) > MAX_ADVISORY_FILES:
            raise ValueError(f"{path}: more than {MAX_ADVISORY_FILES} advisory files")
        for member in members:
            with member.open("rb") as handle:
                raw = handle.read(MAX_ADVISORY_BYTES + 1)
            if len(raw) > MAX_ADVISORY_BYTES:
                report.warnings.append(f"skipped oversized advisory {shown(member.name)}")
                continue
            total += len(raw)
            if total > MAX_EXPORT_BYTES:
                raise ValueError(f"{path}: export larger than {MAX_EXPORT_BYTES} bytes")
            yield member.name, raw
        return
    with zipfile.ZipFile(path) as archive:
        infos = [i for i in archive.infolist() if i.filename.endswith(".json")]
        if len(infos) > MAX_ADVISORY_FILES:
            raise ValueError(f"{path}: more than {MAX_ADVISORY_FILES} advisory files")
        for info in infos:
            # `file_size` is what the archive claims; the capped read is what we trust.
            with archive.open(info) as handle:
                raw = handle.read(MAX_ADVISORY_BYTES + 1)
            if len(raw) > MAX_ADVISORY_BYTES:
                report.warnings.append(f"skipped oversized advisory {shown(info.filename[:100])}")
                continue
            total += len(raw)
            if total > MAX_EXPORT_BYTES:
                raise ValueError(f"{path}: export larger than {MAX_EXPORT_BYTES} bytes")
            yield info.filename[:100], raw


def load_export(path: Path, report: Report) -> dict[str, Advisory]:
    """Advisories from a local OSV export. Raises OSError or ValueError if unreadable."""
    try:
        return parse_documents(_read_export(path, report), report)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not a directory or a zip of OSV advisories") from exc


def _read_capped(response: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise OSVUnavailable(f"answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def query_osv(
    packages: Sequence[Installed], report: Report, *, base_url: str = DEFAULT_OSV_API
) -> dict[str, Advisory]:
    """Ask osv.dev which advisories affect `packages`, then fetch each advisory.

    The batch endpoint answers with ids only; each advisory is fetched in full and
    matched locally, so the verdict never rests on the server's matching alone.
    Raises OSVUnavailable on any network, status, size or format failure.
    """
    import httpx

    base = base_url.rstrip("/")
    ids: set[str] = set()
    try:
        with httpx.Client(timeout=NETWORK_TIMEOUT_SECONDS, follow_redirects=False) as client:

            def post(body: Mapping[str, Any]) -> Any:
                with client.stream("POST", f"{base}/v1/querybatch", json=body) as response:
                    response.raise_for_status()
                    return json.loads(_read_capped(response, MAX_BATCH_RESPONSE_BYTES))

            for start in range(0, len(packages), QUERYBATCH_SIZE):
                pending: list[dict[str, Any]] = [
                    {"package": {"name": p.name, "ecosystem": ECOSYSTEM}, "version": p.version}
                    for p in packages[start : start + QUERYBATCH_SIZE]
                ]
                for _ in range(MAX_PAGES):
                    answer = post({"queries": pending})
                    results = answer.get("results") if isinstance(answer, dict) else None
                    if not isinstance(results, list) or len(results) != len(pending):
                        raise OSVUnavailable("querybatch answer has the wrong shape")
                    again: list[dict[str, Any]] = []
                    for query, result in zip(pending, results, strict=True):
                        vulns = result.get("vulns", []) if isinstance(result, dict) else None
                        if not isinstance(vulns, list):
                            raise OSVUnavailable("querybatch answer has the wrong shape")
                        for vuln in vulns:
                            vuln_id = vuln.get("id") if isinstance(vuln, dict) else None
                            if not isinstance(vuln_id, str) or not ADVISORY_ID.match(vuln_id):
                                raise OSVUnavailable("querybatch answer has an invalid id")
                            ids.add(vuln_id)
                        token = result.get("next_page_token")
                        if isinstance(token, str) and token:
                            again.append({**query, "page_token": token})
                    if not again:
                        break
                    pending = again
                if len(ids) > MAX_ONLINE_ADVISORIES:
                    raise OSVUnavailable(f"more than {MAX_ONLINE_ADVISORIES} advisories")
            documents: list[tuple[str, bytes]] = []
            for vuln_id in sorted(ids):
                with client.stream("GET", f"{base}/v1/vulns/{vuln_id}") as response:
                    response.raise_for_status()
                    documents.append((vuln_id, _read_capped(response, MAX_ADVISORY_BYTES)))
    except httpx.HTTPError as exc:
        raise OSVUnavailable(f"{type(exc).__name__}: {exc}") from None
    except ValueError:
        raise OSVUnavailable("the answer is not valid JSON") from None
    return parse_documents(documents, report)
