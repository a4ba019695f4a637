"""The flow's response-head run (`Flow._edit_start`) against the algorithm it replaced.

`_edit_start` keeps the edited lines in one list and makes a message of its own
only before a message hook and at the end; the run it replaced made that message
at the first edit and wrote every edit into it. This test keeps the earlier run as
the reference (`reference_edit_start`, copied as it was) and holds the two to the
same messages over every sequence of up to four hooks drawn from a table (edits
that change the lines or hand them back, fixed lines, lines unless set, sync and
I/O message hooks, a hook that replaces the message), on application headers in
several shapes (none, lower-case, mixed case, a tuple, the set names present);
and the application's message and list are never changed. `_is_set` is held to
the loop it replaced over names in any case and over names that are no `bytes`.

`UNLESS_SENT` (the transport layer's HSTS line in `Shield`) is held to `DEFAULT`
over the same sequences, wherever no other hook of the run adds or drops its name,
the condition under which `Shield` uses it.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Mapping
from typing import Any

import pytest

from bastion.stages import DEFAULT, EDIT, EXTEND, UNLESS_SENT, Flow, _is_set
from bastion.types import Message, RawHeaders

pytestmark = pytest.mark.anyio


def reference_edit_start(flow: Flow, message: Any, level: int) -> Any:
    """`Flow._edit_start` as it was before the one-list run (bastion be819b2)."""
    hooks = flow.hooks
    owned: Any = None
    owned_headers: Any = None
    for index in range(level - 1, -1, -1):
        entry: Any = hooks[index]
        if entry[0] is EDIT:
            current = message.get("headers", ())
            headers = entry[1](current)
            if headers is current:
                continue
        elif entry[0] is EXTEND:
            headers = message.get("headers", ())
            if headers is not owned_headers or message is not owned:
                headers = list(headers)
            headers.extend(entry[1])
        elif entry[0] is None:
            decided: Any = entry[1](message)
            if decided.__class__ is dict or isinstance(decided, Mapping):
                message = decided  # a Message, by the test
                continue
            awaitable: Awaitable[Any] = decided  # not reached: the table's I/O hooks decide
            return awaitable
        elif entry[0] is DEFAULT:
            line = entry[1]
            headers = message.get("headers", ())
            if reference_is_set(headers, line[0]):
                continue
            if headers is not owned_headers or message is not owned:
                headers = list(headers)
            headers.append(line)
        else:
            message = entry[0](message)
            continue
        if message is owned:
            message["headers"] = headers
        else:
            message = owned = {**message, "headers": headers}
        owned_headers = headers
    return message


def reference_is_set(headers: Any, name: bytes) -> bool:
    size = len(name)
    for present, _ in headers:  # noqa: SIM110 - the reference, as it was
        if len(present) == size and present.lower() == name:
            return True
    return False


def drop_vary(lines: RawHeaders) -> RawHeaders:
    kept = [line for line in lines if line[0].lower() != b"vary"]
    return lines if len(kept) == len(lines) else kept


def add_edit(lines: RawHeaders) -> RawHeaders:
    return [*lines, (b"x-edit", b"1")]


def tag(message: Message) -> Message:
    return {**message, "headers": [*message.get("headers", ()), (b"x-sync", b"1")]}


def replace(message: Message) -> Message:
    return {"type": message["type"], "status": message["status"], "headers": [(b"x-new", b"1")]}


def decide_now(message: Message) -> Message:
    """An I/O hook that decided without I/O: it hands back the message it got."""
    return message


def decide_tagged(message: Message) -> Message:
    return {**message, "headers": [*message.get("headers", ()), (b"x-io", b"1")]}


HOOKS: dict[str, Any] = {
    "edit-changes": (EDIT, add_edit),
    "edit-drops-vary": (EDIT, drop_vary),
    "edit-same-list": (EDIT, lambda lines: lines),
    "extend": (EXTEND, ((b"x-a", b"1"), (b"x-b", b"2"))),
    "default-hsts": (DEFAULT, (b"strict-transport-security", b"max-age=1")),
    "default-vary": (DEFAULT, (b"vary", b"Cookie")),
    "default-edit-name": (DEFAULT, (b"x-edit", b"2")),
    "sync-hook": (tag, None),
    "sync-replaces": (replace, None),
    "io-hook-same": (None, decide_now),
    "io-hook-tags": (None, decide_tagged),
}

APP_HEADERS: dict[str, Any] = {
    "none": None,
    "empty": [],
    "lower": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
    "mixed-case": [(b"Content-Type", b"text/plain"), (b"VARY", b"Accept")],
    "tuple": ((b"content-type", b"text/plain"), (b"vary", b"Origin")),
    "hsts-upper": [(b"Strict-Transport-Security", b"max-age=5")],
    "repeated": [(b"vary", b"a"), (b"vary", b"b"), (b"x-edit", b"0")],
}

SEQUENCES = [
    sequence
    for size in range(1, 5)
    for sequence in itertools.product(sorted(HOOKS), repeat=size)
    if size < 4 or len(set(sequence)) == 4  # every pair and triple; quadruples of distinct hooks
]


def start_message(headers: Any) -> Message:
    message: Message = {"type": "http.response.start", "status": 200}
    if headers is not None:
        message["headers"] = headers
    return message


def flow_with(hooks: list[Any]) -> Flow:
    async def receive() -> Message:  # pragma: no cover - never called
        raise AssertionError

    async def send(message: Message) -> None:  # pragma: no cover - never called
        raise AssertionError

    flow = Flow({"type": "http", "headers": []}, receive, send)
    flow.hooks.extend(hooks)
    return flow


@pytest.mark.parametrize("app", sorted(APP_HEADERS))
def test_edit_start_matches_the_reference_run(app: str) -> None:
    checked = 0
    for sequence in SEQUENCES:
        hooks = [HOOKS[name] for name in sequence]
        for level in {len(hooks), max(0, len(hooks) - 1)}:
            original = APP_HEADERS[app]
            as_sent = None if original is None else list(original)
            message = start_message(original)
            expected = reference_edit_start(flow_with(hooks), dict(message), level)
            got = flow_with(hooks)._edit_start(message, level)
            assert isinstance(got, dict), sequence
            assert got == expected, (sequence, level)
            # The application's message and list as it sent them.
            assert message.get("headers") is original
            assert (None if original is None else list(original)) == as_sent
            checked += 1
    assert checked > 1000


# The hooks of the table that may add or drop a line of each `DEFAULT` hook's name.
_TOUCHES: dict[str, set[str]] = {
    "default-hsts": {"sync-replaces"},
    "default-vary": {"edit-drops-vary", "sync-replaces"},
    "default-edit-name": {"edit-changes", "sync-replaces"},
}


@pytest.mark.parametrize("app", sorted(APP_HEADERS))
@pytest.mark.parametrize("default", sorted(_TOUCHES))
def test_unless_sent_matches_default_when_no_inner_hook_touches_its_name(
    app: str, default: str
) -> None:
    """Swap one `DEFAULT` hook for `UNLESS_SENT`: the run's message is the same
    whenever the hooks inside it (run before it) neither add nor drop its name."""
    _, line = HOOKS[default]
    checked = 0
    for sequence in SEQUENCES:
        if default not in sequence:
            continue
        position = sequence.index(default)
        # Hooks run innermost (last) first: those inside the swapped one come after it.
        if _TOUCHES[default] & set(sequence[position + 1 :]) or sequence.count(default) > 1:
            continue
        hooks = [HOOKS[name] for name in sequence]
        swapped = [*hooks[:position], (UNLESS_SENT, line), *hooks[position + 1 :]]
        original = APP_HEADERS[app]
        expected = flow_with(hooks)._edit_start(start_message(original), len(hooks))
        got = flow_with(swapped)._edit_start(start_message(original), len(hooks))
        assert got == expected, sequence
        checked += 1
    assert checked > 100


@pytest.mark.parametrize(
    ("inner", "app_headers", "expected"),
    [
        pytest.param(
            (EXTEND, ((b"strict-transport-security", b"max-age=9"),)),
            [],
            [(b"strict-transport-security", b"max-age=9"), (b"strict-transport-security", b"1")],
            id="unless-sent-ignores-an-inner-line",
        ),
        pytest.param(
            (EDIT, lambda lines: []),
            [(b"Strict-Transport-Security", b"max-age=5")],
            [],
            id="unless-sent-ignores-an-inner-strip",
        ),
        pytest.param(
            (EXTEND, ((b"x-a", b"1"),)),
            [(b"Strict-Transport-Security", b"max-age=5")],
            [(b"Strict-Transport-Security", b"max-age=5"), (b"x-a", b"1")],
            id="unless-sent-keeps-the-apps-line",
        ),
    ],
)
def test_unless_sent_looks_at_the_lines_as_sent_only(
    inner: Any, app_headers: RawHeaders, expected: RawHeaders
) -> None:
    """What `UNLESS_SENT` is not: a check of the inner hooks' lines. That is why
    `Shield` uses `DEFAULT` when an inner layer may set or strip the name."""
    hooks = [(UNLESS_SENT, (b"strict-transport-security", b"1")), inner]
    got = flow_with(hooks)._edit_start(start_message(app_headers), len(hooks))
    assert isinstance(got, dict)
    assert list(got["headers"]) == expected


@pytest.mark.parametrize(
    ("headers", "name"),
    [
        pytest.param([], b"vary", id="is-set-empty"),
        pytest.param((), b"vary", id="is-set-empty-tuple"),
        pytest.param([(b"vary", b"a")], b"vary", id="is-set-lower"),
        pytest.param([(b"Vary", b"a")], b"vary", id="is-set-title-case"),
        pytest.param([(b"VARY", b"a"), (b"x", b"b")], b"vary", id="is-set-upper"),
        pytest.param([(b"content-type", b"a")], b"vary", id="is-set-absent"),
        pytest.param([(b"Content-Type", b"a")], b"vary", id="is-set-absent-mixed-case"),
        pytest.param([(b"varyy", b"a"), (b"var", b"b")], b"vary", id="is-set-near-names"),
        pytest.param([(b"1-2", b"a")], b"vary", id="is-set-no-letters"),
        pytest.param([(b"1-2", b"a"), (b"vary", b"b")], b"vary", id="is-set-no-letters-and-name"),
        pytest.param([(bytearray(b"Vary"), b"a")], b"vary", id="is-set-bytearray-name"),
        pytest.param([(bytearray(b"x"), b"a")], b"vary", id="is-set-bytearray-other"),
        pytest.param([("vary", "a")], b"vary", id="is-set-text-name"),
        pytest.param([(b"vary", b"a"), ("x", "b")], b"vary", id="is-set-text-and-bytes"),
        pytest.param([("x", "b"), (b"Vary", b"a")], b"vary", id="is-set-text-then-mixed"),
    ],
)
def test_is_set_matches_the_loop(headers: Any, name: bytes) -> None:
    assert _is_set(headers, name) is reference_is_set(headers, name)
