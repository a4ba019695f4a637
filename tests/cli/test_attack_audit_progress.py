"""Attacks on the terminal of the person running `bastion audit` on a hostile target.

The spinner on standard error names each step, and steps name the routes the target
listed in its own OpenAPI document: `/[/bold]` (Rich markup that does not close)
ended the audit with a traceback, `[link=...]` drew a link, and an escape sequence
(`ESC ] 0 ;` sets the window title; others rewrite the screen) reached the terminal.
"""

from __future__ import annotations

import pytest

from bastion.cli.audit import _progress

OSC = "\x1b]"


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard error taken for a terminal, as Rich decides it, so the spinner draws."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")


@pytest.mark.parametrize(
    ("step", "shown"),
    [
        pytest.param("crawl: GET /[/bold]", "GET /[/bold]", id="progress-unclosed-markup"),
        pytest.param(
            "crawl: GET /[link=https://evil.example]x[/link]",
            "[link=https://evil.example]",
            id="progress-markup-link",
        ),
        pytest.param("crawl: GET /\x1b]0;owned\x07", "\\x1b]0;owned", id="progress-osc-title"),
        pytest.param("crawl: GET /\x9b2J", "\\x9b2J", id="progress-c1-csi"),
        pytest.param("crawl: GET /items/1", "crawl: GET /items/1", id="progress-plain-route"),
    ],
)
def test_progress_shows_the_target_s_routes_as_plain_text(
    terminal: None, capsys: pytest.CaptureFixture[str], step: str, shown: str
) -> None:
    with _progress(True) as progress:
        assert progress is not None
        progress(step)
    written = capsys.readouterr().err
    assert shown in written
    assert OSC not in written
    assert "\x9b" not in written
