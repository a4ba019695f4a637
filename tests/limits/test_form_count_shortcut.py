"""`whole_body_fits` skips counting a form's separators when the body is shorter
than the field limit (each separator is a byte). Against the counting it replaces
(`_counted`, the function as it was), over bodies at and around the limit and the
attack table's forms, it decides alike, and a form with too many fields is still
never passed.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.limits import LimitsSettings
from bastion.limits.checks import _NOT_PLAIN_FIRST, BodyCheck, BodyPlan, whole_body_fits
from bastion.limits.reasons import REASON_FORM_TOO_MANY_FIELDS
from bastion.limits.settings import BodyLimits, resolve_limits

FORM_PLAN = BodyPlan(syntax="urlencoded")


def _counted(body: bytes, plan: BodyPlan, limits: BodyLimits, declared: int | None) -> bool:
    """`whole_body_fits` as it was: the separators always counted."""
    size = len(body)
    if size > limits.max_body_bytes:
        return False
    if declared is not None and size != declared:
        return False
    if not size:
        return True
    if plan.refusal:
        return False
    syntax = plan.syntax
    if not syntax:
        return True
    if syntax != "urlencoded" or size < 2 or body[0] in _NOT_PLAIN_FIRST or not body[1]:
        return False
    fields = 1 + body.count(b"&") + body.count(b";")
    return fields <= limits.max_form_fields and size <= limits.max_form_part_bytes


def _limits(max_fields: int, max_field_bytes: int = 1000) -> BodyLimits:
    return resolve_limits(
        LimitsSettings(max_form_fields=max_fields, max_form_part_bytes=max_field_bytes)
    )


BOUNDARY_BODIES = [
    pytest.param(body, max_fields, id=f"limits-form-count-{body.decode()}-max-{max_fields}")
    for max_fields in (1, 2, 3, 4, 5)
    for body in (b"a=", b"a&", b"&&", b";;", b"&a", b"a&&", b"&;&", b"a=b&c", b"&&&&", b"ab&&&&")
]


@pytest.mark.parametrize(("body", "max_fields"), BOUNDARY_BODIES)
def test_form_count_shortcut_at_the_field_limit(body: bytes, max_fields: int) -> None:
    limits = _limits(max_fields)
    fits = whole_body_fits(body, FORM_PLAN, limits, len(body))
    assert fits is _counted(body, FORM_PLAN, limits, len(body))
    verdict = BodyCheck(limits, FORM_PLAN, len(body)).feed(body, more_body=False)
    if 1 + body.count(b"&") + body.count(b";") > max_fields:
        assert not fits
        assert verdict == REASON_FORM_TOO_MANY_FIELDS


@settings(max_examples=1500, deadline=None)
@given(
    body=st.lists(st.sampled_from([b"a", b"=", b"&", b";", b"%26", b"["]), max_size=24).map(
        b"".join
    ),
    max_fields=st.integers(min_value=1, max_value=30),
    max_field_bytes=st.integers(min_value=1, max_value=40),
    declared_offset=st.sampled_from([None, 0, 1]),
)
def test_form_count_shortcut_decides_as_counting(
    body: bytes, max_fields: int, max_field_bytes: int, declared_offset: int | None
) -> None:
    limits = _limits(max_fields, max_field_bytes)
    declared = None if declared_offset is None else len(body) + declared_offset
    assert whole_body_fits(body, FORM_PLAN, limits, declared) is _counted(
        body, FORM_PLAN, limits, declared
    )
