"""`CloudClient`: the API client, the one place that builds ECS/SLB/ALB/NLB/ESS clients and makes calls to them.

Every call: waits for a token from its API's bucket, is signed with fresh credentials,
goes over https unless configured otherwise (to the endpoint override when set), and is
retried with backoff and full jitter on throttling and transient errors (a `SystemBusy`
at the next token instead: `errors.RETRY_AT_NEXT_TOKEN`). Failures come
out as `CloudError` (code + one clean line). The SDKs are imported on first call.
"""
from __future__ import annotations

import importlib
import json
import logging
import threading
import time
from collections import Counter
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .apis import BY_KEY
from .errors import RETRY_AT_NEXT_TOKEN, CloudError, from_sdk
from .ratelimit import TokenBucket
from .retry import call_with_retry

if TYPE_CHECKING:
    from ..config import CloudConfig, Config

log = logging.getLogger("ecs_worker.cloud")

# api -> (request module package, class suffix); the SDK's typed request classes carry
# the product code, version and endpoint data.
_REQUESTS = {
    "ecs": "aliyunsdkecs.request.v20140526",
    "slb": "aliyunsdkslb.request.v20140515",
    "cms": "aliyunsdkcms.request.v20190101",  # CloudMonitor: `setup` and `doctor` (cms.py)
    "alb": "aliyunsdkalb.request.v20200616",
    "nlb": "aliyunsdknlb.request.v20220430",
    "ess": "aliyunsdkess.request.v20140828",  # Auto Scaling lifecycle hooks (the scaling plugin, setup)
}
CMS_RPS = 5.0  # a few calls per command: keep well under CloudMonitor's API limits
ESS_RPS = 10.0  # a few calls per lifecycle action (read back, heartbeat, complete)
# APIs whose list parameters are flat repeats (`Servers.1.ServerId`) and whose SDK places
# each parameter itself (ALB in the query, NLB mostly in the form body): we call the request
# class's setters instead of adding JSON query parameters as for ECS/SLB.
_SETTER_APIS = frozenset({"alb", "nlb"})
_PLACEHOLDER_KEY = "signed-per-request"  # the SDK insists on keys at construction; ours sign


class CloudClient:
    """ECS/SLB/ALB/NLB calls for plugins: `cloud.ecs("DescribeInstances", InstanceIds=[...])`."""

    def __init__(self, cloud: CloudConfig, provider: Any, *, backoff_base: float = 0.2,
                 backoff_cap: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = cloud
        self.provider = provider
        self.buckets = {"ecs": TokenBucket(cloud.ecs_rps), "slb": TokenBucket(cloud.slb_rps),
                        "cms": TokenBucket(CMS_RPS), "ess": TokenBucket(ESS_RPS),
                        "alb": TokenBucket(cloud.alb_rps), "nlb": TokenBucket(cloud.nlb_rps)}
        self.calls: Counter = Counter()    # (api, action) -> attempts sent
        self.retries: Counter = Counter()  # (api, code) -> retries made
        self._backoff = (backoff_base, backoff_cap)
        self._sleep = sleep
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._prepaid = threading.local()  # .api: a token this thread took ahead (`turn`)

    @classmethod
    def from_config(cls, config: Config) -> CloudClient:
        from .credentials import credentials_provider

        return cls(config.cloud, credentials_provider(config.credentials))

    def ecs(self, action: str, **params: Any) -> dict:
        return self.call("ecs", action, params)

    def slb(self, action: str, **params: Any) -> dict:
        return self.call("slb", action, params)

    def cms(self, action: str, **params: Any) -> dict:
        return self.call("cms", action, params)

    def alb(self, action: str, **params: Any) -> dict:
        return self.call("alb", action, params)

    def nlb(self, action: str, **params: Any) -> dict:
        return self.call("nlb", action, params)

    def ess(self, action: str, **params: Any) -> dict:
        return self.call("ess", action, params)

    def warm(self, *apis: str) -> None:
        """Import the SDK and build these APIs' clients now, without a call, so a burst's first
        call does not also pay for that (a tenth of a second or more). From a background
        thread (the slb plugin's coalescer, as it starts): commands that make no call stay fast."""
        for api in apis:
            self._client(api)

    @contextmanager
    def turn(self, api: str) -> Iterator[None]:
        """Wait for `api`'s rate-limit token now; the block's first call to `api` (on this
        thread) spends it instead of waiting again. A batcher waits for its turn *before*
        choosing what goes in the call, so whatever arrived meanwhile joins it; the rate is
        the same (one token a call; retries take their own)."""
        self.buckets[api].acquire()
        self._prepaid.api = api
        try:
            yield
        finally:
            self._prepaid.api = None

    def call(self, api: str, action: str, params: dict[str, Any]) -> dict:
        """One API call with rate limiting and retries; the decoded JSON response."""
        if api not in _REQUESTS:
            raise ValueError(f"unknown api {api!r} (known: {', '.join(_REQUESTS)})")
        entry = BY_KEY.get((api, action))
        if entry is None:  # every call the worker makes is in the registry: its RAM grant, its retries
            raise ValueError(f"{api} {action} is not in the API registry (worker/cloud/apis.py)")

        def on_retry(exc: Exception, n: int, delay: float) -> None:
            code = getattr(exc, "code", type(exc).__name__)
            with self._lock:
                self.retries[(api, code)] += 1
            log.debug("%s %s: %s; retry %d in %.2fs", api, action, code, n, delay)

        return call_with_retry(lambda: self._attempt(api, action, params),
                               retryable=lambda e: isinstance(e, CloudError) and e.retryable_for(entry.retry),
                               max_retries=self.settings.max_retries, base=self._backoff[0],
                               cap=self._backoff[1], sleep=self._sleep, on_retry=on_retry,
                               at_once=lambda e: isinstance(e, CloudError) and e.code in RETRY_AT_NEXT_TOKEN)

    def _attempt(self, api: str, action: str, params: dict[str, Any]) -> dict:
        client = self._client(api)
        request = _request(api, action)
        for key, value in params.items():
            if api in _SETTER_APIS:
                _set_param(request, action, key, value)
            else:
                request.add_query_param(key, _wire(value))
        request.set_protocol_type(self.settings.protocol)
        if self.settings.endpoint:
            request.set_endpoint(self.settings.endpoint)
        if getattr(self._prepaid, "api", None) == api:
            self._prepaid.api = None  # the token `turn` took for this call
        else:
            self.buckets[api].acquire()
        with self._lock:
            self.calls[(api, action)] += 1
        from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException

        try:
            body = client.do_action_with_exception(request)
        except (ServerException, ClientException) as exc:
            raise from_sdk(action, exc, api) from None  # `from None`: the SDK's text may hold the signed URL
        except CloudError:
            raise
        except Exception as exc:  # the credentials provider failed while signing
            raise CloudError(action, "Credentials.Unavailable", f"{type(exc).__name__}: {exc}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise CloudError(action, "SDK.InvalidResponse", "response is not JSON") from None

    def _client(self, api: str) -> Any:
        with self._lock:
            client = self._clients.get(api)
            if client is None:
                client = self._clients[api] = self._build_client()
            return client

    def _build_client(self) -> Any:
        from aliyunsdkcore.client import AcsClient

        from .signer import ProviderSigner

        _quiet_sdk_logging()
        s = self.settings
        client = AcsClient(_PLACEHOLDER_KEY, _PLACEHOLDER_KEY, s.region, auto_retry=False,
                           connect_timeout=s.connect_timeout, timeout=s.read_timeout, pool_size=32)
        client._signer = ProviderSigner(self.provider)  # see signer.py for why
        return client

    def __repr__(self) -> str:
        s = self.settings
        return f"CloudClient(region={s.region!r}, endpoint={s.endpoint or 'default'!r}, protocol={s.protocol!r})"


def _request(api: str, action: str) -> Any:
    try:
        module = importlib.import_module(f"{_REQUESTS[api]}.{action}Request")
    except ImportError:
        raise ValueError(f"{api} has no action {action!r}") from None
    return getattr(module, f"{action}Request")()


def _set_param(request: Any, action: str, key: str, value: Any) -> None:
    """Through the SDK's own setter, which knows where the API wants it (query or body) and
    how to flatten a list (`Servers.N.Port`). Generated NLB setters for repeat lists are
    named `set_<Name>s` (e.g. `set_Serverss`)."""
    setter = getattr(request, f"set_{key}", None) or getattr(request, f"set_{key}s", None)
    if setter is None:
        raise ValueError(f"{action} has no parameter {key!r}")
    setter(_flat(value))


def _flat(value: Any) -> Any:
    """Parameter values as the wire text: "true"/"false", numbers as text, lists kept."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return [_flat(v) for v in value]
    if isinstance(value, dict):
        return {k: _flat(v) for k, v in value.items() if v is not None}
    return str(value)


def _wire(value: Any) -> str:
    """Query parameter text: JSON for lists and objects (e.g. InstanceIds, BackendServers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


_quiet_done = False


def _quiet_sdk_logging() -> None:
    """Silence the core SDK's loggers. They log request parameters (the STS token),
    response bodies and, on network errors, the signed URL; one even has its own stderr
    handler. We report every failure ourselves, cleaned, through `CloudError`."""
    global _quiet_done
    if _quiet_done:
        return
    # The level on the parent covers loggers created later; `disabled` covers those that
    # set their own level (http_response sets DEBUG) and handlers attached by test harnesses.
    logging.getLogger("aliyunsdkcore").setLevel(logging.CRITICAL + 1)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("aliyunsdkcore") and isinstance(logger, logging.Logger):
            logger.disabled = True
    _quiet_done = True
