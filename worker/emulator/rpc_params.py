"""What every RPC-style (POP) service of the emulator shares: the error reply and the parameter
readers (required, integer ranges, `X.N` repeats, tag filters, paging) with Alibaba's wording."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Mapping


class RpcError(Exception):
    """An RPC error reply: HTTP status, `Code`, `Message`."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


def invalid_action(action: str) -> RpcError:
    return RpcError(404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method.")


def missing(name: str) -> RpcError:
    return RpcError(400, "MissingParameter",
                    f"The input parameter \"{name}\" that is mandatory for processing this request is not supplied.")


def require(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise missing(name)
    return value


def int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        n = int(raw)
    except ValueError:
        raise RpcError(400, "InvalidParameter", f"The specified parameter \"{name}\" is not valid.") from None
    if not lo <= n <= hi:
        raise RpcError(400, "InvalidParameter", f"The specified parameter \"{name}\" is not valid.")
    return n


def repeat(params: Mapping[str, str], prefix: str) -> list[str]:
    """Values of prefix.1, prefix.2, ... in index order."""
    found = []
    for k, v in params.items():
        if k.startswith(prefix + "."):
            idx = k[len(prefix) + 1:]
            if idx.isdigit():
                found.append((int(idx), v))
    return [v for _, v in sorted(found)]


def tag_filters(params: Mapping[str, str]) -> list[tuple[str, str | None]]:
    out = []
    for n in range(1, 21):
        key = params.get(f"Tag.{n}.Key")
        if key:
            out.append((key, params.get(f"Tag.{n}.Value")))
    return out


def paginate(items: list, params: Mapping[str, str], max_size: int, default_size: int = 10) -> dict:
    number = int_param(params, "PageNumber", 1, 1, 10**9)
    size = int_param(params, "PageSize", default_size, 1, max_size)
    return {"items": items[(number - 1) * size: number * size], "TotalCount": len(items),
            "PageNumber": number, "PageSize": size}


def iso_minutes(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")

