"""What to do about each error code `doctor` can meet: one fix per code, in one table.

A wrong secret says so ("the AccessKey secret does not match its id"), not "check the
network"; a denial names the grant. `{action}` is the RAM action the failed call needs,
`{config}` the config file, `{endpoint}` the config key of the endpoint the call used.
Codes: MNS "Error codes" (help/en/mns/error-codes), the RPC APIs' error centre, and the
SDKs' own client-side codes (aliyunsdkcore `error_code.py`, mns `mns_exception.py`).
"""
from __future__ import annotations

SECRET = ("the AccessKey secret does not match its id: check [credentials] access_key_secret "
          "(or access_key_secret_file) in {config}")
KEY_ID = "the AccessKey id does not exist in this account: check [credentials] access_key_id in {config}"
GRANT = "grant {action} to the worker's RAM user or role (`ecs-worker setup -c {config}` prints the policy)"
NETWORK = ("nothing answered at {endpoint}: check it, DNS, and the host's network or proxy "
           "(doctor waits only a few seconds)")

FIXES: dict[str, str] = {
    "SignatureDoesNotMatch": SECRET,
    "InvalidAccessKeySecret": SECRET,
    "IncompleteSignature": SECRET,
    "InvalidAccessKeyId": KEY_ID,
    "InvalidAccessKeyId.NotFound": KEY_ID,
    "InvalidAccessKeyId.Inactive": "the AccessKey is disabled: enable it in the RAM console or use an active one",
    "SecurityTokenExpired": "the STS token expired: the host's RAM role or credentials file must refresh it",
    "InvalidSecurityToken": "the STS token is not valid for this AccessKey id: check [credentials] security_token",
    "InvalidSecurityToken.Expired": "the STS token expired: the host's RAM role or credentials file must refresh it",
    "QueueNotExist": "run `ecs-worker setup -c {config}`: it creates the queue",
    "AccessDenied": GRANT,
    "Forbidden": GRANT,
    "Forbidden.RAM": GRANT,
    "Forbidden.NoPermission": GRANT,
    "NoPermission": GRANT,
    "InvalidRegionId": "check [cloud] region in {config}",
    "NetWorkException": NETWORK,
    "SDK.HttpError": NETWORK,
    "SDK.ServerUnreachable": NETWORK,
}
# Codes that say the keys themselves are wrong: every later call fails the same way.
CREDENTIAL_CODES = frozenset(code for code, fix in FIXES.items() if fix in (SECRET, KEY_ID)) | {
    "InvalidAccessKeyId.Inactive", "SecurityTokenExpired", "InvalidSecurityToken", "InvalidSecurityToken.Expired"}
NETWORK_CODES = frozenset(code for code, fix in FIXES.items() if fix == NETWORK)


def fix_for(code: str, *, action: str = "", config: str = "", endpoint: str = "") -> str:
    """The fix for `code`; a code this table does not know gets the error centre."""
    template = FIXES.get(code) or (GRANT if code.startswith(("Forbidden", "NoPermission")) else
                                   "look the code up in Alibaba Cloud's error centre "
                                   "(https://api.aliyun.com/troubleshoot?q={code})")
    return template.format(action=action or "the action", config=config, endpoint=endpoint, code=code)
