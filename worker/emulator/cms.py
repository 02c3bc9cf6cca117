"""CloudMonitor (Cms, Version 2019-01-01) system-event rules and their MNS targets.

The actions `setup` and `doctor` call, with the parameter names and response shapes of
Alibaba's API reference (help/en/cms/developer-reference/api-cms-2019-01-01-puteventrule,
-puteventruletargets, -describeeventrulelist, -describeeventruletargetlist):

- PutEventRule creates the rule, or replaces the rule of that name ("adds or modifies");
  `EventPattern.N.Product` is required, lists are `EventPattern.N.NameList.M` and so on.
- PutEventRuleTargets adds or replaces targets by their `Id` (`MnsParameters.N.Id`,
  `.Region`, `.Queue`). It answers 200 even for targets it did not create, counting them in
  `FailedParameterCount` and listing them in `FailedMnsParameters.MnsParameter[]` (its response
  model); a target naming a queue that does not exist is one here (our stricter reading).
- DescribeEventRuleList answers `EventRules.EventRule[]`, each `EventPattern.EventPattern[]`
  with `NameList.NameList[]`...; DescribeEventRuleTargetList answers
  `MnsParameters.MnsParameter[]` with `Id`, `Region`, `Queue`, `Arn`.

`Monitor.queues_for(envelope)` is what fleet-event delivery asks: the MNS queues of every
enabled rule whose pattern matches an event. All methods run under the emulator's lock.
"""
from __future__ import annotations

from typing import Mapping

from .rpc_params import RpcError, int_param, repeat, require

CMS_VERSION = "2019-01-01"
MAX_PATTERNS = 50
# CloudMonitor's event types for the names the emulator publishes (EventTypeList filter).
EVENT_TYPES = {"Instance:StateChange": "StatusNotification",
               "Instance:PreemptibleInstanceInterruption": "StatusNotification"}


def _invalid(name: str) -> RpcError:
    return RpcError(400, "InvalidParameter", f"The specified parameter \"{name}\" is not valid.")


def _ok(success: bool = True, **fields) -> dict:
    """A success answer; `success=False`: the API's answer has no `Success` field (its model)."""
    return {"Code": "200", **({"Success": True} if success else {}), "Message": "", **fields}


class Monitor:
    """Event rules by name: {"name", "state", "description", "group_id", "patterns", "targets"}."""

    def __init__(self, region: str, account_id: str, queue_exists=lambda region, queue: True):
        self.region, self.account_id = region, account_id
        self.queue_exists = queue_exists  # (region, queue) -> bool: a target naming no queue fails
        self.rules: dict[str, dict] = {}
        self.actions = {
            "PutEventRule": self.put_event_rule,
            "PutEventRuleTargets": self.put_event_rule_targets,
            "DescribeEventRuleList": self.describe_event_rule_list,
            "DescribeEventRuleTargetList": self.describe_event_rule_target_list,
            "DeleteEventRules": self.delete_event_rules,
            "DeleteEventRuleTargets": self.delete_event_rule_targets,
        }

    # ------------------------------------------------------------------ API

    def put_event_rule(self, p: Mapping[str, str]) -> dict:
        name = require(p, "RuleName")
        patterns = []
        for n in range(1, MAX_PATTERNS + 1):
            prefix = f"EventPattern.{n}."
            if not any(k.startswith(prefix) for k in p):
                break
            product = p.get(prefix + "Product")
            if not product:
                raise RpcError(400, "MissingParameter",
                               f"The input parameter \"{prefix}Product\" that is mandatory for processing "
                               "this request is not supplied.")
            patterns.append({"product": product,
                             "names": repeat(p, prefix + "NameList"),
                             "levels": repeat(p, prefix + "LevelList"),
                             "types": repeat(p, prefix + "EventTypeList"),
                             "statuses": repeat(p, prefix + "StatusList"),
                             "sql_filter": p.get(prefix + "SQLFilter", "")})
        if not patterns:
            raise RpcError(400, "MissingParameter", "The input parameter \"EventPattern\" that is mandatory "
                                                    "for processing this request is not supplied.")
        state = p.get("State") or "ENABLED"
        if state not in ("ENABLED", "DISABLED"):
            raise _invalid("State")
        old = self.rules.get(name, {})
        self.rules[name] = {"name": name, "state": state, "description": p.get("Description", ""),
                            "group_id": p.get("GroupId", ""), "event_type": p.get("EventType") or "SYSTEM",
                            "silence_time": int_param(p, "SilenceTime", 86400, 0, 10**9), "patterns": patterns,
                            "targets": old.get("targets", {})}
        return _ok(Data="1")

    def put_event_rule_targets(self, p: Mapping[str, str]) -> dict:
        rule = self._rule(require(p, "RuleName"))
        added, failed = 0, []
        for n in range(1, 101):
            prefix = f"MnsParameters.{n}."
            if not any(k.startswith(prefix) for k in p):
                break
            target_id = p.get(prefix + "Id")
            if not target_id:
                raise _invalid(prefix + "Id")
            queue, topic = p.get(prefix + "Queue", ""), p.get(prefix + "Topic", "")
            if not (queue or topic):
                raise _invalid(prefix + "Queue")
            region = p.get(prefix + "Region") or self.region
            added += 1
            if queue and not self.queue_exists(region, queue):  # answered 200, the target not created
                failed.append({"Id": target_id, "Region": region, "Queue": queue})
                continue
            rule["targets"][target_id] = {"id": target_id, "region": region, "queue": queue, "topic": topic}
        if not added:
            raise RpcError(400, "MissingParameter", "The input parameter \"MnsParameters\" that is mandatory "
                                                    "for processing this request is not supplied.")
        return _ok(FailedParameterCount=str(len(failed)), FailedMnsParameters={"MnsParameter": failed})

    def describe_event_rule_list(self, p: Mapping[str, str]) -> dict:
        prefix = p.get("NamePrefix", "")
        rules = [r for name, r in sorted(self.rules.items()) if name.startswith(prefix)]
        if p.get("IsEnable") in ("true", "false"):
            rules = [r for r in rules if (r["state"] == "ENABLED") == (p["IsEnable"] == "true")]
        number = int_param(p, "PageNumber", 1, 1, 10**9)
        size = int_param(p, "PageSize", 10, 1, 100)
        page = rules[(number - 1) * size: number * size]
        return _ok(Total=len(rules), EventRules={"EventRule": [self._rule_json(r) for r in page]})

    def describe_event_rule_target_list(self, p: Mapping[str, str]) -> dict:
        rule = self._rule(require(p, "RuleName"))
        mns = [{"Id": t["id"], "Region": t["region"], "Queue": t["queue"], "Topic": t["topic"],
                "Arn": self._arn(t)} for t in rule["targets"].values()]
        return _ok(False, MnsParameters={"MnsParameter": mns}, ContactParameters={"ContactParameter": []},
                   FcParameters={"FCParameter": []}, WebhookParameters={"WebhookParameter": []},
                   SlsParameters={"SlsParameter": []}, OpenApiParameters={"OpenApiParameters": []})

    def delete_event_rules(self, p: Mapping[str, str]) -> dict:
        names = repeat(p, "RuleNames")
        if not names:
            raise RpcError(400, "MissingParameter", "The input parameter \"RuleNames\" that is mandatory "
                                                    "for processing this request is not supplied.")
        for name in names:
            self.rules.pop(name, None)
        return _ok()

    def delete_event_rule_targets(self, p: Mapping[str, str]) -> dict:
        rule = self._rule(require(p, "RuleName"))
        for target_id in repeat(p, "Ids"):
            rule["targets"].pop(target_id, None)
        return _ok()

    # ------------------------------------------------------------------ delivery

    def queues_for(self, envelope: dict) -> list[str]:
        """Names of the queues (in this region) that enabled matching rules target, each once."""
        out: list[str] = []
        for rule in self.rules.values():
            if rule["state"] != "ENABLED" or not any(_matches(pt, envelope) for pt in rule["patterns"]):
                continue
            for t in rule["targets"].values():
                if t["queue"] and t["region"] == self.region and t["queue"] not in out:
                    out.append(t["queue"])
        return out

    def snapshot(self) -> list[dict]:
        return [{"name": r["name"], "state": r["state"],
                 "patterns": [{k: v for k, v in pt.items() if v} for pt in r["patterns"]],
                 "targets": sorted((dict(t) for t in r["targets"].values()), key=lambda t: t["id"])}
                for r in self.rules.values()]

    # ------------------------------------------------------------------ helpers

    def _rule(self, name: str) -> dict:
        rule = self.rules.get(name)
        if rule is None:
            raise RpcError(404, "ResourceNotFound", f"The event rule {name} does not exist.")
        return rule

    def _arn(self, t: dict) -> str:
        return f"acs:mns:{t['region']}:{self.account_id}:/queues/{t['queue']}/messages" if t["queue"] else \
            f"acs:mns:{t['region']}:{self.account_id}:/topics/{t['topic']}/messages"

    @staticmethod
    def _rule_json(r: dict) -> dict:
        patterns = [{"Product": pt["product"], "NameList": {"NameList": pt["names"]},
                     "LevelList": {"LevelList": pt["levels"]}, "EventTypeList": {"EventTypeList": pt["types"]},
                     "SQLFilter": pt["sql_filter"]}
                    for pt in r["patterns"]]
        return {"Name": r["name"], "State": r["state"], "Description": r["description"],
                "GroupId": r["group_id"], "EventType": r["event_type"], "SilenceTime": r["silence_time"],
                "EventPattern": {"EventPattern": patterns}}


def _matches(pattern: dict, envelope: dict) -> bool:
    """Product (any case), name, level and event type; an empty list or "*" means any.

    A listed name matches only that exact name. CloudMonitor's O&M event names carry their status
    (`Instance:SystemMaintenance.Reboot:Scheduled`, ECS "Summary of system events") and nothing
    documents prefix matching, so `Instance:SystemMaintenance.Reboot` delivers none of them."""
    if pattern["product"].lower() != str(envelope.get("product", "")).lower():
        return False
    name = str(envelope.get("name", ""))
    names = [n for n in pattern["names"] if n != "*"]
    if names and name not in names:
        return False
    levels = [lv.upper() for lv in pattern["levels"] if lv != "*"]
    if levels and str(envelope.get("level", "")).upper() not in levels:
        return False
    types = [t for t in pattern["types"] if t != "*"]
    if types and EVENT_TYPES.get(name, "") not in types:
        return False
    return True
