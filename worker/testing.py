"""Test kit for ecs-worker and its plugin authors (pytest plugin via the pytest11 entry point).

Importable without pytest: only the fixtures need it, and they are defined only when pytest is
importable.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

from .events.event import PREEMPTIBLE_INTERRUPTION, STATE_CHANGE

try:  # the fixtures below need pytest; the helpers do not
    import pytest
except ImportError:  # pragma: no cover - exercised only without pytest installed
    pytest = None  # type: ignore[assignment]

__all__ = ["Harness", "acs_client", "body", "interruption", "maintenance", "mns_queue", "published_events",
           "run_emulator", "state_change", "with_spot_instances"]


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


def with_spot_instances(state: dict) -> dict:
    """`state` plus a Running spot instance for every server of its load-balancer groups
    that is not an instance yet: the `slb` plugin asks ECS before it removes one."""
    known = {i["id"] for i in state.get("instances", [])}
    servers = [s["server_id"] for lb in state.get("load_balancers", []) for g in lb.get("vserver_groups", [])
               for s in g.get("backend_servers", [])]
    servers += [s["server_id"] for kind in ("alb_server_groups", "nlb_server_groups")
                for g in state.get(kind, []) for s in g.get("servers", [])]
    extra = [{"id": sid, "status": "Running", "spot": True} for sid in dict.fromkeys(servers) if sid not in known]
    return {**state, "instances": [*state.get("instances", []), *extra]}


def mns_queue(emulator, name: str, *, encoding: bool = False, access_key_id: str | None = None,
              access_key_secret: str | None = None, security_token: str = ""):
    """An `mns` SDK Queue bound to the emulator (base64 encoding off unless asked)."""
    from mns.account import Account

    account = Account(emulator.mns_endpoint, access_key_id or emulator.access_key_id,
                      access_key_secret or emulator.access_key_secret, security_token)
    queue = account.get_queue(name)
    queue.set_encoding(encoding)
    return queue


def published_events(emulator) -> list[dict]:
    """Record, from now on, every fleet event the emulator publishes (`Cloud.publish_event`):
    a list that fills with {"name", "instance_id", "content", "level"} as events happen.
    Publishing still goes on as before (to the event rules, when the emulator has them)."""
    seen: list[dict] = []
    cloud = emulator.world.cloud
    original = cloud.publish_event

    def spy(name, instance_id, content, level="INFO"):
        seen.append({"name": name, "instance_id": instance_id, "content": dict(content), "level": level})
        return original(name, instance_id, content, level)

    cloud.publish_event = spy
    return seen


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



# =====================================================================================
# Event factories: realistic events in either envelope, for plugin tests
# =====================================================================================

_ACCOUNT = "1690000000000000"


def _cloudmonitor(name: str, instance_id: str, content: dict, region: str, event_id: str | None,
                  level: str) -> dict:
    import uuid

    return {"ver": "1.0", "id": event_id or str(uuid.uuid4()).upper(), "product": "ECS",
            "resourceId": f"acs:ecs:{region}:{_ACCOUNT}:instance/{instance_id}", "level": level,
            "name": name, "userId": _ACCOUNT, "eventTime": "20261127T121826.922+0800",
            "regionId": region, "content": content}


def _eventbridge(name: str, instance_id: str, content: dict, region: str, event_id: str | None) -> dict:
    import uuid

    return {"specversion": "1.0", "id": event_id or str(uuid.uuid4()), "source": "acs.ecs",
            "type": f"ecs:{name}", "subject": f"acs:ecs:{region}:{_ACCOUNT}:instance/{instance_id}",
            "datacontenttype": "application/json;charset=utf-8", "time": "2026-11-27T05:00:00Z",
            "aliyunaccountid": _ACCOUNT, "aliyunregionid": region, "data": content}


def _event(name: str, instance_id: str, content: dict, *, envelope: str, region: str,
           event_id: str | None, level: str = "INFO"):
    import json

    from .events.event import parse_event

    if envelope == "cloudmonitor":
        doc = _cloudmonitor(name, instance_id, content, region, event_id, level)
    elif envelope == "eventbridge":
        doc = _eventbridge(name, instance_id, content, region, event_id)
    else:
        raise ValueError(f"envelope must be 'cloudmonitor' or 'eventbridge', not {envelope!r}")
    return parse_event(json.dumps(doc))  # through the real parser: what plugins will see


def state_change(instance_id: str, state: str, *, envelope: str = "cloudmonitor",
                 region: str = "cn-hangzhou", event_id: str | None = None):
    """An `Instance:StateChange` event (`state`: Running, Stopped, ...)."""
    content = {"resourceId": instance_id, "resourceType": "ALIYUN::ECS::Instance", "state": state}
    return _event(STATE_CHANGE, instance_id, content, envelope=envelope, region=region,
                  event_id=event_id)


def interruption(instance_id: str, *, envelope: str = "cloudmonitor", region: str = "cn-hangzhou",
                 event_id: str | None = None):
    """An `Instance:PreemptibleInstanceInterruption` (spot release in ~5 minutes)."""
    return _event(PREEMPTIBLE_INTERRUPTION, instance_id,
                  {"instanceId": instance_id, "action": "delete"}, envelope=envelope, region=region,
                  event_id=event_id, level="WARN")


def maintenance(instance_id: str, name: str = "Instance:SystemMaintenance.Reboot:Scheduled", *,
                not_before: str = "2026-11-29T18:00:00Z", envelope: str = "cloudmonitor",
                region: str = "cn-hangzhou", event_id: str | None = None):
    """A system event such as `Instance:SystemMaintenance.Reboot:Scheduled`."""
    event_type, _, status = name.split(":", 1)[1].partition(":")
    content = {"eventId": f"e-{instance_id[-8:]}", "instanceId": instance_id, "eventType": event_type,
               "eventStatus": status or "Scheduled", "notBefore": not_before}
    return _event(name, instance_id, content, envelope=envelope, region=region, event_id=event_id,
                  level="CRITICAL")


def body(event, *, base64_wrapped: bool = False) -> str:
    """The queue message body for `event`, as CloudMonitor / EventBridge would send it."""
    import base64
    import json

    text = json.dumps(dict(event.raw))
    return base64.b64encode(text.encode()).decode() if base64_wrapped else text


# =====================================================================================
# Harness: one plugin, a real plugin manager, the worker's dispatch path
# =====================================================================================

class Harness:
    """Register `plugin` (alone, plus nothing else) and dispatch events to it as the worker does.

    `plugin` is a module or a plugin object (`Harness(MyPlugin())`: its state is the object's,
    started by `on_startup` here and released by `close()`); its name is the one production
    gives it: `name`, else its entry point's name when installed, else the object's class
    attribute `name`, else the module's last part (a `[plugins] load` module or file's).

    `config` is the plugin's `[plugins.<name>]` section; `emulator` points `ctx.cloud` at a
    running emulator; `settings` adds other config sections (`{"worker": {"state_dir": …}}`;
    without a `state_dir`, each harness gets a fresh temporary one);
    `dry_run` defaults to True so nothing changes by accident.
    """

    def __init__(self, plugin, *, name: str | None = None, config: dict | None = None,
                 dry_run: bool = True, emulator=None, settings: dict | None = None,
                 call_timeout: float = 30.0) -> None:
        from .config import parse_config
        from .plugin_host.context import Runtime
        from .plugin_host.dispatch import Dispatcher
        from .plugin_host.manager import Plugins, configure_plugins, installed_name

        own = getattr(type(plugin), "name", None)  # a plugin object names itself (RestartPlugin.name)
        self.name = name or installed_name(plugin) or (
            own if isinstance(own, str) else getattr(plugin, "__name__", type(plugin).__name__).rsplit(".", 1)[-1])
        data: dict = {"plugins": {self.name: dict(config or {})}}
        if emulator is not None:
            data["cloud"] = {"region": emulator.region, "endpoint": emulator.endpoint, "protocol": "http"}
            data["credentials"] = {"access_key_id": emulator.access_key_id,
                                   "access_key_secret": emulator.access_key_secret}
        for section, values in (settings or {}).items():  # other sections, e.g. {"worker": {...}}
            data[section] = {**data.get(section, {}), **values}
        self._scratch = None
        if "state_dir" not in data.get("worker", {}):  # the store's files: never the system's dir
            import tempfile

            self._scratch = tempfile.TemporaryDirectory(prefix="ecs-worker-harness-")  # removed by close()
            data.setdefault("worker", {})["state_dir"] = self._scratch.name
        self.config = parse_config(data, f"<harness {self.name}>")
        self.plugins = Plugins()
        self.plugins.register(plugin, self.name, "harness")
        self.plugins.pm.check_pending()
        configure_plugins(self.plugins, self.config)
        self.runtime = Runtime(self.config, self.plugins.configs, dry_run=dry_run)
        self.dispatcher = Dispatcher(self.plugins.pm, self.runtime, call_timeout)
        self.dispatcher.startup()

    def __enter__(self) -> "Harness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, event, resume=None):
        """Dispatch without waiting: a future of the `Result` (for plugins that batch)."""
        return self.dispatcher.start(event, resume)

    def dispatch(self, event, resume=None):
        """Dispatch once; returns the `Result` (outcome, actions, error, defer_seconds)."""
        result = self.dispatcher.dispatch(event, resume)
        self.dispatcher.run_on_settled(event, result, wait=True)  # observers done when this returns
        return result

    def replay(self, event):
        """Dispatch, treating any deferral as elapsed (as `replay --dry-run` does)."""
        from .operations.replay import Item, replay_one

        return replay_one(self.dispatcher, Item("<harness>", body(event)), elapse_deferrals=True)

    def close(self) -> None:
        self.dispatcher.shutdown()
        if self._scratch is not None:
            self._scratch.cleanup()


if pytest is not None:

    @pytest.fixture
    def harness():
        """A factory: `harness(plugin, config={...}, dry_run=True, emulator=None)` -> `Harness`."""
        made: list[Harness] = []

        def make(plugin, **kwargs) -> Harness:
            h = Harness(plugin, **kwargs)
            made.append(h)
            return h

        yield make
        for h in made:
            h.close()
