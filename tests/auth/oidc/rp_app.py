"""The relying party under test: SessionMiddleware around Starlette and `OIDCLogin`.

Served by uvicorn on 127.0.0.1 (`serve("tests.auth.oidc.rp_app:create_app")`). Its
own port and the provider's are known only once both run, so the test posts them to
`/_test/configure`, which builds the `OIDCLogin` (test scaffolding, not a pattern).
`/_test/events` returns the reasons of the events emitted, for the assertions.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_network

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bastion.auth.oidc import OIDCLogin, OIDCSettings
from bastion.events import EventEmitter
from bastion.outbound import OutboundSettings
from bastion.sessions import Session, SessionMiddleware, SessionSettings
from bastion.types import ASGIApp, Receive, Scope, Send
from tests.support.secret_watch import never_logged

CLIENT_ID = "bastion-test-rp"
CLIENT_SECRET = never_logged("rp-secret-for-tests-only-0123456789")


class _Sink:
    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []

    def handle(self, record: Mapping[str, object]) -> None:
        self.records.append(dict(record))


def create_app() -> ASGIApp:
    sink = _Sink()
    events = EventEmitter([sink])
    holder: dict[str, OIDCLogin] = {}

    async def configure(request: Request) -> Response:
        body = await request.json()
        settings = OIDCSettings(
            issuer=body["issuer"],
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uri=body["redirect_uri"],
            post_logout_redirect_uri=body["redirect_uri"].rsplit("/auth", 1)[0] + "/",
            insecure_allow_http=True,
        )
        outbound = OutboundSettings(
            insecure_allow_http=True,
            allowed_hosts=("127.0.0.1",),
            allowed_ports=(int(body["op_port"]),),
            insecure_allowed_networks=(ip_network("127.0.0.1/32"),),
        )
        sink.records.clear()
        holder["oidc"] = OIDCLogin(settings, outbound=outbound, events=events)
        return JSONResponse({"ok": True})

    async def whoami(request: Request) -> Response:
        session = request.scope["session"]
        assert isinstance(session, Session)
        return PlainTextResponse(session.user_id or "anonymous")

    async def seen_events(request: Request) -> Response:
        return JSONResponse([r["reason"] for r in sink.records if r.get("layer") == "oidc"])

    async def oidc(scope: Scope, receive: Receive, send: Send) -> None:
        await holder["oidc"](scope, receive, send)

    class _OIDC:
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await oidc(scope, receive, send)

    endpoint = _OIDC()
    app = Starlette(
        routes=[
            Route("/auth/login", endpoint),
            Route("/auth/callback", endpoint),
            Route("/auth/logout", endpoint, methods=["POST"]),
            Route("/whoami", whoami),
            Route("/_test/configure", configure, methods=["POST"]),
            Route("/_test/events", seen_events),
        ]
    )
    return SessionMiddleware(
        app,
        SessionSettings(insecure_cookie_over_http=True),
        secret_keys=["rp-session-key-for-tests-only-0123456789"],
        events=events,
    )
