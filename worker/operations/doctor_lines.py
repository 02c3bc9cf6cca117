"""One line of `doctor`'s report: ✓ proven, ✗ failed (with its fix), – not provable here."""
from __future__ import annotations

from dataclasses import dataclass


PASS, FAIL, UNPROVEN = "✓", "✗", "–"
DENIED = ("Forbidden.RAM", "Forbidden", "Forbidden.NoPermission", "AccessDenied", "NoPermission", "403")


def denied(code: str) -> bool:
    return code in DENIED or code.startswith(("Forbidden", "NoPermission"))


@dataclass
class Check:
    mark: str
    text: str
    fix: str = ""
    code: str = ""  # the error code behind a ✗, so its fix is printed once
