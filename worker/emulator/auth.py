"""Signature checks, byte for byte as the SDKs sign (see mns/mns_client.py `get_signature` and
aliyunsdkcore/auth/composer/rpc_signature_composer.py).

MNS:  Authorization: MNS <AccessKeyId>:base64(HMAC-SHA1(secret, StringToSign)) with
      StringToSign = VERB\\nContent-MD5\\nContent-Type\\nDate\\n + sorted "x-mns-k:v\\n" + path?rawquery.
      The STS token travels unsigned in the `security-token` header.
RPC:  Signature = base64(HMAC-SHA1(secret + "&", METHOD&%2F&pct(sorted pct(k)=pct(v) joined by &))),
      over query and form-body parameters except Signature; pct = RFC 3986 (only A-Za-z0-9-_.~ kept).
      The STS token is the signed parameter `SecurityToken`.

Errors mirror the real services: MNS answers 403 InvalidAccessKeyId / SignatureDoesNotMatch in XML;
RPC answers 404 InvalidAccessKeyId.NotFound and 400 SignatureDoesNotMatch whose message ends with
"server string to sign is:<sts>" (the core SDK compares that with its own and, when equal, reports
InvalidAccessKeySecret instead — so a wrong secret surfaces as `InvalidAccessKeySecret` through the SDK).
"""
from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import time
from email.utils import parsedate_to_datetime
from typing import Mapping
from urllib.parse import quote

CLOCK_SKEW_SECONDS = 15 * 60


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


def _hmac_sha1_b64(key: str, data: str) -> str:
    return base64.b64encode(hmac.new(key.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()).decode()


class AccessKeys:
    """access_key_id -> (secret, security_token or None), from the state's `credentials`."""

    def __init__(self, entries: list[dict]):
        self.by_id = {c["access_key_id"]: (c["access_key_secret"], c.get("security_token")) for c in entries}


def check_mns(creds: AccessKeys, method: str, resource: str, headers: Mapping[str, str]) -> str:
    """Verify an MNS request; return the access key id or raise AuthError. `headers` lower-cased keys."""
    auth = headers.get("authorization")
    if not auth:
        raise AuthError(400, "MissingAuthorizationHeader", "Authorization header is required.")
    if not auth.startswith("MNS ") or ":" not in auth:
        raise AuthError(400, "InvalidAuthorizationHeader", "The Authorization header format is invalid.")
    key_id, _, signature = auth[4:].partition(":")
    date = headers.get("date")
    if not date:
        raise AuthError(400, "MissingDateHeader", "Date header is required.")
    try:
        skew = abs(time.time() - parsedate_to_datetime(date).timestamp())
    except (TypeError, ValueError):
        raise AuthError(400, "InvalidDateHeader", "The Date header format is invalid.") from None
    if skew > CLOCK_SKEW_SECONDS:
        raise AuthError(408, "TimeExpired", "The http request you sent is expired.")
    entry = creds.by_id.get(key_id)
    if entry is None:
        raise AuthError(403, "InvalidAccessKeyId", "The AccessKey Id you provided is not exist.")
    secret, token = entry
    mns_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers) if k.startswith("x-mns-"))
    string_to_sign = (f"{method}\n{headers.get('content-md5', '')}\n{headers.get('content-type', '')}\n"
                      f"{date}\n{mns_headers}{resource}")
    if not hmac.compare_digest(_hmac_sha1_b64(secret, string_to_sign), signature):
        raise AuthError(403, "SignatureDoesNotMatch",
                        "The request signature we calculated does not match the signature you provided. "
                        "Check your key and signing method.")
    if (headers.get("security-token") or None) != token:
        raise AuthError(403, "AccessDenied", "The security token you provided is invalid or does not match "
                                             "the AccessKey Id.")
    return key_id


def pct(s: str) -> str:
    return quote(s, safe="~")


def rpc_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    canonical = "&".join(f"{pct(k)}={pct(v)}" for k, v in sorted(params.items()) if k != "Signature")
    return f"{method}&%2F&{pct(canonical)}"


def check_rpc(creds: AccessKeys, method: str, params: Mapping[str, str]) -> str:
    """Verify an RPC (ECS/SLB) request's parameters; return the access key id or raise AuthError."""
    for name in ("AccessKeyId", "Signature", "Timestamp", "SignatureNonce"):
        if not params.get(name):
            raise AuthError(400, "MissingParameter",
                            f"The input parameter \"{name}\" that is mandatory for processing this request "
                            f"is not supplied.")
    if params.get("SignatureMethod", "HMAC-SHA1") != "HMAC-SHA1":
        raise AuthError(400, "InvalidSignatureMethod", "Specified signature method is not valid.")
    try:
        ts = calendar.timegm(time.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        raise AuthError(400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not "
                                                        "well formatted.") from None
    if abs(time.time() - ts) > CLOCK_SKEW_SECONDS:
        raise AuthError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
    entry = creds.by_id.get(params["AccessKeyId"])
    if entry is None:
        raise AuthError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    secret, token = entry
    string_to_sign = rpc_string_to_sign(method, params)
    if not hmac.compare_digest(_hmac_sha1_b64(secret + "&", string_to_sign), params["Signature"]):
        raise AuthError(400, "SignatureDoesNotMatch",
                        "Specified signature is not matched with our calculation. server string to sign is:"
                        + string_to_sign)
    if (params.get("SecurityToken") or None) != token:
        raise AuthError(400, "InvalidSecurityToken.MismatchWithAccessKey",
                        "Specified SecurityToken mismatch with the AccessKey.")
    return params["AccessKeyId"]
