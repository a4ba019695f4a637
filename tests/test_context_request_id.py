"""The request id of the context `get_context` makes: drawn on first read, then fixed.

The id must be a fresh random value for each request, never one shared between two,
and read the same by every layer of one request (the event of a refusal and the
body of the error page name the same incident), whichever reads it first.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import re

import pytest

from bastion.context import SCOPE_KEY, RequestContext, get_context
from bastion.events import EventEmitter
from bastion.limits import LimitsMiddleware, LimitsSettings
from bastion.types import Scope
from tests.conftest import RecordingSink, asgi_client
from tests.support.apps import make_app

REQUEST_ID = re.compile(r"[0-9a-f]{16}")


def scope(kind: str = "http", **extra: object) -> Scope:
    return {"type": kind, "headers": [], **extra}


def test_the_id_is_drawn_once_and_kept() -> None:
    context = get_context(scope())
    first = context.request_id
    assert REQUEST_ID.fullmatch(first)
    assert context.request_id == first
    assert get_context(scope()).request_id != first


def test_every_request_gets_its_own_id() -> None:
    ids = {get_context(scope()).request_id for _ in range(2000)}
    assert len(ids) == 2000


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(scope(client=("10.0.0.1", 1234), scheme="https"), id="https-client"),
        pytest.param(scope(), id="no-client-no-scheme"),
        pytest.param(scope("websocket"), id="websocket"),
        pytest.param(scope("websocket", scheme="wss", client=["::1", 9]), id="wss-list-client"),
    ],
)
def test_every_other_field_is_what_the_constructor_gives(raw: Scope) -> None:
    """`get_context` fills the fields itself (not through `__init__`): each must be
    the dataclass's default, or what the scope says, exactly as before."""
    context = get_context(raw)
    client = raw.get("client")
    expected = RequestContext(
        request_id=context.request_id,
        client=(str(client[0]), int(client[1])) if client else None,
        scheme=raw.get("scheme", "ws" if raw["type"] == "websocket" else "http"),
    )
    for field in dataclasses.fields(RequestContext):
        assert getattr(context, field.name) == getattr(expected, field.name), field.name
    assert context == expected
    assert raw[SCOPE_KEY] is context


def test_the_context_copies_and_compares_with_its_id() -> None:
    """Whatever reads the fields (repr, equality, copies, `dataclasses.replace`,
    pickling) sees the id, drawn if it was not yet, and the same one after."""
    for read in (
        repr,
        copy.copy,
        copy.deepcopy,
        dataclasses.astuple,
        lambda c: dataclasses.replace(c, host="example.org"),
        lambda c: pickle.loads(pickle.dumps(c)),  # noqa: S301  # our own bytes
    ):
        context = get_context(scope())
        result = read(context)
        first = context.request_id
        assert REQUEST_ID.fullmatch(first)
        if isinstance(result, RequestContext):
            assert result.request_id == first
    context = get_context(scope())
    assert context == copy.copy(context)


def test_an_id_given_to_the_constructor_is_kept() -> None:
    context = RequestContext("given", None, "http")
    assert context.request_id == "given"
    context.request_id = "set"
    assert context.request_id == "set"


def test_other_missing_attributes_are_still_errors() -> None:
    context = get_context(scope())
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        context.nope  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(context, "nope")


@pytest.mark.anyio
async def test_a_refusal_names_the_same_id_in_its_event_and_its_body(
    events: EventEmitter, sink: RecordingSink
) -> None:
    """`limits-trace-refused`, seen from the id: the event and the page the client gets
    carry one id, drawn for this request; a second request gets another."""
    app = LimitsMiddleware(make_app("raw"), LimitsSettings(), events=events)
    async with asgi_client(app) as client:
        first = await client.request("TRACE", "/")
        second = await client.request("TRACE", "/")
        ok = await client.get("/")
    assert (first.status_code, second.status_code, ok.status_code) == (405, 405, 200)
    ids = [record["request_id"] for record in sink.records]
    assert len(ids) == 2
    assert ids[0] != ids[1]
    assert f"request id: {ids[0]}" in first.text
    assert f"request id: {ids[1]}" in second.text


def test_fields_are_plain_slots_but_the_two_drawn_ones() -> None:
    """No `__getattr__`: with one, CPython reads every field of the context (many
    times per request) the slow, generic way. Only the two drawn fields are
    properties; every other field is the dataclass's own slot."""
    assert "__getattr__" not in vars(RequestContext)
    kinds = {
        field.name: type(vars(RequestContext)[field.name]).__name__
        for field in dataclasses.fields(RequestContext)
    }
    assert kinds.pop("request_id") == kinds.pop("csp_nonce") == "property"
    assert set(kinds.values()) == {"member_descriptor"}
