"""Secrets in exception messages that the traceback log must not carry: a database
URL with its password, a token named with a prefix (`access_token=`), a Java-style
session id. The log line keeps the rest of the message, so it still says what failed."""

from __future__ import annotations

import logging

import pytest

from bastion.errors import MAX_LOGGED_TRACEBACK_CHARS, ErrorsMiddleware
from bastion.types import Receive, Scope, Send
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio


async def _logged(message: str, caplog: pytest.LogCaptureFixture) -> str:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ConnectionError(message)

    with caplog.at_level(logging.ERROR, logger="bastion.errors"):
        async with asgi_client(ErrorsMiddleware(app)) as client:
            response = await client.get("/")
    assert response.status_code == 500
    assert message not in response.text
    (record,) = caplog.records
    return record.getMessage()


@pytest.mark.parametrize(
    ("message", "secret", "kept"),
    [
        pytest.param(
            "cannot connect to postgresql://app:hunter2-db@db.internal:5432/app",
            "hunter2-db",
            "db.internal:5432/app",
            id="errors-log-url-userinfo",
        ),
        pytest.param(
            "Error connecting to redis://:r3dis-pass@cache:6379/0",
            "r3dis-pass",
            "cache:6379/0",
            id="errors-log-url-password-only",
        ),
        pytest.param(
            "upstream refused https://api.example/cb?access_token=tok-123-secret&x=1",
            "tok-123-secret",
            "https://api.example/cb",
            id="errors-log-prefixed-token-name",
        ),
        pytest.param(
            "stale cookie jsessionid=A1B2C3-session-secret",
            "A1B2C3-session-secret",
            "stale cookie",
            id="errors-log-prefixed-session-id",
        ),
    ],
)
async def test_exception_log_drops_the_secret(
    message: str, secret: str, kept: str, caplog: pytest.LogCaptureFixture
) -> None:
    line = await _logged(message, caplog)
    assert secret not in line
    assert kept in line
    assert "ConnectionError" in line


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("cannot reach https://api.example/v1/users@2", id="errors-log-url-ok"),
        pytest.param("max_tokens=100 exceeds the limit", id="errors-log-counter-ok"),
    ],
)
async def test_exception_log_keeps_what_is_no_secret(
    message: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert message in await _logged(message, caplog)


async def test_a_huge_exception_message_is_logged_by_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A message quoting a whole request (a megabyte) makes one bounded log line,
    which keeps the end of the traceback: the exception and its message's tail."""
    message = "x" * 1_000_000 + " password=hunter2 the-end"
    line = await _logged(message, caplog)
    assert len(line) < MAX_LOGGED_TRACEBACK_CHARS + 1_000
    assert "the-end" in line
    assert "hunter2" not in line
    assert "[truncated]" in line


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("Bearer s3cr3t-t0ken-value-0123456789", id="errors-log-bearer-across-the-cut"),
        pytest.param(
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXZhbHVl",
            id="errors-log-jwt-across-the-cut",
        ),
    ],
)
async def test_a_secret_across_the_cut_is_scrubbed(
    secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The cut falls inside the secret: the kept end has lost the prefix the
    scrubber knows it by, so the scrub comes first. The traceback ends with the
    message and a line break, so the kept end is the message's last characters."""
    kept = 16  # of the secret's characters, after the cut
    message = "x" * 200_000 + " " + secret + " " + "y" * (MAX_LOGGED_TRACEBACK_CHARS - 2 - kept)
    line = await _logged(message, caplog)
    assert "[truncated]" in line
    assert secret[-kept:] not in line
