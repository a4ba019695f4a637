"""Cookies as the auditor sees them: parsed `Set-Cookie` lines and a jar per session.

Threat: an auditor that leaks the target's session cookies into its evidence, or
whose transport keeps cookies behind the probes' backs (so a probe that means to be
anonymous is not).
Defence: a parsed cookie never shows its value (`repr=False`, `describe` redacts it);
the transport keeps nothing, and a `CookieJar` held by the caller decides which
requests carry which cookies.

Not covered: scoping by `Domain` and `Path` (an audit talks to one origin).

References: RFC 6265 section 5.2 (`Set-Cookie` parsing)
https://www.rfc-editor.org/rfc/rfc6265#section-5.2
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bastion.audit.target.base import HTTPResponse


@dataclass(frozen=True, slots=True)
class SetCookie:
    """One parsed `Set-Cookie` line. The value is never shown (`repr=False`)."""

    name: str
    value: str = field(repr=False)
    attributes: Mapping[str, str]
    """Attribute names lower-case; flags (`secure`, `httponly`) map to ""."""

    @property
    def secure(self) -> bool:
        return "secure" in self.attributes

    @property
    def http_only(self) -> bool:
        return "httponly" in self.attributes

    @property
    def same_site(self) -> str | None:
        value = self.attributes.get("samesite")
        return value.lower() if value is not None else None

    @property
    def is_deletion(self) -> bool:
        """Whether the line removes the cookie (`Max-Age=0` or less, or empty)."""
        # Read as digits, never `int()`: the target wrote it, and `--1`, `²` or
        # 5000 digits would raise rather than parse.
        max_age = self.attributes.get("max-age", "").strip()
        digits = max_age.removeprefix("-")
        if digits.isascii() and digits.isdigit() and (digits != max_age or not digits.strip("0")):
            return True
        return self.value == "" and "expires" in self.attributes

    def describe(self) -> str:
        """Name and attributes, without the value: safe for evidence."""
        flags = [
            f"{key}={value}" if value else key for key, value in sorted(self.attributes.items())
        ]
        return "; ".join([f"{self.name}=<redacted>", *flags])


def parse_set_cookie(line: str) -> SetCookie | None:
    """Parse one `Set-Cookie` value (RFC 6265 section 5.2); None when it has no name."""
    pair, *attribute_parts = line.split(";")
    name, separator, value = pair.partition("=")
    name = name.strip()
    if not separator or not name:
        return None
    attributes: dict[str, str] = {}
    for part in attribute_parts:
        key, _, attribute_value = part.partition("=")
        key = key.strip().lower()
        if key:
            attributes[key] = attribute_value.strip()
    return SetCookie(name, value.strip().strip('"'), attributes)


class CookieJar:
    """The cookies of one browsing session against one target (names and values).

    The auditor decides which requests carry them; values never leave this object
    except in the `Cookie` header sent to the target itself.
    """

    def __init__(self) -> None:
        self._cookies: dict[str, str] = {}

    def update(self, response: HTTPResponse) -> list[SetCookie]:
        """Apply the response's `Set-Cookie` lines; returns what they set."""
        parsed = [parse_set_cookie(line) for line in response.header_all("set-cookie")]
        cookies = [cookie for cookie in parsed if cookie is not None]
        for cookie in cookies:
            if cookie.is_deletion:
                self._cookies.pop(cookie.name, None)
            else:
                self._cookies[cookie.name] = cookie.value
        return cookies

    def header(self) -> tuple[tuple[str, str], ...]:
        """The `Cookie` header to send, or no header when the jar is empty."""
        if not self._cookies:
            return ()
        return (("cookie", "; ".join(f"{k}={v}" for k, v in self._cookies.items())),)

    def get(self, name: str) -> str | None:
        return self._cookies.get(name)

    def names(self) -> list[str]:
        return list(self._cookies)

    def copy(self) -> CookieJar:
        other = CookieJar()
        other._cookies = dict(self._cookies)
        return other

    def __len__(self) -> int:
        return len(self._cookies)

    def __repr__(self) -> str:
        return f"CookieJar(names={self.names()!r})"
