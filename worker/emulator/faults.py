"""Injected faults, per API (`mns`, `ecs`, `slb`, `alb`, `nlb`), set from the state file or POST /_emulator/faults.

Keys of one API's fault object (all optional; absent = off):
    drop_rate        0..1   close the connection without any response
    latency_ms       >= 0   sleep before answering
    throttle_rps     >= 0   token bucket refilled at this rate (0 = unlimited); past it answer
                            MNS 429 `TooManyRequests` (what MNS's flow limiter returns) or
                            RPC 400 `Throttling.User` (the POP gateway's per-user flow control;
                            the core SDK never retries it). Override with throttle_code/throttle_status.
    throttle_burst   >= 1   bucket size, default max(1, throttle_rps)
    error_rate       0..1   share of requests answered with an error: error_code/error_status
                            (default InternalError / 500), or one of error_codes at random
    error_code       str    the code; without error_status, its documented status (DOCUMENTED_STATUS)
    error_codes      list   of codes (str) or {"code": str, "status": int}: each faulted request
                            picks one; a code without a status gets its documented one
    actions          list   of action names (e.g. ["BatchDeleteMessage"]): only these are faulted
                            (drop, latency, error; throttling counts every call); absent = all
    long_poll_limit  >= 0   mns only: long polls (waitseconds > 0) allowed at once per account;
                            past it ReceiveMessage/BatchReceiveMessage answer 404 MessageNotExist
                            at once, as MNS does past its long-polling connection limit

Order per request: drop, latency, throttle, error — then the real handler.
"""
from __future__ import annotations

import random
import threading
import time
from typing import Any

from .schema_checks import SchemaChecker, join_path

THROTTLE_DEFAULTS = {
    "mns": (429, "TooManyRequests", "The request is denied by cluster flow limiter for too many requests."),
    "ecs": (400, "Throttling.User", "Request was denied due to user flow control."),
    "slb": (400, "Throttling.User", "Request was denied due to user flow control."),
    "alb": (400, "Throttling.User", "Request was denied due to user flow control."),
    "nlb": (400, "Throttling.User", "Request was denied due to user flow control."),
}


# Documented HTTP statuses, so a fault answers a code the way the service does (sources in
# docs/cloud-behaviour.md). A code not listed here answers 500 unless error_status says otherwise.
# Not re-checked against a fetched page (the worker decides by code, so they only colour the
# wire): InstanceNotReady, LastOrderProcessing, OperationConflict, InvalidOperation.Conflict,
# ServiceIsStopping, OperationBusy, VServerGroupProcessing, ServiceIsConfiguring.
DOCUMENTED_STATUS = {
    "mns": {"InternalError": 500, "InternalServerError": 500, "TooManyRequests": 429,
            "QpsLimitExceeded": 403, "AccessDenied": 403, "InvalidAccessKeyId": 403,
            "SignatureDoesNotMatch": 403, "MessageNotExist": 404, "QueueNotExist": 404,
            "ReceiptHandleError": 400, "InvalidArgument": 400, "TimeExpired": 408},
    "rpc": {"InternalError": 500, "ServiceUnavailable": 503, "UnknownError": 500,
            "Throttling": 400, "Throttling.User": 400, "Throttling.Api": 400, "Rejected.Throttling": 400,
            "SystemBusy": 449, "BackendServer.configuring": 409, "ProcessingSameRequest": 400,
            "ServiceIsStopping": 400, "OperationBusy": 400, "VServerGroupProcessing": 400,
            "ServiceIsConfiguring": 400, "TooManyBackendServers": 400, "Forbidden.RAM": 403,
            "NoPermission": 403, "InvalidAccessKeyId.NotFound": 404, "IncorrectInstanceStatus": 403,
            "InstanceLockedForSecurity": 403, "InstanceExpiredOrInArrears": 403,
            "OperationDenied.NoStock": 403, "InstanceNotReady": 500, "LastOrderProcessing": 400,
            "OperationConflict": 403, "InvalidOperation.Conflict": 403},
}
ERROR_MESSAGE = "The request processing has failed due to some unknown error."


def documented_status(api: str, code: str) -> int:
    table = DOCUMENTED_STATUS["mns" if api == "mns" else "rpc"]
    return table.get(code, 500)


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

    def decide(self, api: str, action: str = "") -> Decision:
        a = self._apis.get(api)
        if a is None or not a.cfg:
            return NO_FAULT
        cfg = a.cfg
        with self._lock:
            rnd = self._rng.random
            if cfg.get("actions") and action not in cfg["actions"]:
                return NO_FAULT if a.take_token() else Decision(error=_throttled(api, cfg))
            if cfg.get("drop_rate") and rnd() < cfg["drop_rate"]:
                return Decision(drop=True)
            latency = cfg.get("latency_ms", 0.0) / 1000.0
            if not a.take_token():
                return Decision(latency=latency, error=_throttled(api, cfg))
            if cfg.get("error_rate") and rnd() < cfg["error_rate"]:
                choices = cfg.get("error_codes")
                if choices:
                    pick = choices[int(rnd() * len(choices)) % len(choices)]
                    code, status = pick["code"], pick.get("status")
                else:
                    code, status = cfg.get("error_code", "InternalError"), cfg.get("error_status")
                status = status or documented_status(api, code)
                return Decision(latency=latency, error=(status, code, ERROR_MESSAGE))
            return Decision(latency=latency) if latency else NO_FAULT

    def long_poll_limit(self) -> int | None:
        a = self._apis.get("mns")
        return None if a is None else a.cfg.get("long_poll_limit")


def _throttled(api: str, cfg: dict) -> tuple[int, str, str]:
    status, code, message = THROTTLE_DEFAULTS[api]
    return cfg.get("throttle_status", status), cfg.get("throttle_code", code), message


FAULT_APIS = ("mns", "ecs", "slb", "alb", "nlb")
FAULT_KEYS = ("error_rate", "error_code", "error_status", "error_codes", "latency_ms", "throttle_rps",
              "throttle_burst", "throttle_code", "throttle_status", "drop_rate", "long_poll_limit", "actions")


def validate_faults(raw: Any, source: str = "faults", path: str = "") -> dict:
    """Validate a `faults` object ({api: {key: value}}); used for the state file and POST /_emulator/faults."""
    v = SchemaChecker(source)
    v.obj(raw, path, (), FAULT_APIS)
    out = {}
    for api, cfg in raw.items():
        p = join_path(path, api)
        v.obj(cfg, p, (), FAULT_KEYS)
        f: dict = {}
        for key in ("error_rate", "drop_rate"):
            if key in cfg:
                f[key] = v.number(cfg[key], f"{p}.{key}", 0.0, 1.0)
        for key in ("latency_ms", "throttle_rps", "throttle_burst"):
            if key in cfg:
                f[key] = v.number(cfg[key], f"{p}.{key}", 0.0)
        for key in ("error_code", "throttle_code"):
            if key in cfg:
                f[key] = v.string(cfg[key], f"{p}.{key}")
        for key in ("error_status", "throttle_status"):
            if key in cfg:
                f[key] = v.integer(cfg[key], f"{p}.{key}", 400, 599)
        if "error_codes" in cfg:
            f["error_codes"] = v.items(cfg["error_codes"], f"{p}.error_codes",
                                       lambda c, cp: _error_code(v, c, cp), non_empty=True)
        if "actions" in cfg:
            f["actions"] = v.items(cfg["actions"], f"{p}.actions", lambda x, q: v.string(x, q))
        if "long_poll_limit" in cfg:
            if api != "mns":
                v.fail(f"{p}.long_poll_limit", "only mns has long polls")
            f["long_poll_limit"] = v.integer(cfg["long_poll_limit"], f"{p}.long_poll_limit", 0)
        out[api] = f
    return out


def _error_code(v: SchemaChecker, c: Any, p: str) -> dict:
    if isinstance(c, str):
        c = {"code": c}
    v.obj(c, p, ("code",), ("status",))
    out = {"code": v.string(c["code"], p + ".code")}
    if "status" in c:
        out["status"] = v.integer(c["status"], p + ".status", 400, 599)
    return out
