"""CloudMonitor system-event rules and their MNS targets, through the cloud API client.

List parameters are encoded by `aliyun-python-sdk-cms`'s own request classes (their setters
flatten `[{"Product": "ecs", "NameList": [...]}]` into `EventPattern.1.Product`,
`EventPattern.1.NameList.1`, ... — the repeat-list form the RPC API expects), then sent by
`CloudClient` with its credentials, retries and rate limit. Responses are read defensively: the
API wraps lists as `{"NameList": {"NameList": [...]}}`.

Parameter names and shapes: Alibaba's CloudMonitor API reference, PutEventRule,
PutEventRuleTargets, DescribeEventRuleList, DescribeEventRuleTargetList (Version 2019-01-01).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from .errors import CloudError


@dataclass(frozen=True)
class Rule:
    name: str
    state: str
    product: str
    names: tuple[str, ...]  # empty: every event of the product
    description: str = ""


@dataclass(frozen=True)
class MnsTarget:
    id: str
    region: str
    queue: str
    arn: str = field(default="", compare=False)


def _sdk_params(action: str, setter: str, value: Any, **plain: Any) -> dict[str, str]:
    """The flat query parameters the SDK's request class produces for `setter(value)`."""
    module = importlib.import_module(f"aliyunsdkcms.request.v20190101.{action}Request")
    request = getattr(module, f"{action}Request")()
    getattr(request, setter)(value)
    params = dict(request.get_query_params() or {})
    params.update({k: v for k, v in plain.items() if v is not None})
    return params


def _items(value: Any, key: str) -> list:
    """`{"X": [...]}` or `[...]` or None -> list."""
    if isinstance(value, dict):
        value = value.get(key)
    return list(value) if isinstance(value, list) else []


class CloudMonitor:
    """`cloud`: a `CloudClient` (its `call("cms", ...)`)."""

    def __init__(self, cloud: Any) -> None:
        self.cloud = cloud

    def _call(self, action: str, params: dict) -> dict:
        body = self.cloud.call("cms", action, params)
        code = str(body.get("Code", "200"))
        if body.get("Success") is False or code not in ("200", ""):  # CMS can answer 200 with an error inside
            raise CloudError(action, code or "Error", str(body.get("Message", "")))
        return body

    # ------------------------------------------------------------------ reads

    def rule(self, name: str) -> Rule | None:
        body = self._call("DescribeEventRuleList", {"NamePrefix": name, "PageSize": "100"})
        for r in _items(body.get("EventRules"), "EventRule"):
            if r.get("Name") != name:
                continue
            patterns = _items(r.get("EventPattern"), "EventPattern")
            if isinstance(r.get("EventPattern"), dict) and "Product" in r["EventPattern"]:
                patterns = [r["EventPattern"]]
            product = str(patterns[0].get("Product", "")) if patterns else ""
            names = tuple(n for p in patterns for n in _items(p.get("NameList"), "NameList"))
            return Rule(name, str(r.get("State", "")), product, names, str(r.get("Description", "")))
        return None

    def targets(self, rule: str) -> list[MnsTarget]:
        try:
            body = self._call("DescribeEventRuleTargetList", {"RuleName": rule})
        except CloudError as exc:
            if exc.code == "ResourceNotFound":
                return []
            raise
        return [MnsTarget(str(t.get("Id", "")), str(t.get("Region", "")), str(t.get("Queue", "")),
                          str(t.get("Arn", "")))
                for t in _items(body.get("MnsParameters"), "MnsParameter")]

    # ------------------------------------------------------------------ changes

    @staticmethod
    def put_rule_params(rule: Rule) -> dict[str, str]:
        pattern: dict[str, Any] = {"Product": rule.product}
        if rule.names:
            pattern["NameList"] = list(rule.names)
        return _sdk_params("PutEventRule", "set_EventPatterns", [pattern], RuleName=rule.name,
                           State=rule.state, EventType="SYSTEM", Description=rule.description or None)

    @staticmethod
    def put_target_params(rule: str, target: MnsTarget) -> dict[str, str]:
        return _sdk_params("PutEventRuleTargets", "set_MnsParameterss",
                           [{"Id": target.id, "Region": target.region, "Queue": target.queue}], RuleName=rule)

    def put_rule(self, rule: Rule) -> dict:
        return self._call("PutEventRule", self.put_rule_params(rule))

    def put_target(self, rule: str, target: MnsTarget) -> dict:
        """Add the target; a target CloudMonitor answered 200 for but did not create is an error."""
        body = self._call("PutEventRuleTargets", self.put_target_params(rule, target))
        failed = _items(body.get("FailedMnsParameters"), "MnsParameter")
        if failed or str(body.get("FailedParameterCount") or "0") != "0":
            names = ", ".join(f"{t.get('Queue', '?')} ({t.get('Region', '?')})" for t in failed) or "?"
            raise CloudError("PutEventRuleTargets", "FailedParameters",
                             f"{body.get('FailedParameterCount')} target(s) not created: {names}")
        return body
