"""The response head the flow's hooks build (`bastion.stages`): header edits in order.

The flow applies the layers' header edits (`HeaderOp`) to one list of its own per
response. These tests pin what that must not change: the edits run innermost
first, interleaved with message hooks exactly where they were registered; an
edit that appends unless set sees the lines the inner hooks left (names in any
case); and the application's message and header list are never edited, even when
it sends the same list with every response. Then the whole stack: an application
that sets the headers the layers care about (its own CORS grant, `Vary`, HSTS,
`Server`, a framing header), sending one shared list, gets the same messages
through the fused stack as through the chain of middlewares.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable
from functools import partial
from typing import Any

import pytest

from bastion.shield import Shield
from bastion.stages import DEFAULT, EDIT, EXTEND, Flow, Stage, run_stages
from bastion.types import Message, RawHeaders, Receive, Scope, Send
from tests.shield.test_fused import ORIGIN, call, normalised, settings

pytestmark = pytest.mark.anyio

SHARED: RawHeaders = [(b"content-type", b"text/plain"), (b"Vary", b"Accept")]


def scope() -> Scope:
    return {"type": "http", "method": "GET", "path": "/", "headers": [(b"host", b"x")]}


class Register:
    """A stage that registers one hook and lets the request through."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook

    def enter(self, flow: Flow) -> None:
        flow.hooks.append(self.hook)


def drop(name: bytes, lines: RawHeaders) -> RawHeaders:
    return [line for line in lines if line[0].lower() != name]


def tag(message: Message) -> Message:
    return {**message, "headers": [*message["headers"], (b"x-sync", b"1")]}


async def tag_async(message: Message) -> Message | None:
    return {**message, "headers": [*message["headers"], (b"x-async", b"1")]}


async def run(
    hooks: list[Any], app_headers: RawHeaders, start: Message | None = None
) -> tuple[list[Message], Message]:
    """The messages that leave a flow whose stages register `hooks`, outermost
    first, and the start message the application sent (`start`, else a dict)."""
    sent: list[Message] = []
    if start is None:
        start = {"type": "http.response.start", "status": 200, "headers": app_headers}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    stages = [Register(hook) for hook in hooks]
    await run_stages(stages, app, scope(), receive, send)
    return sent, start


async def test_edits_run_innermost_first_between_message_hooks() -> None:
    hooks = [
        (DEFAULT, (b"x-outer", b"1")),  # outermost: runs last
        (EDIT, partial(drop, b"x-drop")),
        (tag, None),
        (EXTEND, [(b"x-extend", b"1"), (b"x-extend", b"2")]),
        (None, tag_async),  # innermost: runs first
    ]
    sent, _ = await run(hooks, [(b"x-drop", b"1"), (b"content-type", b"text/plain")])
    assert sent[0]["headers"] == [
        (b"content-type", b"text/plain"),
        (b"x-async", b"1"),
        (b"x-extend", b"1"),
        (b"x-extend", b"2"),
        (b"x-sync", b"1"),
        (b"x-outer", b"1"),
    ]
    assert sent[1] == {"type": "http.response.body", "body": b"ok"}


def maybe_async(message: Message) -> Message | Awaitable[Message | None]:
    """An I/O hook that decides without I/O when the message has no `x-save` line."""
    if not any(name == b"x-save" for name, _ in message["headers"]):
        return message
    return tag_async(message)


@pytest.mark.parametrize(
    ("app_headers", "expected"),
    [
        pytest.param([(b"a", b"1")], [(b"a", b"1"), (b"x-outer", b"1")], id="hook-decided-now"),
        pytest.param(
            [(b"x-save", b"1")],
            [(b"x-save", b"1"), (b"x-async", b"1"), (b"x-outer", b"1")],
            id="hook-awaited",
        ),
    ],
)
async def test_an_io_hook_may_decide_without_a_coroutine(
    app_headers: RawHeaders, expected: RawHeaders
) -> None:
    sent, _ = await run([(DEFAULT, (b"x-outer", b"1")), (None, maybe_async)], app_headers)
    assert sent[0]["headers"] == expected


@pytest.mark.parametrize(
    ("app_headers", "expected"),
    [
        pytest.param(
            [(b"Strict-Transport-Security", b"max-age=1")],
            [(b"Strict-Transport-Security", b"max-age=1")],
            id="head-app-hsts-kept-never-two",
        ),
        pytest.param(
            [(b"content-type", b"text/plain")],
            [(b"content-type", b"text/plain"), (b"strict-transport-security", b"max-age=9")],
            id="head-hsts-added-when-absent",
        ),
        pytest.param(
            [(b"strict-transport-securitx", b"1"), (b"STRICT-TRANSPORT-SECURITY-", b"2")],
            [
                (b"strict-transport-securitx", b"1"),
                (b"STRICT-TRANSPORT-SECURITY-", b"2"),
                (b"strict-transport-security", b"max-age=9"),
            ],
            id="head-hsts-near-miss-names-are-not-it",
        ),
    ],
)
async def test_default_line_only_when_its_header_is_absent(
    app_headers: RawHeaders, expected: RawHeaders
) -> None:
    sent, _ = await run([(DEFAULT, (b"strict-transport-security", b"max-age=9"))], app_headers)
    assert sent[0]["headers"] == expected


async def test_default_sees_a_line_an_inner_edit_added() -> None:
    hooks = [
        (DEFAULT, (b"x-one", b"outer")),
        (EXTEND, [(b"X-One", b"inner")]),
    ]
    sent, _ = await run(hooks, [])
    assert sent[0]["headers"] == [(b"X-One", b"inner")]


async def test_a_start_without_headers_gets_a_list() -> None:
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await run_stages([Register((EXTEND, [(b"x-a", b"1")]))], app, scope(), receive, send)
    assert sent == [{"type": "http.response.start", "status": 204, "headers": [(b"x-a", b"1")]}]


async def test_the_apps_message_and_shared_list_stay_as_sent() -> None:
    hooks = [
        (DEFAULT, (b"x-default", b"1")),
        (EDIT, partial(drop, b"x-none")),
        (EXTEND, [(b"x-extend", b"1")]),
        (tag, None),
    ]
    before = list(SHARED)
    first, start = await run(hooks, SHARED)
    second, _ = await run(hooks, SHARED)
    assert before == SHARED
    assert start == {"type": "http.response.start", "status": 200, "headers": SHARED}
    assert first == second
    assert first[0]["headers"] == [
        *before,
        (b"x-sync", b"1"),
        (b"x-extend", b"1"),
        (b"x-default", b"1"),
    ]


# --- the whole stack: fused against chained ------------------------------------------

APP_HEADERS: RawHeaders = [
    (b"content-type", b"text/plain"),
    (b"Server", b"app/1.0"),
    (b"Vary", b"Accept"),
    (b"Access-Control-Allow-Origin", b"*"),
    (b"Strict-Transport-Security", b"max-age=5"),
    (b"X-Frame-Options", b"SAMEORIGIN"),
]


async def header_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Sends the one shared `APP_HEADERS` list with every response."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": APP_HEADERS})
    await send({"type": "http.response.body", "body": b"ok"})


ORIGINS = [
    pytest.param([(b"origin", ORIGIN.encode())], id="head-allowed-origin"),
    pytest.param([(b"origin", b"https://evil.example")], id="head-cors-app-wildcard-to-evil"),
    pytest.param([], id="head-no-origin"),
]


@pytest.mark.parametrize("headers", ORIGINS)
async def test_app_set_headers_fused_as_chained(headers: RawHeaders) -> None:
    before = list(APP_HEADERS)
    results = []
    for fused in (False, True):
        shield = Shield(header_app, settings())
        target = shield if fused else shield._stack
        exchanges = [await call(target, "GET", "/", list(headers)) for _ in range(2)]
        results.append([normalised(exchange.messages) for exchange in exchanges])
    assert results[0] == results[1]
    assert before == APP_HEADERS
    start = (await call(Shield(header_app, settings()), "GET", "/", list(headers))).messages[0]
    names = [name.lower() for name, _ in start["headers"]]
    assert names.count(b"strict-transport-security") == 1
    assert b"server" not in names
    grants = [value for name, value in start["headers"] if name == b"access-control-allow-origin"]
    assert grants == ([ORIGIN.encode()] if headers == [(b"origin", ORIGIN.encode())] else [])


async def answered(message: Message) -> Message | None:
    return None  # the hook's stage answered instead (`Flow.sender`)


async def test_an_io_hook_that_answered_stops_the_start() -> None:
    """The flow sends no start of its own once an I/O hook returned None, however
    many hooks were left to run after it."""
    hooks = [(DEFAULT, (b"x-outer", b"1")), (None, answered), (EXTEND, [(b"x-inner", b"1")])]
    sent, _ = await run(hooks, [(b"a", b"1")])
    assert sent == [{"type": "http.response.body", "body": b"ok"}]


async def test_hooks_after_an_awaited_hook_copy_before_editing() -> None:
    """The hooks outside an awaited one still never edit the message it returned in
    place (it may be the application's)."""
    returned: Message = {"type": "http.response.start", "status": 200, "headers": [(b"a", b"1")]}

    async def hand_back(message: Message) -> Message | None:
        return returned

    sent, _ = await run([(EXTEND, [(b"x-outer", b"1")]), (None, hand_back)], [])
    assert sent[0]["headers"] == [(b"a", b"1"), (b"x-outer", b"1")]
    assert returned["headers"] == [(b"a", b"1")]


@pytest.mark.parametrize(
    ("raw", "index", "lowercase"),
    [
        pytest.param(
            [(b"host", b"x"), (b"cookie", b"a=1"), (b"cookie", b"b=2")],
            {b"host": [b"x"], b"cookie": [b"a=1", b"b=2"]},
            True,
            id="index-lowercase-repeated-name",
        ),
        pytest.param(
            [(b"Host", b"x"), (b"cookie", b"a=1"), (b"COOKIE", b"b=2")],
            {b"host": [b"x"], b"cookie": [b"a=1", b"b=2"]},
            False,
            id="index-mixed-case-merged-in-order",
        ),
        pytest.param([(b"x-1", b"")], {b"x-1": [b""]}, True, id="index-name-without-letters"),
        pytest.param([], {}, True, id="index-no-headers"),
    ],
)
def test_the_flow_indexes_header_names_lower_cased(
    raw: RawHeaders, index: dict[bytes, list[bytes]], lowercase: bool
) -> None:
    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        return None

    flow = Flow({**scope(), "headers": raw}, receive, send)
    assert flow.headers == index
    assert flow.headers_lowercase is lowercase


@pytest.mark.parametrize(
    "hooks",
    [
        pytest.param([(DEFAULT, (b"x-one", b"outer"))], id="head-mapping-default-unchanged"),
        pytest.param([(None, maybe_async)], id="head-mapping-io-hook-decided-now"),
    ],
)
async def test_a_start_message_of_a_dict_subclass_goes_out(hooks: list[Any]) -> None:
    """A hook may hand back the application's own message unchanged; when that is a
    dict subclass (an `OrderedDict`), it is sent, never mistaken for an awaitable."""
    start: Message = OrderedDict(
        type="http.response.start", status=200, headers=[(b"x-one", b"app")]
    )
    sent, _ = await run(hooks, [], start)
    assert sent[0] is start
    assert sent[0]["headers"] == [(b"x-one", b"app")]


class Exits:
    """A stage that registers a sync and an async exit, each recording what it got."""

    def __init__(self, seen: list[str], absorb: bool) -> None:
        self.seen, self.absorb = seen, absorb

    def enter(self, flow: Flow) -> None:
        def sync_exit(error: BaseException | None) -> BaseException | None:
            self.seen.append(f"sync:{error!r}")
            return None if self.absorb else error

        async def async_exit(error: BaseException | None) -> BaseException | None:
            self.seen.append(f"async:{error!r}")
            return error

        flow.exits.append(async_exit)
        flow.exits.append(sync_exit)


@pytest.mark.parametrize("absorb", [False, True], ids=["exit-passes-error", "exit-absorbs"])
async def test_sync_and_async_exits_unwind_innermost_first(absorb: bool) -> None:
    """An exit that awaits nothing is a plain function: it runs in its place among
    the awaited ones, and what it returns is what propagates."""
    seen: list[str] = []

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("app")

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return None

    run_it = run_stages([Exits(seen, absorb)], failing, scope(), receive, send)
    if absorb:
        await run_it
        assert seen == ["sync:ValueError('app')", "async:None"]
    else:
        with pytest.raises(ValueError, match="app"):
            await run_it
        assert seen == ["sync:ValueError('app')", "async:ValueError('app')"]


async def answering(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def empty_body() -> Message:
    return {"type": "http.request", "body": b""}


async def discard(message: Message) -> None:
    return None


class RaisingExit:
    """A stage whose exit raises, as a store call cancelled as the client leaves does."""

    def __init__(self, error: BaseException, awaited: bool) -> None:
        self.error, self.awaited = error, awaited

    def enter(self, flow: Flow) -> None:
        def sync_exit(error: BaseException | None) -> BaseException | None:
            raise self.error

        async def async_exit(error: BaseException | None) -> BaseException | None:
            raise self.error

        flow.exits.append(async_exit if self.awaited else sync_exit)


@pytest.mark.parametrize(
    ("error", "awaited"),
    [
        pytest.param(asyncio.CancelledError(), True, id="exit-cancelled-skips-outer-exits"),
        pytest.param(RuntimeError("store"), True, id="exit-async-raises-skips-outer-exits"),
        pytest.param(RuntimeError("store"), False, id="exit-sync-raises-skips-outer-exits"),
    ],
)
async def test_an_exit_that_raises_still_unwinds_the_exits_outside_it(
    error: BaseException, awaited: bool
) -> None:
    """Every exit outside a failing one runs, and gets its exception, as the
    `finally` blocks of a middleware chain would: a skipped exit is a leak (the limits
    layer's in-flight count, a login claim), one per request that fails that way."""
    seen: list[str] = []

    stages: list[Stage] = [Exits(seen, absorb=False), RaisingExit(error, awaited)]
    with pytest.raises(type(error)):
        await run_stages(stages, answering, scope(), empty_body, discard)
    assert seen == [f"sync:{error!r}", f"async:{error!r}"]


async def test_an_exit_that_raises_keeps_the_applications_error_as_its_context() -> None:
    """The application's own exception stays in the chain of the exit's (its
    `__context__`), as a `finally` block that raised would leave it: the log of the
    failure shows both, not only the exit's."""

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("app")

    with pytest.raises(RuntimeError) as raised:
        await run_stages(
            [RaisingExit(RuntimeError("store"), awaited=True)],
            failing,
            scope(),
            empty_body,
            discard,
        )
    assert isinstance(raised.value.__context__, ValueError)
    assert str(raised.value.__context__) == "app"


class ReRaisingExit:
    """A stage whose exit raises the oldest exception of the chain it is handed."""

    def enter(self, flow: Flow) -> None:
        def sync_exit(error: BaseException | None) -> BaseException | None:
            oldest = error
            while oldest is not None and oldest.__context__ is not None:
                oldest = oldest.__context__
            raise oldest if oldest is not None else RuntimeError("none")

        flow.exits.append(sync_exit)


async def test_an_exit_raising_an_earlier_exception_makes_no_cycle() -> None:
    """The application's error has a context of its own; an exit raises that older
    exception again: chaining the application's error to it would make a cycle
    (exit-reraise-context-cycle)."""

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            raise KeyError("first")
        except KeyError:
            raise ValueError("app")  # noqa: B904 - its implicit context is the point

    with pytest.raises(KeyError) as raised:
        await run_stages([ReRaisingExit()], failing, scope(), empty_body, discard)
    link: BaseException | None = raised.value
    for _ in range(10):
        link = link.__context__ if link is not None else None
    assert link is None  # the chain ends: no cycle


async def test_exits_after_a_clean_run_get_none() -> None:
    """The legitimate run beside the failing ones: every exit gets None."""
    seen: list[str] = []

    await run_stages([Exits(seen, absorb=False)], answering, scope(), empty_body, discard)
    assert seen == ["sync:None", "async:None"]


async def test_an_edit_that_changes_nothing_hands_back_the_list() -> None:
    """An edit may return the very list it got (nothing to change): the flow then
    owns nothing yet, so the next edit copies before appending, and the
    application's shared list stays as sent."""
    shared = list(SHARED)
    hooks = [(EXTEND, [(b"x-outer", b"1")]), (EDIT, lambda lines: lines)]
    sent, start = await run(hooks, shared)
    assert sent[0]["headers"] == [*SHARED, (b"x-outer", b"1")]
    assert shared == SHARED
    assert start["headers"] is shared
