"""Server-side sessions.

Threats:

* Session hijacking: a session id readable by scripts, sent over plain HTTP, or
  guessable. The cookie carries only a random 256-bit id (`secrets.token_urlsafe`),
  `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`, with the `__Host-` prefix so no
  sibling subdomain can set or shadow it (cookie tossing). Data stays in the store.
* Session fixation: an attacker plants an id, then the victim logs in with it. An
  id the server did not issue is never adopted (an unknown id starts a new session
  with a new id), and `login()` and `rotate()` issue a new id and delete the old one.
* Stolen ids staying useful: idle and absolute timeouts, enforced by the server (the
  cookie is a browser-session cookie with no expiry of its own; a rotation keeps the
  absolute clock, only a login restarts it), `logout()` deletes the server-side
  session and sends `Clear-Site-Data`, and every session of a user can be revoked
  at once through the store's per-owner index, which lists each session for as long
  as it can live. A request still in flight when its session ends does not bring it
  back: its save writes only a session that still exists, and its rotation first
  consumes the old id.
* Ids in logs: events name a session by a keyed hash of its id, never the id. The
  store key is the SHA-256 of the id, so a store dump does not hold usable ids.

Not covered: what the application keeps in the session (it is not encrypted at rest;
keep secrets out or use field encryption), and mutations of nested values that the
session cannot see (`session["cart"].append(x)`): assign again, or set
`session.modified = True`, as with Django's sessions.

Performance: a request that carries no session cookie never touches the store (nor
awaits anything to load its new session, nor, if the application leaves that session
alone, to save it), and a session is written back only when it changed, was rotated,
or its idle clock needs moving (at most once per `touch_interval_seconds`). A
request with no `Cookie` line is decided by one dictionary probe, and a `Cookie`
line that does not contain the session cookie's name is not split at all (only other
applications' cookies; the parser is not even called when it is the only `Cookie`
line), which decides exactly as the full parse (`cookie_from_lines`); a new session
is made as a dict is (`Session` has no `__init__` of its own). The hook that saves
the session as the response starts is one module function (`_commit`) bound with
`functools.partial`, with the save itself a method; a new session's layer only keeps
its place among the flow's hooks (`_SAVE_LATER`, a header edit that appends nothing),
and the session puts the hook there on its first change (`Session._save_later`), so
a request that leaves its new session alone makes no hook at all.

References: OWASP Session Management Cheat Sheet
https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html ;
RFC 6265bis section 4.1.3 (cookie name prefixes); W3C Clear Site Data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Literal

from pydantic import Field, SecretStr, model_validator

from bastion.context import SCOPE_KEY, get_context
from bastion.events import (
    KIND_AUTHZ_CHANGE,
    KIND_SYS_AVAILABILITY,
    EventEmitter,
    SecurityEvent,
    default_emitter,
)
from bastion.exceptions import ConfigurationError, StoreError
from bastion.responses import send_generic
from bastion.sections import LayerSettings
from bastion.stages import EXTEND, Flow, Hook, run_stages
from bastion.stores.base import Store, check_store
from bastion.stores.memory import MemoryStore
from bastion.types import ASGIApp, Message, RawHeaders, Receive, Scope, Send

SameSite = Literal["lax", "strict"]

SESSION_ID_BYTES: Final = 32  # 256 bits (OWASP asks for at least 64 bits of entropy)
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32), unpadded
CSRF_SECRET_BYTES: Final = 32
STORE_PREFIX: Final = "session:"
OWNER_PREFIX: Final = "user:"
_RECORD_VERSION: Final = 1
# OWASP: 2-5 minutes idle for high-value apps, 15-30 minutes for low-risk ones; an
# absolute limit of 4-8 hours for a working day. We take the permissive end of
# "idle" and a working day plus margin; both are settings.
DEFAULT_IDLE_TIMEOUT_SECONDS: Final = 30 * 60
DEFAULT_ABSOLUTE_TIMEOUT_SECONDS: Final = 12 * 3600
# Moving the idle clock costs a store write; once a minute keeps the error of the
# idle timeout under a minute while a busy page makes at most one write a minute.
DEFAULT_TOUCH_INTERVAL_SECONDS: Final = 60
# The store keeps a record this long past its expiry, so a use of an expired session
# is recognised and reported (`session_use_after_expire`) instead of looking new.
EXPIRED_GRACE_SECONDS: Final = 300
_MAX_ID_ATTEMPTS: Final = 3  # a 256-bit collision is impossible; a loop must still end
CLEAR_SITE_DATA: Final = b'"cache", "cookies", "storage"'

EVENT_CREATED: Final = "session_created"
EVENT_RENEWED: Final = "session_renewed"
EVENT_EXPIRED: Final = "session_expired"
EVENT_USE_AFTER_EXPIRE: Final = "session_use_after_expire"
EVENT_LOGIN: Final = "authn_login_success"
REASON_IDLE: Final = "idle-timeout"
REASON_ABSOLUTE: Final = "absolute-timeout"
REASON_LOGOUT: Final = "logout"
REASON_REVOKED: Final = "revoked"
REASON_LOGIN: Final = "login"
REASON_ROTATED: Final = "rotated"
REASON_ROLES_CHANGED: Final = "roles-changed"
REASON_STORE_DOWN: Final = "store-unavailable"


class SessionSettings(LayerSettings):
    """Server-side sessions (see the README's settings reference)."""

    cookie_name: str = Field(default="__Host-session", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """The cookie's name. The `__Host-` prefix makes browsers refuse it unless it is
    `Secure`, `Path=/` and has no `Domain`, so no subdomain can set it."""

    same_site: SameSite = "lax"
    """`lax` (links from other sites keep the user signed in) or `strict`."""

    idle_timeout_seconds: int = Field(default=DEFAULT_IDLE_TIMEOUT_SECONDS, ge=60)
    absolute_timeout_seconds: int = Field(default=DEFAULT_ABSOLUTE_TIMEOUT_SECONDS, ge=60)
    touch_interval_seconds: int = Field(default=DEFAULT_TOUCH_INTERVAL_SECONDS, ge=1)

    insecure_cookie_over_http: bool = False
    """Drop `Secure` and the `__Host-` prefix so sessions work over plain HTTP.
    Development only: set by development mode when plain HTTP is allowed."""

    @model_validator(mode="after")
    def _check(self) -> SessionSettings:
        if self.idle_timeout_seconds > self.absolute_timeout_seconds:
            raise ValueError("idle_timeout_seconds must not exceed absolute_timeout_seconds")
        return self

    @property
    def effective_cookie_name(self) -> str:
        """The name sent: without a `__Host-`/`__Secure-` prefix over plain HTTP, where
        browsers would refuse a prefixed cookie that cannot be `Secure`."""
        if self.insecure_cookie_over_http:
            return self.cookie_name.removeprefix("__Host-").removeprefix("__Secure-")
        return self.cookie_name


# --- the core: ids, records, cookies ------------------------------------------------


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def looks_like_session_id(untrusted_value: str) -> bool:
    """True if the value has the shape of an id we issue (nothing else reaches a store)."""
    return _SESSION_ID.fullmatch(untrusted_value) is not None


def store_key(session_id: str) -> str:
    return STORE_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def owner_key(user_id: str) -> str:
    return OWNER_PREFIX + hashlib.sha256(user_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What the store keeps for one session."""

    created: float
    last_seen: float
    user_id: str | None
    csrf_secret: str | None
    data: dict[str, Any]

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": _RECORD_VERSION,
                "c": self.created,
                "s": self.last_seen,
                "u": self.user_id,
                "x": self.csrf_secret,
                "d": self.data,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> SessionRecord | None:
        """Parse a stored record; None if it is corrupt or of another version."""
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("v") != _RECORD_VERSION:
                return None
            data = doc["d"]
            if not isinstance(data, dict):
                return None
            return cls(float(doc["c"]), float(doc["s"]), doc["u"], doc["x"], data)
        except (ValueError, KeyError, TypeError):
            return None


def expiry_reason(record: SessionRecord, now: float, settings: SessionSettings) -> str | None:
    """Why the session has expired at `now`, or None while it is alive."""
    if now - record.created >= settings.absolute_timeout_seconds:
        return REASON_ABSOLUTE
    if now - record.last_seen >= settings.idle_timeout_seconds:
        return REASON_IDLE
    return None


def session_alive(raw: bytes | None, settings: SessionSettings, now: float) -> bool:
    """Whether `raw`, a session's record as the store returned it (None: absent), is a
    live session at `now`: readable, and within its idle and absolute timeouts
    (`expiry_reason`), as `SessionManager.load` would find it.

    For readers that hold a session's store key rather than its id (the WebSocket
    guard: a ticket's session, a socket's): the store keeps an expired record
    `EXPIRED_GRACE_SECONDS` past its expiry, so that the record is there does not say
    the session lives."""
    if raw is None:
        return False
    record = SessionRecord.decode(raw)
    return record is not None and expiry_reason(record, now, settings) is None


def ttl_for(record: SessionRecord, now: float, settings: SessionSettings) -> float:
    """How long the store keeps the record: until the first timeout falls, plus a
    short grace in which a late use is recognised (the session is dead all the same)."""
    idle_left = settings.idle_timeout_seconds - (now - record.last_seen)
    absolute_left = settings.absolute_timeout_seconds - (now - record.created)
    return max(1.0, min(idle_left, absolute_left)) + EXPIRED_GRACE_SECONDS


def owner_ttl_for(record: SessionRecord, now: float, settings: SessionSettings) -> float:
    """How long the owner index lists the session: the longest it can live (its
    absolute timeout, plus the grace), not `ttl_for`. Each use moves the idle clock
    and extends the record's TTL without touching the index, so an entry that ran
    out with the first TTL would leave a session in use beyond `revoke_user`'s
    reach."""
    absolute_left = settings.absolute_timeout_seconds - (now - record.created)
    return max(1.0, absolute_left) + EXPIRED_GRACE_SECONDS


def read_cookie(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of cookie `name`, or None if absent or sent more than once.

    Two cookies of the same name mean someone planted one (cookie tossing from a
    sibling domain, in development without the `__Host-` prefix): trust neither.
    """
    return cookie_from_lines([value for key, value in headers if key == b"cookie"], name)


def cookie_from_lines(lines: Iterable[bytes], name: bytes) -> str | None:
    """`read_cookie` on the request's `Cookie` lines (already picked out).

    A pair is taken only when its name, stripped, equals `name`, so a line that
    does not contain `name` at all holds no such pair: it is skipped unsplit. That
    is the common case (a first visit, or only other applications' cookies on the
    host), and it decides exactly as the full parse would.
    """
    found: list[bytes] = []
    for value in lines:
        if value.find(name) < 0:  # not `in`: `SessionMiddleware.enter` says why
            continue
        for pair in value.split(b";"):
            cookie_name, sep, cookie_value = pair.strip().partition(b"=")
            if sep and cookie_name == name:
                found.append(cookie_value.strip().strip(b'"'))
    if len(found) != 1:
        return None
    try:
        return found[0].decode("ascii")
    except UnicodeDecodeError:
        return None


def build_cookie(
    name: str, value: str, settings: SessionSettings, *, delete: bool = False
) -> bytes:
    """A `Set-Cookie` value; `delete` expires the cookie at once."""
    parts = [f"{name}={'' if delete else value}", "Path=/", "HttpOnly"]
    if not settings.insecure_cookie_over_http:
        parts.append("Secure")
    parts.append(f"SameSite={settings.same_site.capitalize()}")
    if delete:
        parts.append("Max-Age=0")
    return "; ".join(parts).encode("latin-1")


def keyed_id_hash(session_id: str, key: bytes) -> str:
    """The name of a session in logs: a keyed hash, useless to anyone who reads it."""
    return hmac.new(key, session_id.encode(), hashlib.sha256).hexdigest()[:16]


# --- the session object -------------------------------------------------------------


class Session(dict[str, Any]):
    """The session of one request: a dict (as Starlette's `request.session` expects)
    that remembers whether it changed, plus the calls that change privilege.

    `login(user_id)` and `rotate()` issue a new id when the response starts (the old
    one is deleted), `logout()` ends the session. The id itself is never exposed.

    It is made as a dict is (`Session()`, `Session(mapping)`); a session bound to a
    store comes from its manager (`SessionManager.new_session`, `SessionManager.load`).
    """

    # Every request that sends no session cookie gets a new session, which nearly
    # always stays untouched: the attributes start as these class-level values
    # (immutable ones only), and an instance stores only what differs from them.
    # There is no `__init__` of its own (a dict's costs a fraction of a Python one):
    # the manager sets the rest.
    _manager: SessionManager | None = None
    _id: str | None = None
    _record: SessionRecord | None = None
    _csrf_secret: str | None = None
    _modified: bool = False
    _rotate_requested: bool = False
    _logout_requested: bool = False
    _unsaved: tuple[weakref.ref[Flow], int, SessionMiddleware] | None = None
    """A new session's request, while its save hook waits for the first change that
    `_commit` looks for (`_save_later`): the flow (weakly, since the flow's scope holds
    the session), the place kept for the hook, and the layer."""
    login_requested: bool = False
    roles_changed: tuple[list[str], list[str]] | None = None
    user_id: str | None = None

    # A change that `_commit` looks for: a new session's save hook is registered by
    # the first (`_save_later`), so an untouched session costs its request no hook.
    @property
    def modified(self) -> bool:
        """Whether the data changed (set it after changing a value in place)."""
        return self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = value
        if value and self._unsaved is not None:
            self._save_later()

    @property
    def rotate_requested(self) -> bool:
        """Whether a new id is to be issued as the response starts (`rotate`)."""
        return self._rotate_requested

    @rotate_requested.setter
    def rotate_requested(self, value: bool) -> None:
        self._rotate_requested = value
        if value and self._unsaved is not None:
            self._save_later()

    @property
    def logout_requested(self) -> bool:
        """Whether the session is to end as the response starts (`logout`)."""
        return self._logout_requested

    @logout_requested.setter
    def logout_requested(self, value: bool) -> None:
        self._logout_requested = value
        if value and self._unsaved is not None:
            self._save_later()

    def _save_later(self) -> None:
        """Put the save hook in the place its layer kept for it among the flow's hooks
        (`_SAVE_LATER`), unless the response has started (a change after that was
        never saved: the hook ran as the response started) or the request is over."""
        unsaved = self._unsaved
        if unsaved is None:
            return
        self._unsaved = None
        flow_ref, level, layer = unsaved
        flow = flow_ref()
        if flow is None or flow.started:
            return
        hooks = flow.hooks
        if level < len(hooks) and hooks[level] is _SAVE_LATER:
            # `flow.scope` is the scope the layer saw: no stage inside it replaces it.
            hooks[level] = (None, partial(_commit, self, layer, flow, level, flow.scope))

    def __getstate__(self) -> dict[str, Any]:
        """What a copy or a pickle keeps: everything but `_unsaved`, so only the
        request's own session fills the place kept for its save hook (a copy changed
        first would take it; a weak reference cannot be pickled)."""
        state = dict(vars(self))
        state.pop("_unsaved", None)
        return state

    # Every mutator marks the session modified.
    def __setitem__(self, key: str, value: Any) -> None:
        self.modified = True
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.modified = True
        super().__delitem__(key)

    def clear(self) -> None:
        self.modified = True
        super().clear()

    def pop(self, key: str, *default: Any) -> Any:
        self.modified = True
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, Any]:
        self.modified = True
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self.modified = True
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.modified = True
        super().update(*args, **kwargs)

    def __ior__(self, other: Any) -> Session:  # type: ignore[override,misc]  # dict's |= returns Self
        self.modified = True
        super().update(other)
        return self

    @property
    def is_new(self) -> bool:
        """True until the session has been saved under an id (no cookie yet)."""
        return self._id is None

    @property
    def store_key(self) -> str | None:
        """The key of this session in the store (a hash of the id), once saved."""
        return store_key(self._id) if self._id is not None else None

    @property
    def id_hash(self) -> str | None:
        """The keyed hash that names this session in logs and events."""
        if self._id is None or self._manager is None:
            return None
        return self._manager.id_hash(self._id)

    def peek_csrf_secret(self) -> str | None:
        """This session's CSRF secret if it has one, without drawing one."""
        return self._csrf_secret

    def csrf_secret(self) -> str:
        """This session's CSRF secret, drawn on first use (which saves the session)."""
        if self._csrf_secret is None:
            self._csrf_secret = secrets.token_urlsafe(CSRF_SECRET_BYTES)
            self.modified = True
        return self._csrf_secret

    def rotate(self) -> None:
        """Issue a new id (and a new CSRF secret) when the response starts; keep the
        data and the absolute timeout's clock."""
        self.rotate_requested = True
        self._csrf_secret = None
        self.modified = True

    def login(self, user_id: str) -> None:
        """Bind the session to `user_id`, with a new id: the fixation defence.

        A session bound to another user is emptied first: none of that user's data
        (the roles the authentication layer reads above all) may carry over to this
        one (a shared browser, a "switch account" link), as Django's `login` flushes a
        session bound to someone else. A session of no user, or of this one, keeps
        its data (a cart filled before signing in)."""
        if not user_id:
            raise ValueError("user_id must be non-empty")
        if self.user_id is not None and self.user_id != user_id:
            self.clear()
        self.user_id = user_id
        self.login_requested = True
        self.rotate()

    def change_roles(self, roles: Iterable[str], *, key: str = "roles") -> None:
        """Grant or withdraw roles: store them under `key` (the authentication layer's
        `auth.session_roles_key`) with a new id, and report the change (`authz_change`,
        from and to) when the response starts."""
        before = sorted(self.get(key) or ())
        after = sorted(set(roles))
        self[key] = after
        if self.roles_changed is None:
            self.roles_changed = (before, after)
        else:  # two changes in one request: from the first state to the last
            self.roles_changed = (self.roles_changed[0], after)
        self.rotate()

    def logout(self) -> None:
        """End the session: delete it server-side, expire the cookie, clear site data."""
        self.logout_requested = True
        super().clear()

    async def revoke_user(self, user_id: str) -> int:
        """End every session of `user_id`, on every worker; returns how many."""
        if self._manager is None:
            raise ConfigurationError("this session is not attached to a session store")
        return await self._manager.revoke_user(user_id)

    # Internal, for the manager.
    def _snapshot(self, now: float) -> SessionRecord:
        record = self._record
        return SessionRecord(
            # A rotation keeps the absolute clock, or whoever holds the session and
            # can make the app rotate it (a periodic renewal, a role switch) would
            # never reach the absolute timeout; only a login, a new authentication,
            # starts it again.
            created=record.created if record and not self.login_requested else now,
            last_seen=now,
            user_id=self.user_id,
            csrf_secret=self._csrf_secret,
            data=dict(self),
        )


# --- the manager: the store side ----------------------------------------------------


class SessionManager:
    """Loads and saves sessions in a store. One per middleware; no per-request state."""

    def __init__(
        self,
        store: Store,
        settings: SessionSettings,
        *,
        secret_keys: Iterable[SecretStr | str],
        events: EventEmitter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        keys = [k.get_secret_value() if isinstance(k, SecretStr) else k for k in secret_keys]
        if not keys:
            raise ConfigurationError("secret_keys: sessions need a key to name ids in logs")
        check_store(store)
        self.store = store
        self.settings = settings
        self.events = events or default_emitter()
        self.clock = clock
        self._log_key = hashlib.sha256(b"bastion.session-log-id" + keys[0].encode()).digest()
        self._cookie_name = settings.effective_cookie_name

    def id_hash(self, session_id: str) -> str:
        return keyed_id_hash(session_id, self._log_key)

    def new_session(self) -> Session:
        """A new session of this manager: empty, with no id until it is saved."""
        session = Session()
        session._manager = self
        return session

    def _restored(self, session_id: str, record: SessionRecord) -> Session:
        """The live session of a record loaded under `session_id`."""
        session = Session(record.data)
        session._manager = self
        session._id = session_id
        session._record = record
        session.user_id = record.user_id
        session._csrf_secret = record.csrf_secret
        return session

    async def load(self, scope: Scope, untrusted_id: str | None) -> Session:
        """The session named by the cookie, or a new one. Raises StoreError."""
        if untrusted_id is None or not looks_like_session_id(untrusted_id):
            return self.new_session()
        raw = await self.store.get(store_key(untrusted_id))
        record = SessionRecord.decode(raw) if raw is not None else None
        if record is None:
            # Not issued by us, or gone: never adopt it (fixation). A new session will
            # get a new id if the application writes to it.
            return self.new_session()
        reason = expiry_reason(record, self.clock(), self.settings)
        if reason is not None:
            await self.store.delete(store_key(untrusted_id))
            self._event(scope, EVENT_USE_AFTER_EXPIRE, reason, untrusted_id)
            return self.new_session()
        return self._restored(untrusted_id, record)

    async def commit(self, scope: Scope, session: Session) -> RawHeaders:
        """Save what changed; return the headers the response must carry."""
        name = self._cookie_name
        if session.logout_requested:
            if session._id is not None:
                await self.store.delete(store_key(session._id))
                self._event(scope, EVENT_EXPIRED, REASON_LOGOUT, session._id)
            return [
                (b"set-cookie", build_cookie(name, "", self.settings, delete=True)),
                (b"clear-site-data", CLEAR_SITE_DATA),
                (b"cache-control", b"no-store"),
            ]
        now = self.clock()
        # `session.is_new`, inlined: this runs as every response starts.
        if session.rotate_requested or (session._id is None and session.modified):
            return await self._save_under_new_id(scope, session, now)
        record = session._record
        if session._id is None or record is None:
            return []
        due = now - record.last_seen >= self.settings.touch_interval_seconds
        if session.modified or due:
            snapshot = session._snapshot(now)
            # The session may have ended since this request loaded it (a logout in
            # another tab, `revoke_user`, a rotation); `set` would bring it back
            # under the old id, for as long as whoever holds that id keeps a slow
            # request in flight. `replace` writes only over a live key, as one
            # atomic store step: an ended session stays ended.
            await self.store.replace(
                store_key(session._id), snapshot.encode(), ttl_for(snapshot, now, self.settings)
            )
        return []

    async def _save_under_new_id(self, scope: Scope, session: Session, now: float) -> RawHeaders:
        old_id = session._id
        # The old id is consumed first, and `delete` is atomic: a session that ended
        # while this request ran (a logout, `revoke_user`, a concurrent rotation)
        # is not reborn under a new id. A login goes on all the same: it is a new
        # authentication, not a continuation of the old session.
        if (
            old_id is not None
            and not await self.store.delete(store_key(old_id))
            and not session.login_requested
        ):
            return []
        snapshot = session._snapshot(now)
        ttl = ttl_for(snapshot, now, self.settings)
        encoded = snapshot.encode()
        for _ in range(_MAX_ID_ATTEMPTS):
            new_id = new_session_id()
            if await self.store.set_if_absent(store_key(new_id), encoded, ttl):
                break
        else:  # pragma: no cover - three 256-bit collisions in a row
            raise StoreError("could not allocate a session id")
        if snapshot.user_id is not None:
            await self.store.add_to_owner(
                owner_key(snapshot.user_id),
                store_key(new_id),
                owner_ttl_for(snapshot, now, self.settings),
            )
        reason = REASON_LOGIN if old_id is not None and session.user_id else REASON_ROTATED
        kind = EVENT_CREATED if old_id is None else EVENT_RENEWED
        self._event(scope, kind, reason if old_id is not None else "created", new_id)
        if session.login_requested and snapshot.user_id is not None:
            self._event(scope, EVENT_LOGIN, REASON_LOGIN, new_id, principal=snapshot.user_id)
        if session.roles_changed is not None:
            before, after = session.roles_changed
            self._event(
                scope,
                KIND_AUTHZ_CHANGE,
                REASON_ROLES_CHANGED,
                new_id,
                principal=snapshot.user_id,
                details={"from": before, "to": after},
            )
        session._id, session._record = new_id, snapshot
        name = self.settings.effective_cookie_name
        return [
            (b"set-cookie", build_cookie(name, new_id, self.settings)),
            (b"cache-control", b"no-store"),
        ]

    async def revoke_user(self, user_id: str) -> int:
        count = await self.store.delete_owned(owner_key(user_id))
        self.events.emit(
            SecurityEvent(
                kind=EVENT_EXPIRED,
                reason=REASON_REVOKED,
                layer="sessions",
                action="allowed",
                principal=user_id,
                details={"sessions": count},
            )
        )
        return count

    def _event(
        self,
        scope: Scope,
        kind: str,
        reason: str,
        session_id: str,
        *,
        principal: str | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        context = scope.get(SCOPE_KEY) or get_context(scope)
        self.events.emit(
            SecurityEvent(
                kind=kind,
                reason=reason,
                layer="sessions",
                action="allowed",
                request_id=context.request_id,
                client=context.client_host,
                principal=principal,
                method=scope.get("method"),
                path=scope.get("path"),
                details={"session": self.id_hash(session_id), **(details or {})},
            )
        )


def session_manager_of(session: object) -> SessionManager | None:
    """The manager (its `store`, `settings` and `clock`) of a request's session, or
    None for anything else (no session layer ran, or another one did).

    For a layer inside `SessionMiddleware` that must read a session by its store key
    where the session layer keeps it, with its timeouts (`session_alive`): every
    request the layer sees gets a session of its manager, a new one when it sent no
    cookie."""
    return session._manager if isinstance(session, Session) else None


# --- the adapter --------------------------------------------------------------------

_SAVE_LATER: Final[Hook] = (EXTEND, ())
"""The place a new session's save hook keeps among the flow's hooks until the session
first changes (`Session._save_later`): a header edit that appends nothing, so the
hooks outside it keep their levels (`Flow.sender`)."""


def _commit(
    session: Session,
    layer: SessionMiddleware,
    flow: Flow,
    level: int,
    scope: Scope,
    message: Message,
) -> Message | Awaitable[Message | None]:
    """The save hook of `SessionMiddleware` (registered as a loaded session is
    attached, or by a new session's first change), its state bound with
    `functools.partial` (one C object, no closure cells)."""
    if session._id is None and not (
        session.modified or session.rotate_requested or session.logout_requested
    ):
        # A new session left untouched: `manager.commit` would neither save it nor
        # add a header (its first three cases need one of these), so the message
        # goes on with no coroutine made.
        return message
    return layer._save(flow, level, scope, session, message)


class SessionMiddleware:
    """Loads the session before the app runs, saves it when the response starts.

    The session is `scope["session"]` (Starlette's `request.session`) and
    `scope["bastion"].session`. A store failure fails closed: 503, never a request
    served without the session it claims, and never a session change silently lost.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: SessionSettings | None = None,
        *,
        store: Store | None = None,
        secret_keys: Iterable[SecretStr | str] | None = None,
        events: EventEmitter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.settings = settings or SessionSettings()
        if secret_keys is None:
            raise ConfigurationError("SessionMiddleware needs secret_keys")
        self.events = events or default_emitter()
        self.manager = SessionManager(
            store if store is not None else MemoryStore(clock=clock),
            self.settings,
            secret_keys=secret_keys,
            events=self.events,
            clock=clock,
        )
        self._cookie_name = self.settings.effective_cookie_name.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.settings.enabled:
            await self.app(scope, receive, send)
            return
        await run_stages((self,), self.app, scope, receive, send)

    def enter(self, flow: Flow) -> Awaitable[bool] | None:
        """The request phase (`bastion.stages`): load the session, and save it as the
        response starts. None when no store was asked (no cookie, or one that is not
        an id of ours: a new session, `SessionManager.load`'s first case), else the
        awaitable of the load (True when the store failed and the request was
        answered 503)."""
        headers = flow.headers
        # `flow.headers` has every name lower-cased, so a request with no line of
        # that name has no `Cookie` line in any case (the common case): nothing to
        # parse, and neither cookie reader would find an id.
        if b"cookie" in headers:
            lines = headers[b"cookie"]
            # One line without the cookie's name anywhere in it (only other
            # applications' cookies) holds no pair of that name, for either reader
            # (`read_cookie` reads a subset of these lines): no id, and no call.
            # `find`, not `in`: CPython 3.11's `bytes in bytes` first tries the
            # operand as an integer and raises and clears a TypeError (~1.9k
            # instructions), on a line nearly every browser request carries.
            if len(lines) != 1 or lines[0].find(self._cookie_name) >= 0:
                if flow.headers_lowercase:
                    untrusted_id = cookie_from_lines(lines, self._cookie_name)
                else:  # `read_cookie` matches the name exactly, as sent
                    untrusted_id = read_cookie(flow.scope["headers"], self._cookie_name)
                if untrusted_id is not None and looks_like_session_id(untrusted_id):
                    return self._load(flow, untrusted_id)
        session = Session()  # `self.manager.new_session()`, inlined: most requests
        session._manager = self.manager
        # `_attach(flow, session)`, inlined, with the hook of a new session.
        scope = flow.scope
        scope["session"] = session
        (scope.get(SCOPE_KEY) or get_context(scope)).session = session
        if scope["type"] == "websocket":
            return None  # a handshake cannot set cookies
        hooks = flow.hooks
        session._unsaved = (weakref.ref(flow), len(hooks), self)
        hooks.append(_SAVE_LATER)
        return None

    async def _load(self, flow: Flow, untrusted_id: str) -> bool:
        try:
            session = await self.manager.load(flow.scope, untrusted_id)
        except StoreError:
            await self._unavailable(flow.scope, flow.send)
            return True
        self._attach(flow, session)
        return False

    def _attach(self, flow: Flow, session: Session) -> None:
        """Give the request its session, and register the save as the response starts."""
        scope = flow.scope
        scope["session"] = session
        (scope.get(SCOPE_KEY) or get_context(scope)).session = session
        if scope["type"] == "websocket":
            return  # a handshake cannot set cookies
        flow.hooks.append((None, partial(_commit, session, self, flow, len(flow.hooks), scope)))

    async def _save(
        self, flow: Flow, level: int, scope: Scope, session: Session, message: Message
    ) -> Message | None:
        """Save the session as the response starts (`_attach`'s hook, at `level`)."""
        try:
            extra = await self.manager.commit(scope, session)
        except StoreError:
            # Nothing the application sends afterwards goes out.
            flow.dropped = True
            await self._unavailable(scope, flow.sender(level))
            return None
        if extra:
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        return message

    async def _unavailable(self, scope: Scope, send: Send) -> None:
        self.events.emit(
            SecurityEvent(
                kind=KIND_SYS_AVAILABILITY,
                reason=REASON_STORE_DOWN,
                layer="sessions",
                status=503,
                request_id=(scope.get(SCOPE_KEY) or get_context(scope)).request_id,
                path=scope.get("path"),
            )
        )
        await send_generic(scope, send, 503)
