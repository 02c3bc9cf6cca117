"""Sign every ECS/SLB request with credentials fetched from the provider at that moment.

Installed on each `AcsClient` in place of the SDK's own signer, because the core SDK
(a) lets the env vars `ALIYUN_ACCESS_KEY_ID/SECRET` silently override the credentials
it is given, and (b) only knows static credential classes, so rotated STS / RAM-role
keys would never be picked up. The provider caches and refreshes; we just ask it.
"""
from __future__ import annotations

from typing import Any

_TOKEN_PARAM = "SecurityToken"        # RPC style (ECS, SLB)
_TOKEN_HEADER = "x-acs-security-token"  # ROA style


class ProviderSigner:
    """The `sign(region_id, request) -> (headers, url)` interface `AcsClient` calls."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    def sign(self, region_id: str, request: Any) -> tuple[dict, str]:
        creds = self._provider.get_credentials()
        key_id, secret = creds.get_access_key_id(), creds.get_access_key_secret()
        token = creds.get_security_token()
        if request.get_style() == "RPC":
            params = request.get_query_params()
            if token:
                request.add_query_param(_TOKEN_PARAM, token)
            elif params is not None:
                params.pop(_TOKEN_PARAM, None)  # a retry after rotating from STS to plain keys
        elif token:
            request.add_header(_TOKEN_HEADER, token)
        headers = request.get_signed_header(region_id, key_id, secret)
        url = request.get_url(region_id, key_id, secret)
        return headers, url

    def __repr__(self) -> str:
        return f"ProviderSigner({self._provider!r})"
