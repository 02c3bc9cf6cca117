"""`doctor`'s permission checks, from the API registry (`cloud/apis.py`): every API the worker and
its enabled plugins call. Reads are called; changes are proven with `DryRun=true` where the API has
it — RAM is checked before the resource's state, so any answer but a denial proves the permission;
MNS deletes and visibility changes with a receipt handle of no message (RAM before the handle).
What cannot be proven without a change is one `–` line per reason.
"""
from __future__ import annotations

from typing import Any

from .doctor_lines import FAIL, PASS, UNPROVEN, Check, denied

DRY_RUN_SERVER = "i-ecs-worker-doctor-dry-run"  # no instance has this id: a DryRun ignored changes nothing
# MNS calls provable with a receipt handle of no message (`sources/mns.PROBE_HANDLE`).
MNS_PROBES = {"BatchDeleteMessage": lambda queue, handle: next(iter(queue.delete_batch([handle]).values()), None),
              "ChangeMessageVisibility": lambda queue, handle: queue.change_visibility(handle, 1)}


class Permissions:
    """The checks for one `Doctor` (its config, plugins, credentials and cloud client)."""

    def __init__(self, doctor: Any) -> None:
        self.doctor = doctor

    def needed(self) -> list:
        """The APIs the worker and its enabled plugins call (the registry), `setup`'s excluded."""
        from ..cloud.apis import WORKER, used_by

        return used_by({WORKER, *(name for name, _ in self.doctor.plugins.pm.list_name_plugin())})

    def checks(self) -> list[Check]:
        """One line per API that can be proven without a change (reads are called, changes with
        DryRun where the API has it); a `–` line names what cannot be, and why."""
        apis = [a for a in self.needed() if a.service != "mns"]
        out = [self._prove_read(a) for a in apis if not a.change and a.probe]
        out += [self.prove_change(a) for a in apis if a.change and a.dry_run]
        for why, group in (("not tried: each reads one existing resource by its id",
                            [a for a in apis if not a.change and not a.probe]),
                           ("not provable without a change (the API has no DryRun)",
                            [a for a in apis if a.change and not a.dry_run])):
            if group:
                out.append(Check(UNPROVEN, f"{', '.join(r for a in group for r in a.ram)}: {why}; "
                                           "the printed policy grants them"))
        mns = [a for a in self.needed() if a.service == "mns" and a.change]
        out += [self._prove_mns(a) for a in mns if a.action in MNS_PROBES]
        out.append(Check(UNPROVEN, f"{', '.join(r for a in mns if a.action not in MNS_PROBES for r in a.ram)}: "
                                   "not provable without taking or sending messages; `run` exits 2 naming "
                                   "any the policy refuses"))
        return out

    def _prove_mns(self, api) -> Check:
        """A delete or visibility change of a receipt handle of no message: nothing changes, and the
        answer is about the handle unless RAM refuses the call."""
        from ..cloud.apis import mns_ram
        from ..queue.source import PROBE_HANDLE, MnsError, MnsQueue

        cfg, ram = self.doctor.config.mns, " and ".join(api.ram)
        skipped = self.doctor.blocked(ram, "mns")
        if skipped:
            return skipped
        queue = MnsQueue(cfg.endpoint, cfg.queue, self.doctor.provider, 0, ram=mns_ram,
                         socket_timeout=self.doctor.timeout)
        try:
            result = MNS_PROBES[api.action](queue, PROBE_HANDLE)  # a batch delete answers per handle
            answer = result.code if isinstance(result, MnsError) else "accepted"
        except MnsError as exc:
            if exc.denied or not exc.stale_handle:
                message = str(exc).split(f"{exc.code}: ", 1)[-1] if exc.code else str(exc)
                return self.doctor.failed(ram, exc.code or "Unknown", f"on queue {cfg.queue}: {message}",
                                          action=ram, service="mns")
            answer = exc.code
        return Check(PASS, f"{ram}: permitted (a receipt handle of no message on {cfg.queue}: {answer})")

    def _prove_read(self, api) -> Check:
        body, failed = self.doctor._read(api.service, api.action, **api.probe)
        if failed:
            return failed
        count = body.get("TotalCount")
        return Check(PASS, f"{' and '.join(api.ram)}: permitted ({api.service.upper()} {api.action} answers"
                           + (f", {count} in {self.doctor.config.cloud.region})" if count is not None else ")"))

    def _candidate(self) -> tuple[str | None, str, Check | None]:
        """An instance the restart plugin may act on (its tag), else any; or why none was read."""
        tag = str(self.doctor.config.plugin_sections.get("restart", {}).get("require_tag",
                                                                     "ecs-worker:auto-restart=true"))
        key, _, value = tag.partition("=")
        for params, why in (({"Tag.1.Key": key, "Tag.1.Value": value, "PageSize": 1}, f"tagged {tag}"),
                            ({"PageSize": 1}, "any instance: none carries the restart tag")):
            body, failed = self.doctor._read("ecs", "DescribeInstances", **params)
            if failed:
                return None, "", failed
            found = (body.get("Instances") or {}).get("Instance") or []
            if found:
                return found[0]["InstanceId"], why, None
        return None, "", None

    def _dry_run_params(self, api) -> tuple[dict | None, str]:
        """What a DryRun of this API acts on, and how it was chosen; None: nothing to try it on
        (and why: the real cause first, a failed read rather than "no instance")."""
        if api.service == "ecs":
            instance, why, failed = self._candidate()
            if failed is not None:
                return None, f"not tried: DescribeInstances failed ({failed.code or failed.text}, above)"
            return ({"InstanceId": instance}, f"{instance}, {why}") if instance else \
                (None, "no instance in the region to try DryRun on")
        body, failed = self.doctor._read(api.service, "ListServerGroups", MaxResults=1)
        if failed is not None:
            return None, f"not tried: ListServerGroups failed ({failed.code or failed.text}, above)"
        groups = body.get("ServerGroups") or []
        if not groups:
            return None, f"no {api.service.upper()} server group in the region to try DryRun on"
        group = groups[0]["ServerGroupId"]  # a server that is no instance: never a real change
        return {"ServerGroupId": group, "Servers": [{"ServerId": DRY_RUN_SERVER, "ServerType": "Ecs", "Port": 80,
                                                      "Weight": 100}]}, f"group {group}"

    def prove_change(self, api) -> Check:
        from ..cloud import CloudError
        from .doctor_fixes import CREDENTIAL_CODES, NETWORK_CODES

        ram = " and ".join(api.ram)
        skipped = self.doctor.blocked(ram)
        if skipped:
            return skipped
        params, where = self._dry_run_params(api)
        if params is None:
            return Check(UNPROVEN, f"{ram}: {where}")
        try:
            getattr(self.doctor.cloud, api.service)(api.action, **params, DryRun=True)
            answer = "accepted"  # a service that ignores DryRun would have acted: on a stopped instance
        except CloudError as exc:
            # ECS answers DryRunOperation, or IncorrectInstanceStatus for the instance's state, once
            # RAM allowed the call; anything else is a failure. ALB/NLB check RAM before the
            # resource's state: any answer but a denial, a bad key or no answer proves the permission.
            proven = (exc.code == "DryRunOperation" or exc.code.startswith("IncorrectInstanceStatus")
                      if api.service == "ecs" else
                      not denied(exc.code) and exc.code not in CREDENTIAL_CODES | NETWORK_CODES)
            if not proven:
                return self.doctor.failed(ram, exc.code, f"DryRun on {where}", action=ram)
            answer = exc.code
        return Check(PASS, f"{ram}: permitted (DryRun on {where}: {answer})")
