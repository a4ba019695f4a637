"""Reason codes of the limits layer, and the status each one is answered with.

One table, so a reviewer sees every refusal and its status in one place. Sizes are
413 (RFC 9110 section 15.5.14), request header sizes 431 (RFC 6585 section 5),
media types 415 (RFC 9110 section 15.5.16), a body that arrives too slowly 408
(RFC 9110 section 15.5.9), shedding 503 with `Retry-After` (RFC 9110 sections
15.6.4 and 10.2.3), a refused method 405 (RFC 9110 section 15.5.6; without `Allow`,
since the methods a route allows are the application's to say), and everything
malformed or over a count 400.
"""

from __future__ import annotations

from typing import Final

from bastion.events import KIND_INPUT_VALIDATION, KIND_SYS_AVAILABILITY

REASON_BODY_TOO_LARGE: Final = "body-too-large"
REASON_CONTENT_LENGTH_TOO_LARGE: Final = "content-length-too-large"
REASON_CONTENT_LENGTH_INVALID: Final = "content-length-invalid"
REASON_CONTENT_LENGTH_MISMATCH: Final = "content-length-mismatch"
REASON_HEADERS_TOO_MANY: Final = "headers-too-many"
REASON_HEADERS_TOO_LARGE: Final = "headers-too-large"
REASON_CONTENT_TYPE_NOT_ALLOWED: Final = "content-type-not-allowed"
REASON_CONTENT_TYPE_INVALID: Final = "content-type-invalid"
REASON_JSON_TOO_DEEP: Final = "json-too-deep"
REASON_JSON_TOO_LARGE: Final = "json-too-large"
REASON_JSON_NOT_UTF8: Final = "json-not-utf8"
REASON_FORM_TOO_MANY_FIELDS: Final = "form-too-many-fields"
REASON_FORM_TOO_MANY_FILES: Final = "form-too-many-files"
REASON_FORM_PART_TOO_LARGE: Final = "form-part-too-large"
REASON_FORM_PART_HEADERS_TOO_LARGE: Final = "form-part-headers-too-large"
REASON_MULTIPART_MALFORMED: Final = "multipart-malformed"
REASON_BODY_TIMEOUT: Final = "body-timeout"
REASON_OVERLOADED: Final = "overloaded"
REASON_METHOD_NOT_ALLOWED: Final = "method-not-allowed"

STATUS_BY_REASON: Final[dict[str, int]] = {
    REASON_BODY_TOO_LARGE: 413,
    REASON_CONTENT_LENGTH_TOO_LARGE: 413,
    REASON_CONTENT_LENGTH_INVALID: 400,
    REASON_CONTENT_LENGTH_MISMATCH: 400,
    REASON_HEADERS_TOO_MANY: 431,
    REASON_HEADERS_TOO_LARGE: 431,
    REASON_CONTENT_TYPE_NOT_ALLOWED: 415,
    REASON_CONTENT_TYPE_INVALID: 400,
    REASON_JSON_TOO_DEEP: 400,
    REASON_JSON_TOO_LARGE: 413,
    REASON_JSON_NOT_UTF8: 400,
    REASON_FORM_TOO_MANY_FIELDS: 400,
    REASON_FORM_TOO_MANY_FILES: 400,
    REASON_FORM_PART_TOO_LARGE: 413,
    REASON_FORM_PART_HEADERS_TOO_LARGE: 413,
    REASON_MULTIPART_MALFORMED: 400,
    REASON_BODY_TIMEOUT: 408,
    REASON_OVERLOADED: 503,
    REASON_METHOD_NOT_ALLOWED: 405,
}


def kind_of(reason: str) -> str:
    """The OWASP Logging Vocabulary kind of a refusal."""
    return KIND_SYS_AVAILABILITY if reason == REASON_OVERLOADED else KIND_INPUT_VALIDATION
