"""`TransportMiddleware`: the thin ASGI adapter over the transport core.

Threat: the attacks listed in `bastion.transport`, and two of an adapter's own: a
layer that leaks one request's state into another (one instance serves every
request at once), and one that rewrites the scope the server and the outer layers
still read.
Defence: every decision is made by the pure core (`resolve_transport`, `check_host`,
`build_https_url`); this module feeds it from the scope and acts on the verdict,
keeps per-request state in `__call__`, and hands the app a copy of the scope.
Not covered: scopes other than `http` and `websocket` (lifespan and unknown types
pass through untouched).

References: ASGI HTTP and WebSocket specs, "Middleware" (copy the scope before
changing it) https://asgi.readthedocs.io/en/latest/specs/main.html#middleware .
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final

from bastion.context import SCOPE_KEY, RequestContext, get_context
from bastion.events import EventEmitter
from bastion.hosts import DEFAULT_PORTS, HostPort
from bastion.responses import Refuser
from bastion.stages import DEFAULT, UNLESS_SENT, Flow, Hook, run_stages
from bastion.transport.allowed_hosts import (
    LOCAL_HOSTS,
    AllowedHosts,
    HostVerdict,
    check_host,
    with_host_header,
)
from bastion.transport.https import build_https_url, hsts_header_value
from bastion.transport.proxies import (
    FORWARDING_SPELLINGS,
    ProxyTrust,
    ResolvedTransport,
    TransportFacts,
    resolve_transport,
)
from bastion.transport.reasons import (
    HOST_REFUSAL_STATUS,
    INSECURE_WEBSOCKET_STATUS,
    KIND,
    LAYER,
    PROXY_REFUSAL_STATUS,
    REASON_INSECURE_HTTP,
    REASON_INSECURE_WEBSOCKET,
)
from bastion.transport.settings import TransportSettings
from bastion.types import ASGIApp, Receive, Scope, Send

_GUARDED_SCOPES: Final = frozenset({"http", "websocket"})
_SECURE_SCHEMES: Final = frozenset({"https", "wss"})  # as `RequestContext.is_secure`
_HSTS_NAME: Final = b"strict-transport-security"
# Distinct (Host, forwarded host) pairs remembered: a site's own names and ports
# number a handful; anything beyond is a spray, which empties the memo.
_HOST_MEMO_SIZE: Final = 256
# The schemes the remembered-host path of `enter` serves: what ASGI servers send.
_REMEMBERED_SCHEMES: Final = frozenset(DEFAULT_PORTS)


# Whether an index of request headers has no proxy header: `isdisjoint` bound once,
# not looked up per request (the check costs some 850 instructions a request instead
# of 1,350, callgrind, GET /hello on the full stack).
_NOT_FORWARDED: Final = FORWARDING_SPELLINGS.isdisjoint


def _strip_forwarding(flow: Flow) -> None:
    """Give the flow a copy of its scope without the lines of `FORWARDING_HEADERS`,
    in any case and with `_` for `-` (`FORWARDING_SPELLINGS`)."""
    scope = flow.scope
    flow.scope = {
        **scope,
        "headers": [
            line for line in scope["headers"] if line[0].lower() not in FORWARDING_SPELLINGS
        ],
    }
    flow.index_headers()


class _Pass:
    """What the full path of `TransportMiddleware.enter` did for a request that
    passed with no proxy trusted: the scheme, host and port it wrote into the
    request context, and the response hook it added (HSTS, or None). Remembered
    under the request's one `Host` line, scope type and scheme, of which (with the
    settings) it is a pure function; it holds nothing else of the request."""

    __slots__ = ("hook", "host", "port", "scheme")

    def __init__(self, scheme: str, host: str | None, port: int | None, hook: Hook | None) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.hook = hook


class TransportMiddleware:
    """Resolve the client through trusted proxies, check the host, require HTTPS, add HSTS.

    Order: resolve (so every event names the real client), then the host check (no
    redirect is ever built from a host that failed it), then HTTPS, then the app with
    HSTS on its HTTPS responses (not on our refusals: a host that failed the check
    must not be pinned).

    The app receives a shallow copy of the scope, as the ASGI spec asks of
    middleware, so the server and the layers outside keep what they really saw:
    `client` and `scheme` are the resolved ones, and when a trusted proxy named the
    host (`X-Forwarded-Host`, `Forwarded: host=`), the `Host` header carries the
    validated host and port in place of the raw one, as werkzeug's `ProxyFix` does,
    so `request.url` and `url_for` name the host that was checked. When nothing was
    resolved differently the scope is passed on as it is. Every layer reads the
    resolved values from the shared request context.

    In monitor-only mode every decision is reported and nothing is refused,
    redirected or pinned (no HSTS, which a browser would keep for a year); a host
    that failed the check is not written into the app's `Host` header either.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        settings: TransportSettings | None = None,
        *,
        events: EventEmitter | None = None,
        inner_edits_hsts: bool = True,
    ) -> None:
        """`inner_edits_hsts`: whether a stage run inside this one in the same flow
        may add or drop a `Strict-Transport-Security` line. Then the HSTS default is
        checked against the response as those stages left it (`DEFAULT`); when none
        may, against the response as it was sent (`UNLESS_SENT`), the same answer
        for a shorter scan. `Shield` knows which (the headers layer, when its
        settings name that header) and says so; alone, or in a flow of unknown
        stages, the full check is the safe one, and costs the same."""
        self.app = app
        self.settings = settings = settings or TransportSettings()
        self._allowed = AllowedHosts.from_patterns(settings.allowed_hosts or LOCAL_HOSTS)
        self._trust = ProxyTrust(settings.trusted_proxies, frozenset(settings.proxy_headers))
        self._read_proxy_headers = bool(settings.trusted_proxies)
        # Monitor-only mode changes nothing, proxy headers included.
        self._strip = settings.strip_untrusted_proxy_headers and not settings.monitor_only
        self._require_https = not settings.insecure_allow_http
        hsts = hsts_header_value(settings)
        self._hsts = (_HSTS_NAME, hsts.encode("ascii")) if hsts else None
        # The response-start hook of a secure response: HSTS, unless the app set
        # it (keep the app's own policy if it set one; never send two).
        self._hsts_hook: Hook | None = None
        if self._hsts is not None:
            self._hsts_hook = (DEFAULT if inner_edits_hsts else UNLESS_SENT, self._hsts)
        self._refuse = Refuser(LAYER, events, monitor_only=settings.monitor_only)
        # Process-wide memo of a pure function, not request state (see `_check_host`).
        self._host_memo: dict[tuple[tuple[str, ...], str | None], HostVerdict] = {}
        # The same, for the common case only: one `Host` line, no proxy trusted, the
        # request passed. Keyed by the line's bytes, then by the scope's type and
        # scheme, so `enter` reads no facts and decides nothing (see `_remember`).
        self._allowed_host_memo: dict[bytes, dict[str, dict[str, _Pass]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in _GUARDED_SCOPES or not self.settings.enabled:
            await self.app(scope, receive, send)
            return
        await run_stages((self,), self.app, scope, receive, send)

    def enter(self, flow: Flow) -> Awaitable[bool] | None:
        """The request phase (`bastion.stages`): None when the request goes on as it
        is; otherwise the awaitable of `_enter_refusing` (True when refused or
        redirected). Nothing is changed before the checks have all passed, so the
        refusing path starts over from the same state."""
        scope = flow.scope
        # A request that passed before with the same one `Host` line, scope type and
        # scheme (remembered only when no proxy is trusted, so the peer is the
        # client): the outcome of the full path below, without reading the facts.
        # Inline, not a call: this is every request of a running site. Subscripts,
        # not `get`: a miss (no `Host` line or several, a line or scheme that did
        # not pass, no scheme) raises and takes the full path, which refuses or
        # remembers it.
        if not self._read_proxy_headers:
            try:
                (host_line,) = flow.headers[b"host"]
                passed = self._allowed_host_memo[host_line][scope["type"]][scope["scheme"]]
            except (KeyError, ValueError):
                pass
            else:
                if SCOPE_KEY in scope:
                    context = scope[SCOPE_KEY]
                    client = scope.get("client")
                    context.client = (str(client[0]), int(client[1])) if client else None
                    context.scheme = passed.scheme
                else:  # made from the scope: its client, and its scheme (`passed.scheme`)
                    context = get_context(scope)
                context.host = passed.host
                context.port = passed.port
                if passed.hook is not None:
                    flow.hooks.append(passed.hook)
                if self._strip and not _NOT_FORWARDED(flow.headers):
                    _strip_forwarding(flow)  # no proxy is trusted: the peer is the client
                return None
        facts = TransportFacts.from_index(
            scope, flow.headers, read_proxy_headers=self._read_proxy_headers
        )
        if self._read_proxy_headers:
            resolved = resolve_transport(facts, self._trust)
            client, scheme = resolved.client, resolved.scheme
            verdict = self._check_host(facts, resolved.untrusted_host)
            if resolved.reason:
                return self._enter_refusing(flow, facts, resolved, verdict)
        else:  # no proxy is trusted: the server's view is the resolved one
            resolved = None
            client, scheme = facts.peer, facts.scheme
            verdict = self._check_host(facts, None)
        host = verdict.host
        if host is None or (self._require_https and scheme not in _SECURE_SCHEMES):
            return self._enter_refusing(
                flow, facts, resolved or ResolvedTransport(client, scheme), verdict
            )
        context = scope.get(SCOPE_KEY) or get_context(scope)
        context.client, context.scheme = client, scheme
        context.host = host.host
        context.port = host.port or DEFAULT_PORTS.get(scheme)
        hook = self._hsts_hook if scheme in _SECURE_SCHEMES and not facts.is_websocket else None
        if hook is not None:
            flow.hooks.append(hook)
        if resolved is not None:
            self._rewrite_scope(flow, facts, resolved, host)
        elif len(facts.host_lines) == 1:
            self._remember(scope, facts.host_lines[0], context, hook)
        self._strip_untrusted(flow, facts)
        return None

    def _remember(
        self, scope: Scope, host_line: str, context: RequestContext, hook: Hook | None
    ) -> None:
        """Remember what the full path of `enter` just did for a request that passed
        with one `Host` line and no proxy trusted (`_Pass`), under the scheme it
        wrote into the context: a request that gave none (or "") had that scheme's
        outcome. Only the schemes servers send, so a line has a few entries per
        scope type; the memo is bounded as `_check_host`'s (a spray empties it).
        """
        scheme = context.scheme
        if scheme not in _REMEMBERED_SCHEMES:
            return
        memo = self._allowed_host_memo
        key = host_line.encode("latin-1")
        passes = memo.get(key)
        if passes is None:
            if len(memo) >= _HOST_MEMO_SIZE:
                memo.clear()
            passes = memo[key] = {scope_type: {} for scope_type in _GUARDED_SCOPES}
        passes[scope["type"]][scheme] = _Pass(scheme, context.host, context.port, hook)

    async def _enter_refusing(
        self,
        flow: Flow,
        facts: TransportFacts,
        resolved: ResolvedTransport,
        verdict: HostVerdict,
    ) -> bool:
        """`enter` when some check failed: refuse (True), or, in monitor-only mode,
        report and go on as `enter` would."""
        scope, send = flow.scope, flow.send
        context = scope.get(SCOPE_KEY) or get_context(scope)
        if resolved.reason and await self._refuse(
            scope, send, status=PROXY_REFUSAL_STATUS, kind=KIND, reason=resolved.reason
        ):
            return True
        context.client, context.scheme = resolved.client, resolved.scheme

        if verdict.host is None:
            untrusted_host = resolved.untrusted_host
            if untrusted_host is None:
                untrusted_host = ", ".join(facts.host_lines)
            if await self._refuse(
                scope,
                send,
                status=HOST_REFUSAL_STATUS,
                kind=KIND,
                reason=verdict.reason,
                details={"untrusted_host": untrusted_host},
            ):
                return True
        else:
            context.host = verdict.host.host
            context.port = verdict.host.port or DEFAULT_PORTS.get(resolved.scheme)

        if (
            self._require_https
            and not context.is_secure
            and await self._refuse_insecure(scope, send, facts, verdict.host)
        ):
            return True
        self._pass(flow, facts, resolved, verdict.host)
        return False

    def _pass(
        self,
        flow: Flow,
        facts: TransportFacts,
        resolved: ResolvedTransport,
        host: HostPort | None,
    ) -> None:
        """Let the request through: the app's scope, and HSTS on a secure response."""
        self._rewrite_scope(flow, facts, resolved, host)
        self._strip_untrusted(flow, facts)
        if (
            self._hsts_hook is not None
            and resolved.scheme in _SECURE_SCHEMES
            and not facts.is_websocket
        ):
            flow.hooks.append(self._hsts_hook)

    def _strip_untrusted(self, flow: Flow, facts: TransportFacts) -> None:
        """Drop the proxy headers of a request whose peer no trusted proxy is
        (`strip_untrusted_proxy_headers`): the checks are done, so this is the scope
        the app and the layers inside see."""
        if (
            self._strip
            and not _NOT_FORWARDED(flow.headers)
            and not (self._read_proxy_headers and self._trust.trusts_peer(facts.peer))
        ):
            _strip_forwarding(flow)

    @staticmethod
    def _rewrite_scope(
        flow: Flow, facts: TransportFacts, resolved: ResolvedTransport, host: HostPort | None
    ) -> None:
        """The app's copy of the scope, when a trusted proxy changed what it says."""
        scope = flow.scope
        changes: dict[str, Any] = {}
        if (resolved.client, resolved.scheme) != (facts.peer, facts.scheme):
            changes.update(client=resolved.client, scheme=resolved.scheme)
        if resolved.untrusted_host is not None and host is not None:
            headers = with_host_header(scope["headers"], host)
            if headers != scope["headers"]:
                changes["headers"] = headers
        if changes:
            flow.scope = {**scope, **changes}
            if "headers" in changes:
                flow.index_headers()

    def _check_host(self, facts: TransportFacts, forwarded_host: str | None) -> HostVerdict:
        """`check_host`, remembered: a site is asked for the same few hosts all day.

        `check_host` is pure and the allowed hosts are fixed, so a remembered verdict
        is the verdict. The memo is bounded: a spray of distinct hosts empties it
        (`_HOST_MEMO_SIZE`) rather than growing it.
        """
        memo_key = (facts.host_lines, forwarded_host)
        verdict = self._host_memo.get(memo_key)
        if verdict is None:
            verdict = check_host(facts.host_lines, self._allowed, forwarded_host=forwarded_host)
            if len(self._host_memo) >= _HOST_MEMO_SIZE:
                self._host_memo.clear()
            self._host_memo[memo_key] = verdict
        return verdict

    async def _refuse_insecure(
        self, scope: Scope, send: Send, facts: TransportFacts, host: HostPort | None
    ) -> bool:
        if facts.is_websocket:
            return await self._refuse(
                scope,
                send,
                status=INSECURE_WEBSOCKET_STATUS,
                kind=KIND,
                reason=REASON_INSECURE_WEBSOCKET,
            )
        if host is None:
            return False  # monitor-only with a refused host: nothing valid to redirect to
        location = build_https_url(
            host.host,
            self.settings.https_port,
            raw_path=scope.get("raw_path"),
            path=scope["path"],
            query_string=scope.get("query_string", b""),
        )
        return await self._refuse(
            scope,
            send,
            status=self.settings.https_redirect_status,
            kind=KIND,
            reason=REASON_INSECURE_HTTP,
            headers=[(b"location", location)],
        )
