"""The ASGI adapter: feeds the core, reads the token when asked, acts on the verdict.

Per request: `check_common_request` (inlined in `enter`) answers safe methods and
browsers' same-origin posts from the header index (`bastion.stages.Flow.headers`);
any other request is turned into `RequestFacts` and decided by `check_request`. When
it asks for the token, take it from the token header or, failing that, from the form
body: the body is read only then, at most `max_body_bytes` of it, and the very same
messages are replayed to the app before anything else it receives (past the first
`MAX_KEPT_MESSAGES`, their bytes as one message, so that memory follows the bytes).
The session's CSRF secret comes from Bastion's session layer, which must run outside
this one; without it, requests that need a token are refused (`no-session`).

Speed: the common requests cost a few lookups in the header index, with no facts and
no verdict built (`enter` inlines `check_common_request`: no call for them, and
tests/csrf/test_enter_parity.py runs the attack table through both); the `Vary` line
is one header edit built at import (`_ADD_VARY`), which the flow applies to its own
copy of the response's lines, with no closure or message copy of this layer's per
request. Neither cookies nor the body are read unless the token is needed, which the
design asks only of requests with neither Fetch Metadata nor `Origin`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import SecretStr

from bastion.context import SCOPE_KEY, get_context
from bastion.csrf.core import (
    FETCH_SITE_PASSES,
    METHOD_OVERRIDE_HEADERS,
    METHOD_OVERRIDE_PARAMETER,
    SAFE_METHODS,
    RequestFacts,
    Verdict,
    check_request,
)
from bastion.csrf.forms import token_from_form
from bastion.csrf.reasons import REASON_BODY_TOO_LARGE, REASON_NO_SESSION
from bastion.csrf.settings import CSRFSettings, compile_policy
from bastion.csrf.tokens import CSRFTokens
from bastion.events import KIND_MALICIOUS_CSRF, EventEmitter
from bastion.exceptions import ConfigurationError
from bastion.responses import Refuser, header_value
from bastion.sessions import Session
from bastion.stages import EDIT, Flow, Hook, run_stages
from bastion.types import ASGIApp, Message, RawHeaders, Receive, Scope, Send

LAYER: Final = "csrf"
REFUSAL_STATUS: Final = 403
# Where `issue_token` finds the token machinery of the CSRF layer serving a request.
TOKENS_SCOPE_KEY: Final = "bastion.csrf"
VARY_NAMES: Final = (b"Origin", b"Sec-Fetch-Site")
_VARY_LINES: Final = ((b"vary", b", ".join(VARY_NAMES)),)
# Body messages replayed as they came; the bytes of any later ones are replayed as
# one message. A client can send its body a byte at a time, or in empty HTTP/2 DATA
# frames that carry no byte at all: kept one by one, each message costs a few hundred
# bytes of memory for at most one byte of body, so `max_body_bytes` alone would bound
# nothing. Browsers send a form in a few large chunks, and an application cannot
# tell the difference (ASGI leaves the chunking to the server).
MAX_KEPT_MESSAGES: Final = 64


# --- Helpers the application calls ---------------------------------------------


def _scope_of(request_or_scope: Any) -> Mapping[str, Any]:
    scope = (
        request_or_scope
        if isinstance(request_or_scope, Mapping)
        else getattr(request_or_scope, "scope", None)
    )
    if not isinstance(scope, Mapping):
        raise TypeError("issue_token expects an ASGI scope or a request with a .scope")
    return scope


def issue_token(request_or_scope: Any) -> str:
    """A new CSRF token for this request's session (a Starlette `Request` or a scope).

    Draws the session's CSRF secret on first use, which saves the session and sets
    its cookie. Every call returns different bytes (masking), all of them valid.
    Raises ConfigurationError when no CSRF layer or no Bastion session layer ran.
    """
    scope = _scope_of(request_or_scope)
    tokens = scope.get(TOKENS_SCOPE_KEY)
    if not isinstance(tokens, CSRFTokens):
        raise ConfigurationError("issue_token: no CSRFMiddleware serves this request")
    context = scope.get(SCOPE_KEY)
    session = getattr(context, "session", None)
    if not isinstance(session, Session):
        raise ConfigurationError(
            "issue_token: CSRF tokens need bastion's SessionMiddleware outside CSRFMiddleware"
        )
    return tokens.issue(session.csrf_secret())


# --- Response headers ------------------------------------------------------------


def append_vary(headers: Iterable[tuple[bytes, bytes]], names: Iterable[bytes]) -> RawHeaders:
    """The headers with a `Vary` line for each of `names` not already varied on.

    The app's `Vary` lines are kept as they are; `Vary: *` already covers everything.
    """
    result = list(headers)
    present: set[bytes] = set()
    for name, value in result:
        if name.lower() == b"vary":
            present.update(token.strip(b" \t").lower() for token in value.split(b","))
    if b"*" in present:
        return result
    missing = [name for name in names if name.lower() not in present]
    if missing:
        result.append((b"vary", b", ".join(missing)))
    return result


def _vary_on_sources(headers: RawHeaders) -> RawHeaders:
    """`append_vary(headers, VARY_NAMES)`, with no set built when the app sent no
    `Vary` (the usual case): then the line is simply appended, to a new list. Only a
    name of four characters is lower-cased (as `bastion.stages._is_set` does)."""
    for name, _ in headers:
        if len(name) == 4 and name.lower() == b"vary":
            return append_vary(headers, VARY_NAMES)
    return [*headers, *_VARY_LINES]


# The response hook of every request whose answer depended on `Origin` and
# `Sec-Fetch-Site`: a header edit (`bastion.stages.HeaderOp`), built once.
_ADD_VARY: Final[Hook] = (EDIT, _vary_on_sources)


# --- Reading the body ----------------------------------------------------------


@dataclass(slots=True)
class _BufferedBody:
    """The messages read so far, to replay in order, and the bytes they carried.

    The first `MAX_KEPT_MESSAGES` body messages are kept as they came; the bytes of
    any later ones are only added to `body`, from `merged_from` on, and replayed as
    one message (`replay`).
    """

    messages: list[Message] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False
    disconnected: bool = False
    merged_from: int = -1  # where the bytes replayed as one message begin; -1: none

    def keep(self, message: Message) -> None:
        """Take one `http.request` message."""
        if len(self.messages) < MAX_KEPT_MESSAGES:
            self.messages.append(message)
        elif self.merged_from < 0:
            self.merged_from = len(self.body)
        self.body += message.get("body", b"")

    def replay(self) -> list[Message]:
        """The messages for the app, in the order they came."""
        if self.merged_from < 0:
            return self.messages
        merged: Message = {
            "type": "http.request",
            "body": bytes(self.body[self.merged_from :]),
            "more_body": not self.complete,
        }
        return [*self.messages[:MAX_KEPT_MESSAGES], merged, *self.messages[MAX_KEPT_MESSAGES:]]


async def _read_body(receive: Receive, max_bytes: int) -> _BufferedBody:
    """Read the body until it ends, the client leaves, or more than `max_bytes` came."""
    buffered = _BufferedBody()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            buffered.messages.append(message)
            buffered.disconnected = message["type"] == "http.disconnect"
            return buffered
        buffered.keep(message)
        if len(buffered.body) > max_bytes:
            return buffered  # incomplete: not looked through, replayed as it came
        if not message.get("more_body", False):
            buffered.complete = True
            return buffered


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that yields `messages` first, unchanged, then the real ones."""
    pending = deque(messages)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


# --- The adapter -------------------------------------------------------------------


class CSRFMiddleware:
    """Refuses cross-site unsafe requests; see `bastion.csrf` for the algorithm.

    `secret_keys` sign the tokens of the fallback (the first signs, all verify); use
    the same list as the rest of Bastion. `clock` is injected for tests.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: CSRFSettings | None = None,
        *,
        secret_keys: Iterable[SecretStr | str],
        events: EventEmitter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.settings = settings = settings if settings is not None else CSRFSettings()
        self.policy = compile_policy(settings)
        self.tokens = CSRFTokens(
            secret_keys, max_age_seconds=settings.token_max_age_seconds, clock=clock
        )
        self._refuse = Refuser(LAYER, events, monitor_only=settings.monitor_only)
        self._token_header = settings.token_header.encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.settings.enabled:
            # Templates and dependencies issue tokens through this, even with the layer off.
            scope[TOKENS_SCOPE_KEY] = self.tokens
            await self.app(scope, receive, send)
            return
        await run_stages((self,), self.app, scope, receive, send)

    def enter(self, flow: Flow) -> Awaitable[bool] | None:
        """The request phase (`bastion.stages`): None when the request goes on as it
        is, else the awaitable of `_enter_checking` (True when refused, or when the
        client left while its body was read: nobody to answer)."""
        scope = flow.scope
        scope[TOKENS_SCOPE_KEY] = self.tokens
        headers = flow.headers
        # `check_common_request`, inlined (the two requests nearly every browser
        # sends); whatever it leaves to `check_request` goes there.
        if scope["method"] in SAFE_METHODS:
            query = scope.get("query_string", b"")
            # `find`, not `in` (`bastion.csrf.core.query_overrides`).
            if METHOD_OVERRIDE_HEADERS.isdisjoint(headers) and (
                not query
                or (query.lower().find(METHOD_OVERRIDE_PARAMETER) < 0 and query.find(b"%") < 0)
            ):
                return None  # ALLOW: a safe method nothing overrides, no `Vary`
        else:
            sites = headers.get(b"sec-fetch-site")
            if (
                sites is not None
                and len(sites) == 1
                and sites[0] in FETCH_SITE_PASSES
                and b"authorization" not in headers
                and scope["path"] not in self.policy.exempt_paths
            ):
                flow.hooks.append(_ADD_VARY)  # ALLOW_VARIES: step 3 on Sec-Fetch-Site
                return None
        facts = RequestFacts.from_index(scope, headers)
        verdict = check_request(facts, self.policy)
        if not verdict.allowed:
            return self._enter_checking(flow, facts, verdict)
        if verdict.varies:
            flow.hooks.append(_ADD_VARY)
        return None

    async def _enter_checking(self, flow: Flow, facts: RequestFacts, verdict: Verdict) -> bool:
        """`enter` for a request not allowed by its headers alone: check the token,
        then refuse (True) or let it through."""
        scope = flow.scope
        if verdict.needs_token:
            reason, replay = await self._check_token(scope, flow.receive)
            if replay is None:
                return True  # the client left while we read its body: nobody to answer
            flow.receive = replay
            verdict = Verdict(allowed=not reason, reason=reason, varies=True)

        if not verdict.allowed and await self._refuse(
            scope,
            flow.send,
            status=REFUSAL_STATUS,
            kind=KIND_MALICIOUS_CSRF,
            reason=verdict.reason,
            headers=_VARY_LINES if verdict.varies else (),
            details=_details(facts, verdict),
        ):
            return True
        if verdict.varies:
            flow.hooks.append(_ADD_VARY)
        return False

    async def _check_token(self, scope: Scope, receive: Receive) -> tuple[str, Receive | None]:
        """The token's verdict ("" or a reason) and the `receive` the app must use
        (None if the client disconnected while its body was read)."""
        session = get_context(scope).session
        if not isinstance(session, Session):
            return REASON_NO_SESSION, receive
        headers = scope["headers"]
        untrusted_token = _decoded(header_value(headers, self._token_header))
        if not untrusted_token:
            buffered = await _read_body(receive, self.settings.max_body_bytes)
            if buffered.disconnected:
                return "", None
            receive = _replaying(buffered.replay(), receive)
            if not buffered.complete:
                return REASON_BODY_TOO_LARGE, receive
            untrusted_token = token_from_form(
                bytes(buffered.body),
                header_value(headers, b"content-type"),
                self.settings.token_field,
                self.settings.max_form_fields,
            )
        # A session without a cookie has no secret yet, so no token can be for it;
        # do not draw one (that would create a session for a refused request).
        session_secret = None if session.is_new else session.csrf_secret()
        return self.tokens.check(untrusted_token, session_secret), receive


def _decoded(value: bytes | None) -> str | None:
    # latin-1 maps every byte to one character, so a non-ASCII value stays present
    # (and fails as token-invalid) instead of vanishing as token-missing.
    return None if value is None else value.decode("latin-1").strip()


def _details(facts: RequestFacts, verdict: Verdict) -> dict[str, object]:
    details: dict[str, object] = {
        "origin": facts.untrusted_origin,
        "sec_fetch_site": facts.untrusted_fetch_site,
    }
    if verdict.cause:
        details["cause"] = verdict.cause
    if facts.method_overrides:
        details["method_override"] = b", ".join(facts.method_overrides)
    return details
