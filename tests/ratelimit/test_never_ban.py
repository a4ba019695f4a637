"""`ratelimit.never_ban`: listed networks are never banned, yet stay rate limited.

The jail's store is a real `MemoryStore` on the fake clock; requests go through the
rate-limit layer with its `JailSink`, and once through the whole `Shield`.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

import pytest

from bastion.events import EventEmitter
from bastion.exceptions import ConfigurationError
from bastion.ratelimit import BanPolicy, Jail, JailSink, client_key
from bastion.ratelimit.jail import DEFAULT_BAN_THRESHOLD
from bastion.ratelimit.keys import ClientGrouping
from bastion.ratelimit.reasons import REASON_BANNED, REASON_RATE_LIMITED
from bastion.settings import Settings
from bastion.shield import Shield
from bastion.stores import MemoryStore
from tests.conftest import RecordingSink, asgi_client
from tests.ratelimit.harness import ATTACKER, USER, build, jail_sink_of
from tests.support.apps import raw_app
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio

MONITOR = ("192.0.2.10", 41000)
# Past the default threshold, as a second `bastion audit` within the window would be.
REFUSALS = DEFAULT_BAN_THRESHOLD + 5


@pytest.mark.parametrize(
    ("client", "final_status", "banned"),
    [
        pytest.param(MONITOR, 429, False, id="ban-never-ban-address-not-banned"),
        pytest.param(ATTACKER, 403, True, id="ban-other-address-still-banned"),
    ],
)
async def test_never_ban_through_the_layer(
    client: tuple[str, int],
    final_status: int,
    banned: bool,
    clock: FakeClock,
    events: EventEmitter,
    sink: RecordingSink,
) -> None:
    store = MemoryStore(clock=clock)
    app, layer, _ = build(
        raw_app,
        store,
        events,
        jail_sink=True,
        limits={"*": ["1/minute"]},
        never_ban=[MONITOR[0]],
    )
    async with asgi_client(app, client=client) as http:
        assert (await http.get("/")).status_code == 200
        for _ in range(REFUSALS):
            assert (await http.get("/")).status_code in (429, 403)
        await jail_sink_of(events).drain()
        last = await http.get("/")
    assert last.status_code == final_status
    assert layer.jail is not None
    assert await layer.jail.is_banned(client[0]) is banned
    refused = [r for r in sink.records if r["client"] == client[0]]
    assert any(r["reason"] == REASON_RATE_LIMITED for r in refused)  # still rate limited
    assert any(r["reason"] == REASON_BANNED for r in refused) is banned
    assert jail_sink_of(events).dropped == 0
    # The legitimate user beside them is untouched either way.
    async with asgi_client(app, client=USER) as http:
        assert (await http.get("/")).status_code == 200


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0.0.0.0/0", id="never-ban-too-wide-refused"),
        pytest.param("::/0", id="never-ban-too-wide-refused-ipv6-all"),
        pytest.param("10.0.0.0/7", id="never-ban-too-wide-refused-ipv4"),
        pytest.param("2001:d00::/24", id="never-ban-too-wide-refused-ipv6"),
        pytest.param("::ffff:0.0.0.0/96", id="never-ban-too-wide-refused-ipv4-mapped"),
        pytest.param("10.0.0.1/8", id="never-ban-host-bits-refused"),
        pytest.param("monitoring.internal", id="never-ban-not-an-address-refused"),
    ],
)
def test_never_ban_refuses(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"ratelimit\.never_ban: .*never_ban: "):
        Settings(mode="development", ratelimit={"never_ban": [value]})


def test_never_ban_accepts_and_parses_narrow_networks() -> None:
    settings = Settings(
        mode="development",
        ratelimit={"never_ban": "10.0.0.0/8, 2001:db8::/32 192.0.2.10 ::ffff:198.51.100.0/120"},
    )
    expected = (
        IPv4Network("10.0.0.0/8"),
        IPv6Network("2001:db8::/32"),
        IPv4Network("192.0.2.10/32"),
        IPv4Network("198.51.100.0/24"),  # the IPv4-mapped form, as IPv4
    )
    assert settings.ratelimit.never_ban == expected
    assert settings.ratelimit.ban_policy().never_ban == expected
    assert Settings(mode="development").ratelimit.never_ban == ()


@pytest.mark.parametrize(
    ("client", "exempt"),
    [
        pytest.param("192.0.2.10", True, id="listed-address"),
        pytest.param("::ffff:192.0.2.10", True, id="listed-address-ipv4-mapped"),
        pytest.param("192.0.2.11", False, id="ipv4-neighbour-not-exempt"),
        # One ban key per /64: a neighbour's refusals would ban the listed address.
        pytest.param("2001:db8:0:1::99", True, id="ipv6-same-64-exempt"),
        pytest.param("2001:db8:0:2::1", False, id="ipv6-other-64-not-exempt"),
        pytest.param("10.20.30.40", True, id="listed-network"),
        pytest.param(None, False, id="unknown-client-not-exempt"),
        pytest.param("testclient", False, id="non-address-not-exempt"),
    ],
)
def test_is_exempt(client: str | None, exempt: bool) -> None:
    policy = BanPolicy(
        never_ban=(
            IPv4Network("192.0.2.10/32"),
            IPv6Network("2001:db8:0:1::1/128"),
            IPv4Network("10.0.0.0/8"),
        )
    )
    assert Jail(MemoryStore(), policy).is_exempt(client) is exempt


def test_wider_grouping_exempts_the_whole_group() -> None:
    policy = BanPolicy(never_ban=(IPv4Network("192.0.2.10/32"),))
    jail = Jail(MemoryStore(), policy, grouping=ClientGrouping(ipv4_prefix=24))
    assert jail.is_exempt("192.0.2.200")
    assert not jail.is_exempt("192.0.3.1")


async def test_jail_store_untouched_for_exempt_client(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    jail = Jail(store, BanPolicy(threshold=2, never_ban=(IPv4Network("192.0.2.10/32"),)))
    for _ in range(5):
        assert await jail.record_refusal(MONITOR[0]) is False
    assert await store.get("jail:n:" + client_key(MONITOR[0])) is None  # never counted
    assert await store.get(Jail.ban_key(client_key(MONITOR[0]))) is None
    assert await jail.is_banned(MONITOR[0]) is False
    with pytest.raises(ValueError, match=r"ratelimit\.never_ban"):
        await jail.ban(MONITOR[0])
    # Beside it, an unlisted client is counted and banned as before.
    assert await jail.record_refusal(ATTACKER[0]) is False
    assert await jail.record_refusal(ATTACKER[0]) is True
    assert await jail.is_banned(ATTACKER[0]) is True


async def test_sink_schedules_nothing_for_exempt_client() -> None:
    jail = Jail(MemoryStore(), BanPolicy(never_ban=(IPv4Network("192.0.2.10/32"),)))
    sink = JailSink(jail, max_in_flight=1)
    record: dict[str, object] = {"action": "blocked", "status": 429, "kind": "x", "reason": "y"}
    for _ in range(3):
        sink.handle(record | {"client": MONITOR[0]})
    assert (sink.in_flight, sink.dropped) == (0, 0)
    sink.handle(record | {"client": ATTACKER[0]})
    assert sink.in_flight == 1
    await sink.drain()


@pytest.mark.parametrize("case", ["ban-never-ban-through-shield"])
async def test_never_ban_through_shield(case: str, clock: FakeClock) -> None:
    app = Shield(
        raw_app,
        Settings(
            mode="development",
            ratelimit={
                "limits": {"*": ["1/minute"]},
                "ban_threshold": 3,
                "never_ban": [MONITOR[0]],
            },
        ),
        store=MemoryStore(clock=clock),
    )
    jail_sink = next(s for s in app.events.sinks if isinstance(s, JailSink))
    for client, final_status in ((MONITOR, 429), (ATTACKER, 403)):
        async with asgi_client(app, client=client) as http:
            statuses = [(await http.get("/")).status_code for _ in range(6)]
            await jail_sink.drain()
            statuses.append((await http.get("/")).status_code)
        assert statuses[0] == 200
        assert statuses[-1] == final_status, (client, statuses)
    assert jail_sink.dropped == 0
