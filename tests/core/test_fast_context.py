"""`get_context` keeps a server's `(str, int)` client tuple as it is, and converts
anything else exactly as the conversion it shortcuts (kept here as the reference).

The client address feeds rate-limit keys, bans and every event: a shortcut that let
a list (mutable, shared with the scope), a subclass (a custom `__eq__`/`__hash__`),
a boolean port or a longer tuple through unconverted would change what the layers
compare and key on.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest

from bastion.context import get_context


def _reference_client(client: Any) -> tuple[str, int] | None:
    """The conversion `get_context` made for every client before the shortcut."""
    return (str(client[0]), int(client[1])) if client else None


class _Host(str):
    """A str subclass: its own `__eq__` could make two addresses look alike."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


class _Port(int):
    pass


_Address = namedtuple("_Address", "host port")

CLIENTS = [
    pytest.param(("127.0.0.1", 5000), id="context-client-ipv4-tuple"),
    pytest.param(("::1", 443), id="context-client-ipv6-tuple"),
    pytest.param(None, id="context-client-none"),
    pytest.param((), id="context-client-empty"),
    pytest.param(["10.0.0.1", 80], id="context-client-list-converted"),
    pytest.param(("10.0.0.1", True), id="context-client-bool-port"),
    pytest.param(("10.0.0.1", "8080"), id="context-client-str-port"),
    pytest.param(("10.0.0.1", 80, "extra"), id="context-client-three-items"),
    pytest.param((_Host("10.0.0.1"), 80), id="context-client-str-subclass-host"),
    pytest.param(("10.0.0.1", _Port(80)), id="context-client-int-subclass-port"),
    pytest.param(_Address("10.0.0.1", 80), id="context-client-namedtuple"),
]


@pytest.mark.parametrize("client", CLIENTS)
def test_client_matches_the_conversion_it_shortcuts(client: Any) -> None:
    expected = _reference_client(client)
    context = get_context({"type": "http", "client": client})
    assert context.client == expected
    assert context.client.__class__ is expected.__class__
    if expected is not None:
        assert context.client is not None
        assert [part.__class__ for part in context.client] == [str, int]
        if client.__class__ is not tuple or len(client) != 2:
            assert context.client is not client  # converted, never the object as sent


def test_a_server_tuple_is_kept_as_it_is() -> None:
    client = ("192.0.2.7", 51234)
    assert get_context({"type": "http", "client": client}).client is client
