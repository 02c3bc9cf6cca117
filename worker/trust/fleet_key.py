"""The fleet key: what the worker writes for itself into a message is signed, so a body
anyone with `mns:SendMessage` can send cannot pass for it.

`[worker] signing_key_file` names a file (a path, or a bare name in systemd's
`$CREDENTIALS_DIRECTORY`) holding one key per line, each at least 32 characters: the
first signs, every one verifies, so a key is rotated by adding the new one first on every
worker, then dropping the old one once no message signed with it can be left (the
longest deferral hop, 7 days). The file must not be readable by group or others.

The MAC is HMAC-SHA256 over a canonical JSON encoding (sorted keys, no spaces, ASCII):
two workers sign the same content to the same bytes, whatever order they built it in.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..cloud.credentials import read_secret_file, secret_path

MIN_KEY_CHARS = 32
SETTING = "[worker] signing_key_file"


class Signer:
    """Signs with the first key, verifies with any. Never shows a key (repr, errors)."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("a signer needs at least one key")
        self._keys = [k.encode("utf-8") for k in keys]

    def sign(self, content: Any) -> str:
        return _mac(self._keys[0], content)

    def verify(self, content: Any, mac: Any) -> bool:
        if not isinstance(mac, str):
            return False
        return any(hmac.compare_digest(_mac(k, content), mac) for k in self._keys)

    def __repr__(self) -> str:
        return f"Signer({len(self._keys)} key(s))"


def canonical(content: Any) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _mac(key: bytes, content: Any) -> str:
    return hmac.new(key, canonical(content), hashlib.sha256).hexdigest()


def load_signer(name: str) -> Signer | None:
    """The signer `[worker] signing_key_file` names, or None when unset; `ConfigError`
    when the file is unreadable, open to others, or holds a key too short."""
    if not name:
        return None
    path = secret_path(name)
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0  # read_secret_file says why, in the same words as for the other secrets
    if mode & 0o077:
        raise ConfigError(f"{SETTING}: {path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
                          f"chmod 600 it")
    text, path = read_secret_file(name, SETTING)
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    short = [n for n, k in enumerate(keys, 1) if len(k) < MIN_KEY_CHARS]
    if not keys or short:
        raise ConfigError(f"{SETTING}: {path}: every key must be at least {MIN_KEY_CHARS} characters "
                          f"(line(s) {', '.join(map(str, short)) or 'none found'})")
    return Signer(keys)


def create_key_file(path: Path) -> bool:
    """Write a new random key to `path` (0600) unless it exists; True when written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_hex(32) + "\n")
    return True


# What `doctor`, `setup` and the start-up log say when no key is configured.
ADVICE = ("when more than one worker shares the queue, set [worker] signing_key_file (0600, the same "
          "file on every worker; `ecs-worker setup` creates it), so the state re-sent deferrals "
          "carry is signed and any worker can continue it")


def prepare_key(name: str, dry_run: bool) -> str:
    """`setup`'s step for the key: create the configured file when missing; one line."""
    if not name:
        return f"- signing key: none ([worker] signing_key_file); {ADVICE}"
    path = secret_path(name)
    if path.exists():
        return f"✓ signing key: {path} exists"
    if dry_run:
        return f"would create: signing key {path} (0600)"
    create_key_file(path)
    return f"+ signing key {path}: created (0600); copy the same file to every worker of the fleet"
