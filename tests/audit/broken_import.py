"""A module that raises while it is imported, as one reading a missing environment
variable does (`os.environ["DATABASE_URL"]`); the key is the made-up secret."""

from __future__ import annotations

_SETTINGS: dict[str, str] = {}
app = _SETTINGS["secret-abc"]
