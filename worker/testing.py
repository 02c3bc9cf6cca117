"""Test kit for ecs-worker and its plugin authors (pytest plugin via the pytest11 entry point).

Importable without pytest: only the fixtures need it, and they are defined only when pytest is
importable.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

try:  # the fixtures below need pytest; the helpers do not
    import pytest
except ImportError:  # pragma: no cover - exercised only without pytest installed
    pytest = None  # type: ignore[assignment]

__all__ = ["acs_client", "mns_queue", "run_emulator"]


# =====================================================================================
# Emulator: a local MNS + ECS + SLB endpoint for the unmodified SDKs
# =====================================================================================

# Environment that would silently change what the SDKs talk to or sign with: the old core SDK
# prefers ALIYUN_ACCESS_KEY_* over a `credential=` object, and it sends through HTTP(S)_PROXY
# even for 127.0.0.1.
_SDK_ENV = ("ALIYUN_ACCESS_KEY_ID", "ALIYUN_ACCESS_KEY_SECRET", "HTTP_PROXY", "http_proxy",
            "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


@contextlib.contextmanager
def run_emulator(state: dict | None = None) -> Iterator["Emulator"]:  # noqa: F821 - lazy import
    """Run an emulator in-process on a free 127.0.0.1 port for the duration of the block.

    `state` is a state dict (see ecs_worker.emulator.state); default: a copy of the built-in example.
    The yielded `Emulator` has `.endpoint` ("127.0.0.1:PORT"), `.mns_endpoint` ("http://127.0.0.1:PORT"),
    `.region`, `.access_key_id`, `.access_key_secret`, `.state()`, `.set_faults(dict)`,
    `.send(queue, body)`, `.reset_calls()`.
    """
    from ecs_worker.emulator import Emulator

    emulator = Emulator(copy.deepcopy(state) if state is not None else None, host="127.0.0.1", port=0)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


def mns_queue(emulator, name: str, *, encoding: bool = False, access_key_id: str | None = None,
              access_key_secret: str | None = None, security_token: str = ""):
    """An `mns` SDK Queue bound to the emulator (base64 encoding off unless asked)."""
    from mns.account import Account

    account = Account(emulator.mns_endpoint, access_key_id or emulator.access_key_id,
                      access_key_secret or emulator.access_key_secret, security_token)
    queue = account.get_queue(name)
    queue.set_encoding(encoding)
    return queue


def acs_client(emulator, *, access_key_id: str | None = None, access_key_secret: str | None = None, **kwargs):
    """An `aliyunsdkcore` AcsClient for the emulator's region and credentials; point each request at
    the emulator with `request.set_endpoint(emulator.endpoint)`. kwargs go to AcsClient
    (e.g. auto_retry=False)."""
    from aliyunsdkcore.client import AcsClient

    return AcsClient(access_key_id or emulator.access_key_id, access_key_secret or emulator.access_key_secret,
                     emulator.region, **kwargs)


if pytest is not None:

    @pytest.fixture
    def emulator(emulator_state, monkeypatch) -> Iterator["Emulator"]:  # noqa: F821
        """A running emulator (`ecs_worker.emulator.Emulator`) on 127.0.0.1, stopped after the test.
        Its state is the `emulator_state` fixture: the built-in example unless a test module or
        conftest overrides that fixture (or parametrizes it) with a state dict.

        Also clears env vars that would make the SDKs ignore explicit credentials or use a proxy."""
        for name in _SDK_ENV:
            monkeypatch.delenv(name, raising=False)
        with run_emulator(emulator_state) as emu:
            yield emu

    @pytest.fixture
    def emulator_state() -> dict | None:
        """The state the `emulator` fixture starts from; override in a test module to customise."""
        return None

