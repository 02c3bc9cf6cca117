"""Injected faults, per API (`mns`, `ecs`, `slb`, `alb`, `nlb`), set from the state file or POST /_emulator/faults.

Keys of one API's fault object (all optional; absent = off):
    drop_rate        0..1   close the connection without any response
    latency_ms       >= 0   sleep before answering
    throttle_rps     >= 0   token bucket refilled at this rate (0 = unlimited); past it answer
                            MNS 429 `TooManyRequests` (what MNS's flow limiter returns) or
                            RPC 400 `Throttling.User` (the POP gateway's per-user flow control;
                            the core SDK never retries it). Override with throttle_code/throttle_status.
    throttle_burst   >= 1   bucket size, default max(1, throttle_rps)
    error_rate       0..1   answer error_code/error_status (default InternalError / 500)

Order per request: drop, latency, throttle, error — then the real handler.
"""
from __future__ import annotations

import random
import threading
import time

THROTTLE_DEFAULTS = {
    "mns": (429, "TooManyRequests", "The request is denied by cluster flow limiter for too many requests."),
    "ecs": (400, "Throttling.User", "Request was denied due to user flow control."),
    "slb": (400, "Throttling.User", "Request was denied due to user flow control."),
    "alb": (400, "Throttling.User", "Request was denied due to user flow control."),
    "nlb": (400, "Throttling.User", "Request was denied due to user flow control."),
}


class Decision:
    __slots__ = ("drop", "latency", "error")

    def __init__(self, drop=False, latency=0.0, error=None):
        self.drop, self.latency, self.error = drop, latency, error  # error: (status, code, message)


NO_FAULT = Decision()


class _Api:
    def __init__(self, api: str, cfg: dict):
        self.api = api
        self.cfg = cfg
        self.rps = cfg.get("throttle_rps", 0.0)
        self.burst = cfg.get("throttle_burst") or max(1.0, self.rps)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take_token(self) -> bool:
        if not self.rps:
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rps)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Faults:
    def __init__(self, config: dict | None = None, rng: random.Random | None = None):
        self._lock = threading.Lock()
        self._rng = rng or random.Random()
        self._apis: dict[str, _Api] = {}
        self.update(config or {})

    def update(self, config: dict) -> None:
        """Replace the fault settings of each API named in `config` (already validated)."""
        with self._lock:
            for api, cfg in config.items():
                self._apis[api] = _Api(api, dict(cfg))

    def snapshot(self) -> dict:
        with self._lock:
            return {api: dict(a.cfg) for api, a in self._apis.items()}

    def decide(self, api: str) -> Decision:
        a = self._apis.get(api)
        if a is None or not a.cfg:
            return NO_FAULT
        cfg = a.cfg
        with self._lock:
            rnd = self._rng.random
            if cfg.get("drop_rate") and rnd() < cfg["drop_rate"]:
                return Decision(drop=True)
            latency = cfg.get("latency_ms", 0.0) / 1000.0
            if not a.take_token():
                status, code, message = THROTTLE_DEFAULTS[api]
                status = cfg.get("throttle_status", status)
                code = cfg.get("throttle_code", code)
                return Decision(latency=latency, error=(status, code, message))
            if cfg.get("error_rate") and rnd() < cfg["error_rate"]:
                code = cfg.get("error_code", "InternalError")
                message = "The request processing has failed due to some unknown error."
                return Decision(latency=latency, error=(cfg.get("error_status", 500), code, message))
            return Decision(latency=latency) if latency else NO_FAULT
