"""Alibaba's own published OpenAPI models as the contract (issue 18), and the API registry as the
only list of calls, checked on what the emulator actually served during the demo (the real worker,
real SDKs, every built-in plugin) under the shipped policy, with either reading of MNS's RAM names.

- every call the worker made is in the registry (worker/cloud/apis.py);
- every request parameter the worker sent is a field of that API's request model
  (`alibabacloud_<service><version>.models.<Action>Request`), by wire name;
- every answer the emulator gave passes through the response model (`<Action>ResponseBody.from_map`)
  without losing a field: a misspelt parameter or field our own emulator would agree with fails here.

The flat-to-nested rule (docs/cloud-behaviour.md, "Request parameters"): a wire name splits on
"."; a number is a 1-based list index, anything else a key. `Tag.1.Key` is `{"Tag": [{"Key": v}]}`,
`EventId.1` is `{"EventId": [v]}`, `Servers.2.ServerId` is `{"Servers": [_, {"ServerId": v}]}`.
A JSON-string parameter (`InstanceIds='["i-…"]'`, SLB `BackendServers`) is one string field.
"""
from __future__ import annotations

import importlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st

from ecs_worker.app import connect
from ecs_worker.cloud.credentials import credentials_provider
from ecs_worker.cloud.apis import APIS, BY_KEY
from ecs_worker.cloud.client import _REQUESTS

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("alibabacloud_ecs20140526", reason="Alibaba's models: pip install -e '.[test]'")


def nested(params: dict[str, str]) -> dict:
    """The one rule: flat wire names to the model's nested map."""
    out: dict = {}
    for name, value in params.items():
        parts = name.split(".")
        node, key = out, parts[0]
        for part in parts[1:]:
            if part.isdigit():
                node = node.setdefault(key, [])
                index = int(part) - 1
                node.extend({} for _ in range(index + 1 - len(node)))
                node, key = node, index
            else:
                if isinstance(node, list) and not isinstance(node[key], dict):
                    node[key] = {}
                node = node[key] if isinstance(node, list) else node.setdefault(key, {})
                key = part
        node[key] = value
    return out


def model(service: str, action: str, suffix: str):
    version = _REQUESTS[service].rsplit(".v", 1)[1]
    module = importlib.import_module(f"alibabacloud_{service}{version}.models")
    cls = getattr(module, f"{action}{suffix}", None)
    assert cls is not None, f"{service} {action}: Alibaba's {service} {version} models have no {action}{suffix}"
    return cls


def lost(sent, kept, path: str = "") -> list[str]:
    """Paths of `sent` that `kept` (the model's round trip) does not carry with the same value."""
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [path or "."]
        return [p for k, v in sent.items() for p in (lost(v, kept[k], f"{path}.{k}".strip(".")) if k in kept
                                                     else [f"{path}.{k}".strip(".")])]
    if isinstance(sent, list):
        if not isinstance(kept, list) or len(kept) != len(sent):
            return [path]
        return [p for i, (a, b) in enumerate(zip(sent, kept)) for p in lost(a, b, f"{path}[{i}]")]
    return [] if sent == kept or str(sent) == str(kept) else [path]


def check_against_models(requests: dict[str, dict]) -> set[tuple[str, str]]:
    """Assert every recorded request and answer fits Alibaba's models; the (service, action)s seen."""
    seen = set()
    for name, record in requests.items():
        service, action = name.split(":")
        assert (service, action) in BY_KEY, f"{name}: served, but not in the API registry"
        seen.add((service, action))
        sent = nested(record["params"])
        kept = model(service, action, "Request")().from_map(sent).to_map()
        assert not lost(sent, kept), f"{name}: request parameters not in Alibaba's model: {lost(sent, kept)}"
        for answer in record["answers"]:
            body = model(service, action, "ResponseBody")().from_map(answer).to_map()
            assert not lost(answer, body), f"{name}: answer fields not in Alibaba's model: {lost(answer, body)}"
    return seen


def test_the_flat_to_nested_rule():
    assert nested({"Tag.1.Key": "k", "Tag.1.Value": "v", "Tag.2.Key": "x", "PageSize": "1"}) == \
        {"Tag": [{"Key": "k", "Value": "v"}, {"Key": "x"}], "PageSize": "1"}
    assert nested({"EventId.1": "e-1", "EventId.2": "e-2"}) == {"EventId": ["e-1", "e-2"]}
    assert nested({"EventPattern.1.NameList.1": "a", "EventPattern.1.Product": "ecs"}) == \
        {"EventPattern": [{"NameList": ["a"], "Product": "ecs"}]}


def flat(doc, prefix: str = "") -> dict[str, str]:
    """The inverse of `nested`: a nested map back to wire names (1-based list indexes)."""
    if isinstance(doc, dict):
        return {k: v for key, value in doc.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    if isinstance(doc, list):
        return {k: v for i, value in enumerate(doc, 1) for k, v in flat(value, f"{prefix}{i}.").items()}
    return {prefix[:-1]: doc}


_name = st.from_regex(r"[A-Z][A-Za-z]{0,7}", fullmatch=True)
_path = st.lists(st.one_of(_name, st.integers(1, 3).map(str)), min_size=0, max_size=3).map(
    lambda parts: [p for i, p in enumerate(parts) if not (p.isdigit() and i and parts[i - 1].isdigit())])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.tuples(_name, _path).map(lambda t: ".".join([t[0], *t[1]])), st.text(max_size=5),
                       max_size=6))
def test_the_rule_is_one_to_one_on_consistent_wire_names(params):
    """flat(nested(p)) == p whenever no name is both a leaf and a parent, and lists have no holes."""
    names = set(params)
    if any(n.startswith(m + ".") for n in names for m in names):
        return  # `A` and `A.B` together: not a shape any API has
    try:
        doc = nested(params)
    except (TypeError, AttributeError, IndexError, KeyError):
        return  # a key and an index at the same place (`A.B` and `A.1`): likewise
    if _holes(doc):
        return
    assert flat(doc) == params


def _holes(doc) -> bool:
    if isinstance(doc, list):
        return any(x == {} for x in doc) or any(_holes(x) for x in doc)
    return isinstance(doc, dict) and any(_holes(v) for v in doc.values())


def test_a_misspelt_parameter_or_field_fails_the_check():
    with pytest.raises(AssertionError, match="Tag.0..Kee"):
        check_against_models({"ecs:DescribeInstances": {"params": {"Tag.1.Kee": "x"}, "answers": []}})
    with pytest.raises(AssertionError, match="TotalCont"):
        check_against_models({"ecs:DescribeInstances": {"params": {}, "answers": [{"TotalCont": 1}]}})
    with pytest.raises(AssertionError, match="not in the API registry"):
        check_against_models({"ecs:DeleteInstance": {"params": {}, "answers": []}})


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """The demo under the shipped policy, once per reading of MNS's RAM action names: its summary
    and the emulator's record of the worker's requests (captured in-process)."""
    import ecs_worker.testing as kit
    from ecs_worker.demo import run as demo

    runs = {}
    mp = pytest.MonkeyPatch()
    real = kit.run_emulator
    try:
        mp.setenv("ECS_WORKER_LOAD_PLUGINS", "")
        for reading in ("api", "table"):
            captured = {}

            def run_emulator(state=None, reading=reading, captured=captured):
                state = dict(state or {}, mns_ram_reading=reading)
                cm = real(state)
                emulator = cm.__enter__()
                captured["emulator"] = emulator
                captured["cm"] = cm
                return _Holding(emulator, cm, captured)

            mp.setattr(kit, "run_emulator", run_emulator)
            out = io.StringIO()
            mp.setattr("sys.stdout", out)
            code = demo.main(SimpleNamespace(ram_policy=str(ROOT / "deploy" / "ram-policy.json"), json=True),
                             connect=connect)
            mp.undo()
            mp.setenv("ECS_WORKER_LOAD_PLUGINS", "")
            runs[reading] = (code, json.loads(out.getvalue()), captured)
    finally:
        mp.undo()
    return runs


class _Holding:
    """Keeps the emulator's record readable after the demo's `with` block ends."""

    def __init__(self, emulator, cm, captured):
        self.emulator, self.cm, self.captured = emulator, cm, captured

    def __enter__(self):
        return self.emulator

    def __exit__(self, *exc):
        self.captured["requests"] = json.loads(json.dumps(self.emulator.world.requests))
        self.captured["calls"] = dict(self.emulator.world.calls)
        return self.cm.__exit__(*exc)


@pytest.mark.parametrize("reading", ["api", "table"])
def test_the_demo_runs_under_the_shipped_policy_in_both_readings(demo_runs, reading):
    code, summary, captured = demo_runs[reading]
    assert code == 0 and summary["drained"] and summary["worker_exit_code"] == 0, summary
    assert "failed" not in summary["events_by_outcome"], summary["events_by_outcome"]
    assert summary["restarted"] == ["i-demoauto0000000001"] and len(summary["removed_from_groups"]) == 2
    assert captured["calls"].get("mns:BatchReceiveMessage") and captured["calls"].get("mns:BatchDeleteMessage")


@pytest.mark.parametrize("reading", ["api", "table"])
def test_every_call_the_worker_made_is_registered_and_fits_alibabas_models(demo_runs, reading):
    _, _, captured = demo_runs[reading]
    called = {tuple(name.split(":")) for name in captured["calls"]}
    assert called <= set(BY_KEY), f"calls not in the API registry: {called - set(BY_KEY)}"
    seen = check_against_models(captured["requests"])
    # the demo drives every built-in: restarts, spot removals from CLB/ALB/NLB, a maintenance reboot
    assert {("ecs", "StartInstance"), ("ecs", "RebootInstance"), ("slb", "RemoveVServerGroupBackendServers"),
            ("alb", "RemoveServersFromServerGroup"), ("ecs", "DescribeInstanceHistoryEvents"),
            ("alb", "GetListenerHealthStatus"), ("nlb", "GetListenerHealthStatus")} <= seen, seen


def test_setup_and_doctor_requests_fit_alibabas_models(emulator, tmp_path):
    from ecs_worker.config import parse_config
    from ecs_worker.operations.doctor import Doctor
    from ecs_worker.plugin_host.manager import load_plugins
    from ecs_worker.operations.setup import Setup

    config = parse_config({
        "mns": {"endpoint": emulator.mns_endpoint, "queue": "ecs-events", "dead_letter_queue": "ecs-events-dlq"},
        "cloud": {"region": emulator.region, "endpoint": emulator.endpoint, "protocol": "http"},
        "credentials": {"access_key_id": emulator.access_key_id, "access_key_secret": emulator.access_key_secret},
        "worker": {"state_dir": str(tmp_path)}, "plugins": {"disabled": ["hello"]}})
    plugins = load_plugins(config, entry_points_too=False)
    emulator.reset_calls()
    assert Setup(config, plugins, dry_run=False, out=io.StringIO(), provider=credentials_provider(config.credentials)).run() == 0
    Doctor(config, plugins, out=io.StringIO()).run()
    seen = check_against_models(emulator.world.requests)
    assert {("cms", "PutEventRule"), ("cms", "PutEventRuleTargets"), ("ecs", "StartInstance")} <= seen


def test_every_rpc_api_in_the_registry_is_in_alibabas_models():
    for a in APIS:
        if a.service != "mns":
            assert model(a.service, a.action, "Request") and model(a.service, a.action, "ResponseBody")


def shapes(parts: list[str]):
    """Every way a dotted path can nest: each key's value an object or a list of them; the leaf a
    value or a list of values."""
    if len(parts) == 1:
        yield {parts[0]: "x"}
        yield {parts[0]: ["x"]}
        return
    for inner in shapes(parts[1:]):
        yield {parts[0]: inner}
        yield {parts[0]: [inner]}


def in_model(cls, path: str) -> bool:
    """The response model carries `path` (some nesting of it survives from_map/to_map)."""
    for doc in shapes(path.split(".")):
        try:
            kept = cls().from_map(doc).to_map()
        except Exception:  # that nesting is not the model's (a list where it wants an object)
            continue
        if not lost(doc, kept):
            return True
    return False


def test_every_field_the_worker_reads_is_a_field_of_the_response_model():
    assert any(a.reads for a in APIS)
    missing = [f"{a.service} {a.action}: {path}" for a in APIS if a.service != "mns"
               for path in a.reads if not in_model(model(a.service, a.action, "ResponseBody"), path)]
    assert not missing, missing
    assert not in_model(model("ecs", "DescribeInstances", "ResponseBody"), "Instances.Instance.Statuss")
