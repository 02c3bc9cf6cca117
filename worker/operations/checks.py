"""What a check (`doctor`) says: its mark, its line, its fix; and which error codes are denials."""
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
