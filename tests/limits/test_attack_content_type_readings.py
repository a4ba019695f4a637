"""Attack audit of the limits layer: where it and Django read a `Content-Type` apart.

Django reads a request's `Content-Type` through `email.message`
(`django.utils.http.parse_header_parameters`); the layer read it as python-multipart
and FastAPI do. Each gap let a form body past the layer's counts that Django then
parsed whole:

* `limits-multipart-media-type-with-equals`, `-files`,
  `limits-urlencoded-media-type-with-equals`: Django cuts the media type at an `=`
  before the first `;`, so `multipart/form-data=x; boundary=B` is multipart to it
  and was no form to the layer (FastAPI does not cut there: it reads
  `application/x-www-form-urlencoded=+json; a=b` as JSON). Such a media type is
  refused, `content-type-invalid`.
* `limits-multipart-boundary-rfc2231`, `-extended`: `email.message` joins
  `boundary*0=C` (or `boundary*=utf-8''C`) into the boundary, in place of
  `boundary=B`, so Django split the body at `C` while the layer counted parts at
  `B`. A multipart `Content-Type` with any RFC 2231 parameter is refused,
  `multipart-malformed` (`limits-multipart-charset-rfc2231`: `charset*0=` too).
* `limits-multipart-boundary-after-escaped-quote`: `email.message` ends a quoted
  value by counting `"` less `\\"`, so after `a="x\\\\"` it reads `; boundary=B`
  inside the value and a later `boundary=C` (inside a quoted value to the layer)
  as the boundary. A backslash in a multipart `Content-Type` is refused.

Each beside the legitimate upload and form that must still pass, through a real
Django ASGI application, the raw ASGI test app, Starlette and FastAPI; and a
property test holds the layer's reading to Django's, FastAPI's and
python-multipart's over generated `Content-Type` values.
"""

from __future__ import annotations

import email.message
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from python_multipart.multipart import parse_options_header

from bastion.events import EventEmitter
from bastion.limits import LimitsMiddleware, LimitsSettings
from bastion.limits.checks import plan_body, read_head
from bastion.limits.forms import parse_boundary
from bastion.limits.reasons import (
    REASON_CONTENT_TYPE_INVALID,
    REASON_MULTIPART_MALFORMED,
    STATUS_BY_REASON,
)
from bastion.limits.settings import resolve_limits
from bastion.types import ASGIApp
from tests.conftest import RecordingSink, asgi_client
from tests.support.apps import FRAMEWORKS, make_app

# The layer's limits in these tests; every attack body holds more.
MAX_FIELDS = 5
MAX_FILES = 2
LIMITS = {"max_form_fields": MAX_FIELDS, "max_form_files": MAX_FILES}
OVER = 20  # fields in an attack body: Django's own limits (1000, 100 files) pass it


def _part(boundary: bytes, name: bytes, value: bytes = b"v", filename: bytes = b"") -> bytes:
    disposition = b'form-data; name="' + name + b'"'
    if filename:
        disposition += b'; filename="' + filename + b'"'
    return (
        b"--"
        + boundary
        + b"\r\nContent-Disposition: "
        + disposition
        + b"\r\n\r\n"
        + value
        + b"\r\n"
    )


def _fields(boundary: bytes, count: int) -> bytes:
    return b"".join(_part(boundary, b"f%d" % i) for i in range(count))


def _files(boundary: bytes, count: int) -> bytes:
    return b"".join(_part(boundary, b"u%d" % i, b"data", b"u%d.txt" % i) for i in range(count))


def _closed(boundary: bytes, parts: bytes) -> bytes:
    return parts + b"--" + boundary + b"--\r\n"


# Parts at `C`, Django's boundary, then the closing delimiter of `B`, the one the
# layer read: to the layer a preamble and no part.
AT_C_CLOSED_AT_B = _closed(b"C", _fields(b"C", OVER)) + b"--B--\r\n"
# A legitimate upload: three fields and a file.
UPLOAD = _closed(b"B", _fields(b"B", 3) + _files(b"B", 1))
FORM = b"f0=1&f1=2&f2=3"


@dataclass(frozen=True)
class Case:
    content_type: bytes
    body: bytes
    reason: str = ""  # "" for a legitimate request
    # What Django parses the body as, unguarded: (fields, files).
    django_parses: tuple[int, int] = (0, 0)


CASES = [
    pytest.param(
        Case(
            b"multipart/form-data=x; boundary=B",
            _closed(b"B", _fields(b"B", OVER)),
            REASON_CONTENT_TYPE_INVALID,
            (OVER, 0),
        ),
        id="limits-multipart-media-type-with-equals",
    ),
    pytest.param(
        Case(
            b"multipart/form-data=x; boundary=B",
            _closed(b"B", _files(b"B", OVER)),
            REASON_CONTENT_TYPE_INVALID,
            (0, OVER),
        ),
        id="limits-multipart-media-type-with-equals-files",
    ),
    pytest.param(
        Case(
            b"application/x-www-form-urlencoded=x; a=b",
            b"&".join(b"f%d=1" % i for i in range(OVER)),
            REASON_CONTENT_TYPE_INVALID,
            (OVER, 0),
        ),
        id="limits-urlencoded-media-type-with-equals",
    ),
    pytest.param(
        Case(
            b"multipart/form-data; boundary=B; boundary*0=C",
            AT_C_CLOSED_AT_B,
            REASON_MULTIPART_MALFORMED,
            (OVER, 0),
        ),
        id="limits-multipart-boundary-rfc2231",
    ),
    pytest.param(
        Case(
            b"multipart/form-data; boundary*=utf-8''C; boundary=B",
            AT_C_CLOSED_AT_B,
            REASON_MULTIPART_MALFORMED,
            (OVER, 0),
        ),
        id="limits-multipart-boundary-rfc2231-extended",
    ),
    pytest.param(
        Case(
            b'multipart/form-data; a="x\\\\"; boundary=B; c="; boundary=C; d="',
            AT_C_CLOSED_AT_B,
            REASON_MULTIPART_MALFORMED,
            (OVER, 0),
        ),
        id="limits-multipart-boundary-after-escaped-quote",
    ),
    pytest.param(
        # Within every limit: no count escapes through a charset, but Django
        # decodes the fields in UTF-7 (as the login guard knows), and one rule for
        # every RFC 2231 parameter leaves none to misjudge.
        Case(
            b"multipart/form-data; boundary=B; charset*0=utf-8",
            UPLOAD,
            REASON_MULTIPART_MALFORMED,
            (3, 1),
        ),
        id="limits-multipart-charset-rfc2231",
    ),
    # Legitimate: what browsers and HTTP clients send.
    pytest.param(
        Case(b"multipart/form-data; boundary=B", UPLOAD, django_parses=(3, 1)),
        id="limits-multipart-upload-ok",
    ),
    pytest.param(
        Case(b'multipart/form-data; boundary="B"', UPLOAD, django_parses=(3, 1)),
        id="limits-multipart-quoted-boundary-ok",
    ),
    pytest.param(
        Case(b"multipart/form-data; charset=utf-8; boundary=B", UPLOAD, django_parses=(3, 1)),
        id="limits-multipart-charset-utf8-ok",
    ),
    pytest.param(
        Case(b"application/x-www-form-urlencoded", FORM, django_parses=(3, 0)),
        id="limits-urlencoded-form-ok",
    ),
    pytest.param(
        Case(b"application/x-www-form-urlencoded; charset=UTF-8", FORM, django_parses=(3, 0)),
        id="limits-urlencoded-charset-utf8-ok",
    ),
]


class DjangoForms:
    """The URL configuration of a real Django ASGI application (`ASGIHandler`):
    `POST /submit` answers the number of fields and files Django parsed."""

    def __init__(self) -> None:
        from django.http import HttpRequest, HttpResponse
        from django.urls import path

        self.seen: list[tuple[int, int]] = []

        def submit(request: HttpRequest) -> HttpResponse:
            fields = sum(len(values) for _name, values in request.POST.lists())
            files = sum(len(values) for _name, values in request.FILES.lists())
            self.seen.append((fields, files))
            return HttpResponse(f"{fields} {files}")

        self.urlpatterns = [path("submit", submit)]


@pytest.fixture
def django_forms() -> Iterator[tuple[DjangoForms, ASGIApp]]:
    import django
    from django.conf import settings as django_settings

    if not django_settings.configured:
        django_settings.configure(DEBUG=False, SECRET_KEY="t" * 50)
        django.setup()
    from django.core.handlers.asgi import ASGIHandler
    from django.test import override_settings

    views = DjangoForms()
    with override_settings(
        ROOT_URLCONF=views,
        ALLOWED_HOSTS=["testserver"],
        MIDDLEWARE=[],  # no CSRF check: the view is reached as the layer lets it
        DEFAULT_CHARSET="utf-8",
    ):
        yield views, ASGIHandler()


def _headers(case: Case) -> dict[str, str]:
    return {"content-type": case.content_type.decode("latin-1")}


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES)
async def test_django_parses_what_the_layer_lets_through(
    case: Case,
    django_forms: tuple[DjangoForms, ASGIApp],
    events: EventEmitter,
    sink: RecordingSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    views, django_app = django_forms
    # Unguarded, Django parses the attack body whole: past the layer's limits.
    async with asgi_client(django_app) as client:
        bare = await client.post("/submit", content=case.body, headers=_headers(case))
    parsed = "{} {}".format(*case.django_parses)
    assert (bare.status_code, bare.text) == (200, parsed)
    views.seen.clear()
    app = LimitsMiddleware(django_app, LimitsSettings(**LIMITS), events=events)
    async with asgi_client(app) as client:
        response = await client.post("/submit", content=case.body, headers=_headers(case))
    if case.reason:
        assert response.status_code == STATUS_BY_REASON[case.reason]
        assert sink.reasons() == [case.reason]
        assert views.seen == []
    else:
        assert (response.status_code, response.text) == (200, parsed)
        assert sink.records == []
    assert app.in_flight == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.anyio
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", CASES)
async def test_other_applications_get_the_same_verdict(
    case: Case,
    framework: str,
    events: EventEmitter,
    sink: RecordingSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The raw ASGI test app, Starlette and FastAPI (`/submit` answers the byte count)."""
    caplog.set_level(logging.WARNING)
    app = LimitsMiddleware(make_app(framework), LimitsSettings(**LIMITS), events=events)
    async with asgi_client(app) as client:
        response = await client.post("/submit", content=case.body, headers=_headers(case))
    if case.reason:
        assert response.status_code == STATUS_BY_REASON[case.reason]
        assert sink.reasons() == [case.reason]
        assert "request id" in response.text
    else:
        assert (response.status_code, response.text) == (200, str(len(case.body)))
        assert sink.records == []
    assert app.in_flight == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("multipart/form-data=x; boundary=B", id="limits-equals-bodiless-get-ok"),
        pytest.param("multipart/form-data; boundary*0=C", id="limits-rfc2231-bodiless-get-ok"),
    ],
)
async def test_bodiless_request_is_never_refused_for_its_content_type(
    content_type: str, events: EventEmitter, sink: RecordingSink
) -> None:
    app = LimitsMiddleware(make_app("raw"), LimitsSettings(**LIMITS), events=events)
    async with asgi_client(app) as client:
        response = await client.get("/", headers={"content-type": content_type})
    assert (response.status_code, response.text) == (200, "hello")
    assert sink.records == []


BOUNDARIES = [
    pytest.param(b"multipart/form-data; boundary=B", b"B", id="limits-boundary-plain-ok"),
    pytest.param(b'multipart/form-data; boundary="B C"', b"B C", id="limits-boundary-quoted-ok"),
    pytest.param(
        b'multipart/form-data; a="x;y"; boundary=B', b"B", id="limits-boundary-quoted-semicolon-ok"
    ),
    pytest.param(b"multipart/form-data; boundary*0=C", None, id="limits-boundary-rfc2231-alone"),
    pytest.param(
        b"multipart/form-data; boundary=B; boundary*1=C", None, id="limits-boundary-rfc2231-part"
    ),
    pytest.param(
        b"multipart/form-data; boundary=B; name*=utf-8''x", None, id="limits-boundary-rfc2231-other"
    ),
    pytest.param(
        b'multipart/form-data; a="\\\\"; boundary=B', None, id="limits-boundary-backslash-elsewhere"
    ),
    # Django reads one parameter from `"` to the end, holding no boundary.
    pytest.param(b'multipart/form-data"; boundary=B', None, id="limits-boundary-quote-before"),
]


@pytest.mark.parametrize(("content_type", "expected"), BOUNDARIES)
def test_parse_boundary_reads_no_parameter_apart_from_django(
    content_type: bytes, expected: bytes | None
) -> None:
    assert parse_boundary(content_type) == expected
    if expected is not None:
        assert _django_reading(content_type.decode()) == ("multipart/form-data", expected)


# -- The readings: the layer's plan against Django's, FastAPI's and python-multipart's --

_DEFAULT_LIMITS = resolve_limits(LimitsSettings())
_MEDIA_TYPES = st.sampled_from(
    [
        "multipart/form-data",
        "Multipart/Form-Data",
        "multipart/form-data=x",
        "multipart/form-data\x1e",
        'multipart/form-data="',
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded=+json",
        "application/json",
        "text/plain",
        "",
    ]
)
# A parameter as the layer's grammar reads it (`name=value`, the value a token or
# quoted), with the names and values that `email.message` reads otherwise: RFC 2231
# suffixes, and quoted values holding `"`, `\\` and `;`.
_QUOTED = st.text(alphabet=' ;="\\BC', max_size=6) | st.sampled_from(
    ["x\\\\", "; boundary=C; d=", 'x\\"y']
)
_PARAMETER = st.builds(
    lambda *pieces: "".join(pieces),
    st.sampled_from([";", "; "]),
    st.sampled_from(["boundary", "BOUNDARY", "charset", "a"]),
    st.sampled_from(["", "", "*", "*0", "*1", "*0*"]),
    st.just("="),
    st.sampled_from(["B", "C", "utf-8''C"]) | _QUOTED.map(lambda text: f'"{text}"'),
)
_PARAMETERS = st.lists(_PARAMETER, max_size=4).map("".join)
# Free text from the pieces the parsers read differently, padding included.
_PIECES = st.lists(
    st.sampled_from(
        [";", "; ", " ", "\t", "=", '"', "\\", "*", "*0", "boundary", "B", "C", "\x1e", "\xa0"]
    ),
    max_size=12,
).map("".join)
_CONTENT_TYPES = st.builds(
    lambda media_type, parameters: (media_type + parameters).strip(" \t"),
    _MEDIA_TYPES,
    _PARAMETERS | _PIECES,
)


def _django_reading(content_type: str) -> tuple[str, bytes]:
    """The form Django parses a body under `content_type` as (`HttpRequest`'s
    `_load_post_and_files` and `MultiPartParser`), and the multipart boundary; ""
    when none."""
    from django.http.multipartparser import MultiPartParser
    from django.utils.http import parse_header_parameters

    try:
        media_type, parameters = parse_header_parameters(content_type)
    except (ValueError, TypeError):
        # An RFC 2231 charset it does not know, or `boundary*` beside `boundary*0`
        # (`email.utils.decode_params` sorts None with 0): the request fails.
        return "", b""
    if media_type == "application/x-www-form-urlencoded":
        return media_type, b""
    boundary = parameters.get("boundary")
    if (
        media_type != "multipart/form-data"
        or not content_type.startswith("multipart/")
        or not content_type.isascii()
        or not boundary
        or not MultiPartParser.boundary_re.fullmatch(boundary)
    ):
        return "", b""
    return media_type, boundary.encode("ascii")


def _starlette_reading(content_type: str) -> tuple[str, bytes]:
    """The form Starlette parses (`Request.form`, python-multipart), and its boundary."""
    media_type, parameters = parse_options_header(content_type)
    if media_type == b"application/x-www-form-urlencoded":
        return "application/x-www-form-urlencoded", b""
    if media_type == b"multipart/form-data" and parameters.get(b"boundary"):
        return "multipart/form-data", parameters[b"boundary"]
    return "", b""


def _fastapi_reads_json(content_type: str) -> bool:
    """Whether FastAPI parses a body under `content_type` as JSON (its `routing`)."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


@settings(max_examples=3000, deadline=None)
@given(content_type=_CONTENT_TYPES)
def test_no_parser_reads_a_form_the_layer_does_not_count(content_type: str) -> None:
    """Whenever Django or Starlette parses a form, the layer counts that form (at the
    same boundary) or refuses the body; whenever FastAPI parses JSON, the layer
    scans it as JSON or refuses the body."""
    raw = content_type.encode("latin-1")
    plan = plan_body(read_head([(b"content-type", raw)]), _DEFAULT_LIMITS)
    syntax = {"multipart/form-data": "multipart", "application/x-www-form-urlencoded": "urlencoded"}
    for form, boundary in (_django_reading(content_type), _starlette_reading(content_type)):
        if form:
            assert plan.refusal or (plan.syntax, plan.boundary) == (syntax[form], boundary)
    if _fastapi_reads_json(content_type):
        assert plan.refusal or plan.syntax == "json"


@settings(max_examples=3000, deadline=None)
@given(parameters=_PARAMETERS)
# The shapes of the three attacks, too rare to count on drawing.
@example(parameters="; boundary=B; boundary*0=C")
@example(parameters="; boundary*=utf-8''C; boundary=B")
@example(parameters='; a="x\\\\"; boundary=B; c="; boundary=C; d="')
def test_multipart_boundary_is_djangos_or_refused(parameters: str) -> None:
    """The boundary of a multipart body is the one Django splits at, or none."""
    content_type = "multipart/form-data" + parameters
    plan = plan_body(read_head([(b"content-type", content_type.encode())]), _DEFAULT_LIMITS)
    if plan.syntax == "multipart":
        assert _django_reading(content_type) == ("multipart/form-data", plan.boundary)
    else:
        assert plan.refusal
