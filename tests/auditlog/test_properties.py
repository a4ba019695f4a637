"""Property: any single-byte change anywhere in the files (checkpoint included) is found."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.auditlog import LogFile, verify_files
from tests.auditlog.support import KEY_A, read_all, write_log


def _build() -> tuple[list[LogFile], bytes]:
    with tempfile.TemporaryDirectory() as directory:
        path = write_log(Path(directory) / "audit.log", 10, max_bytes=1500)
        return read_all(path)


FILES, HEAD = _build()
assert len(FILES) >= 3  # rotated across files


def _verify(files: list[LogFile], head: bytes) -> bool:
    return verify_files(files, [KEY_A], checkpoint=head, require_checkpoint=True).ok


def test_the_untouched_files_verify() -> None:
    assert _verify(FILES, HEAD)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_is_detected(data: st.DataObject) -> None:
    blobs = [f.data for f in FILES] + [HEAD]
    which = data.draw(st.integers(0, len(blobs) - 1), label="file")
    position = data.draw(st.integers(0, len(blobs[which]) - 1), label="position")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != blobs[which][position]))
    changed = bytearray(blobs[which])
    changed[position] = new
    blobs[which] = bytes(changed)
    files = [LogFile(f.name, blob) for f, blob in zip(FILES, blobs[:-1], strict=True)]
    assert not _verify(files, blobs[-1])


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_deleted_byte_range_is_detected(data: st.DataObject) -> None:
    which = data.draw(st.integers(0, len(FILES) - 1), label="file")
    blob = FILES[which].data
    start = data.draw(st.integers(0, len(blob) - 1), label="start")
    end = data.draw(st.integers(start + 1, len(blob)), label="end")
    files = list(FILES)
    files[which] = LogFile(FILES[which].name, blob[:start] + blob[end:])
    assert not _verify(files, HEAD)
