"""The benchmarked app on Django: its ASGI handler and its security middleware.

`MIDDLEWARE` is Security, Session, Common, Csrf and XFrameOptions, with the settings
a careful user sets for a site behind HTTPS (HSTS, secure cookies). The views are
`async def`, so the whole request stays on the event loop: Django's fastest ASGI
path (a sync view would add a thread hop per request). Sessions use signed cookies
and there is no database, so nothing here waits on I/O. No WebSocket route: Django
itself serves none (Channels would), so Django is measured over HTTP only.

`django_app()` configures Django once per process; a process whose Django settings
were already configured for something else cannot run this variant.
"""

from __future__ import annotations

from typing import Final

import jwt
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from bastion.types import ASGIApp
from bench.client import DJANGO_CSRF_COOKIE, DJANGO_CSRF_HEADER, PEER_SECRET
from bench.peers import ALLOWED_HOSTS, verify_bearer

ONE_YEAR_SECONDS: Final = 365 * 24 * 3600
SETTINGS: Final[dict[str, object]] = {
    "DEBUG": False,
    "SECRET_KEY": PEER_SECRET,
    "ALLOWED_HOSTS": list(ALLOWED_HOSTS),
    "ROOT_URLCONF": __name__,
    "INSTALLED_APPS": [],
    "DATABASES": {},
    "MIDDLEWARE": [
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ],
    "SESSION_ENGINE": "django.contrib.sessions.backends.signed_cookies",
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
    "CSRF_COOKIE_NAME": DJANGO_CSRF_COOKIE,
    "CSRF_HEADER_NAME": "HTTP_" + DJANGO_CSRF_HEADER.upper().replace("-", "_"),
    "SECURE_HSTS_SECONDS": ONE_YEAR_SECONDS,
    "SECURE_CONTENT_TYPE_NOSNIFF": True,
    "X_FRAME_OPTIONS": "DENY",
    "USE_TZ": True,
    "LOGGING_CONFIG": None,
}


async def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hello", content_type="text/plain; charset=utf-8")


async def submit(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(len(request.POST)), content_type="text/plain; charset=utf-8")


async def api(request: HttpRequest) -> HttpResponse:
    try:
        verify_bearer(request.headers.get("authorization", ""))
    except jwt.InvalidTokenError:
        return JsonResponse({"error": "unauthorized"}, status=401)
    return JsonResponse({"ok": True})


urlpatterns = [path("hello", hello), path("submit", submit), path("api", api)]


def django_app() -> ASGIApp:
    """Django's ASGI handler for this module's settings and URLs."""
    import django
    from django.conf import settings
    from django.core.asgi import get_asgi_application

    if not settings.configured:
        settings.configure(**SETTINGS)
        django.setup()
    elif getattr(settings, "ROOT_URLCONF", None) != __name__:
        raise RuntimeError("Django is already configured in this process for another app")
    app: ASGIApp = get_asgi_application()
    return app
