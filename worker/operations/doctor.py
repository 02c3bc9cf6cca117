"""`ecs-worker doctor`: prove the chain without changing anything, one line per check.

✓ passes, ✗ fails (with its code's one fix, doctor_fixes.py), – not provable here (a change
would be needed, or nothing is configured): reported, not a failure. First the start-up checks
`run` and `check-config` make (startup_checks.py; a failure there is a config error, exit 2);
then each call, the real cause first. Exit 1 when any line is ✗, else 0.

StartInstance is proven with ECS's `DryRun=true`: RAM is checked before the instance's
status, so `DryRunOperation` or `IncorrectInstanceStatus` proves the permission
(help/en/ecs/developer-reference/api-ecs-2014-05-26-startinstance).
CLB has no dry run, so SLB writes cannot be proven without a change.
"""
from __future__ import annotations

import socket
import sys
from dataclasses import replace
from typing import Any, Callable, TextIO

from ..config import ConfigError
from .doctor_lines import DENIED, FAIL, PASS, UNPROVEN, Check, denied  # noqa: F401 - DENIED for callers
from ..exit_codes import EXIT_FAILURE, EXIT_OK
from .setup import PRODUCT, event_names, rule_name, target_region

TIMEOUT = 3.0  # seconds to connect, and to answer: an unreachable endpoint is reported, not retried


class Doctor:
    def __init__(self, config: Any, plugins: Any, out: TextIO = sys.stdout, probe: float | None = None) -> None:
        """`probe`: also run `--probe`, watching that many seconds for the test event."""
        self.config, self.plugins, self.out, self.probe = config, plugins, out, probe
        self.results: list[Check] = []
        self.unreachable: dict[str, str] = {}  # "mns" / "cloud" -> the failed check, for the real cause
        self.bad_keys = ""  # the check whose answer said the keys are wrong
        self._fixed: set[str] = set()
        self._provider = None
        self._cloud = None

    def say(self, check: Check) -> None:
        self.results.append(check)
        fix = check.fix
        if check.code and check.code in self._fixed:
            fix = ""  # the same code's fix is above; one fix per cause
        elif check.code:
            self._fixed.add(check.code)
        print(f"{check.mark} {check.text}" + (f"\n    fix: {fix}" if fix else ""), file=self.out, flush=True)

    @property
    def timeout(self) -> float:
        """How long one call may take (`[cloud] read_timeout` when shorter), MNS's too."""
        return min(self.config.cloud.read_timeout, TIMEOUT)

    @property
    def provider(self):
        if self._provider is None:
            from ..cloud.credentials import credentials_provider

            self._provider = credentials_provider(self.config.credentials)
        return self._provider

    @property
    def cloud(self):
        if self._cloud is None:
            from ..cloud import CloudClient

            cloud = self.config.cloud
            settings = replace(cloud, max_retries=0, connect_timeout=min(cloud.connect_timeout, TIMEOUT),
                               read_timeout=self.timeout)
            self._cloud = CloudClient(settings, self.provider, backoff_cap=2.0)
        return self._cloud

    def checks(self) -> list[Callable[[], Check | list[Check]]]:
        """Every check, in the order a cause comes before its effects; extend here."""
        checks = [self.startup, self.queue, self.dead_letter_queue, self.rule, self.ecs_read, self.slb_read,
                  self.start_instance, self.slb_write, self.lifecycle_hooks, self.store, self.metrics,
                  self.signing_key]
        if self.probe is not None:
            from .doctor_probe import probe

            checks.append(lambda: probe(self, self.probe))
        return checks

    def run(self) -> int:
        for check in self.checks():
            try:
                found = check()
            except ConfigError:
                raise  # a start-up check: the same exit 2 as `run` and `check-config`
            except Exception as exc:  # a check that crashed is a failed check, not a traceback
                found = Check(FAIL, f"{getattr(check, '__name__', 'probe')}: {type(exc).__name__}: {exc}")
            for line in found if isinstance(found, list) else [found]:
                self.say(line)
        counts = {mark: sum(c.mark == mark for c in self.results) for mark in (PASS, UNPROVEN, FAIL)}
        print(f"\n{counts[PASS]} passed, {counts[UNPROVEN]} not provable, {counts[FAIL]} failed", file=self.out)
        return EXIT_FAILURE if counts[FAIL] else EXIT_OK

    def failed(self, what: str, code: str, message: str, *, action: str = "", service: str = "cloud") -> Check:
        """A ✗ line for an error `code`, with the code's one fix; notes a cause later checks share."""
        from .doctor_fixes import CREDENTIAL_CODES, NETWORK_CODES, fix_for

        endpoint = "[mns] endpoint" if service == "mns" else "[cloud] region / endpoint"
        if code in NETWORK_CODES:
            self.unreachable.setdefault(service, what)
        if code in CREDENTIAL_CODES:
            self.bad_keys = self.bad_keys or what
        return Check(FAIL, f"{what}: {code}: {message}" if message else f"{what}: {code}",
                     fix_for(code, action=action, config=self.config.path, endpoint=endpoint), code)

    def blocked(self, what: str, service: str = "cloud") -> Check | None:
        """A `–` line instead of a call whose failure would only repeat an earlier cause."""
        if self.bad_keys:
            return Check(UNPROVEN, f"{what}: not tried: the AccessKey was refused ({self.bad_keys}, above)")
        if service in self.unreachable:
            return Check(UNPROVEN, f"{what}: not tried: the endpoint did not answer ({self.unreachable[service]}, above)")
        return None

    # ------------------------------------------------------------------ checks

    def startup(self) -> list[Check]:
        """The start-up checks `run` and `check-config` make (startup_checks.py)."""
        from .startup_checks import check_all

        return [Check(PASS if f.proven else UNPROVEN, f.text) for f in check_all(self.config)]

    def _queue(self, name: str, role: str) -> Check:
        from ..queue.source import MnsError, MnsQueue

        what = f"{role} {name}"
        skipped = self.blocked(what, "mns")
        if skipped:
            return skipped
        try:
            queue = MnsQueue(self.config.mns.endpoint, name, self.provider, 0, socket_timeout=self.timeout)
            visibility = queue.visibility_timeout()
        except MnsError as exc:
            message = str(exc).split(f"{exc.code}: ", 1)[-1] if exc.code else str(exc)
            return self.failed(what, exc.code or "Unknown", message, service="mns",
                               action=f"mns:GetQueueAttributes on {name}")
        return Check(PASS, f"{what}: answers (VisibilityTimeout {visibility} s)")

    def queue(self) -> Check:
        return self._queue(self.config.mns.queue, "queue")

    def dead_letter_queue(self) -> Check:
        name = self.config.mns.dead_letter_queue
        if not name:  # run accepts that: dead letters then stay in the state directory's file
            return Check(UNPROVEN, "dead-letter queue: none configured ([mns] dead_letter_queue); dead letters "
                                   "stay in the state directory's dead-letter.jsonl")
        return self._queue(name, "dead-letter queue")

    def rule(self) -> Check:
        from ..cloud import CloudError
        from ..cloud.cms import CloudMonitor

        name, queue = rule_name(self.config.mns.queue), self.config.mns.queue
        skipped = self.blocked(f"event rule {name}")
        if skipped:
            return skipped
        setup = f"run `ecs-worker setup -c {self.config.path}`"
        monitor = CloudMonitor(self.cloud)
        try:
            rule = monitor.rule(name)
            targets = monitor.targets(name) if rule else []
        except CloudError as exc:
            if denied(exc.code):  # the worker's own policy has no CloudMonitor actions: it needs none
                return Check(UNPROVEN, f"event rule {name}: not readable with these credentials ({exc.code}); "
                                       "run doctor with the administrator's keys, or grant "
                                       "cms:DescribeEventRuleList and cms:DescribeEventRuleTargetList, to check it")
            return self.failed(f"event rule {name}", exc.code, exc.message)
        if rule is None:
            return Check(FAIL, f"event rule {name}: does not exist: no ECS event reaches {queue}", setup)
        if rule.state != "ENABLED" or rule.product.lower() != PRODUCT:
            return Check(FAIL, f"event rule {name}: {rule.state} for product {rule.product!r}", setup)
        needed = set(event_names(self.plugins))
        if rule.names and (not needed or not needed <= set(rule.names)):
            missing = sorted(needed - set(rule.names)) or ["every ECS event"]
            return Check(FAIL, f"event rule {name}: does not deliver {', '.join(missing)}", setup)
        region = target_region(self.config)
        if not any(t.queue == queue and t.region == region for t in targets):
            return Check(FAIL, f"event rule {name}: does not target queue {queue} in {region}", setup)
        what = ", ".join(rule.names) if rule.names else "every ECS event"
        return Check(PASS, f"event rule {name}: enabled, {what} -> queue {queue}")

    def _read(self, api: str, action: str, **params: Any) -> tuple[dict | None, Check | None]:
        """A harmless read: its answer, or the line saying why there is none."""
        from ..cloud import CloudError

        what = f"{api.upper()} {action}"
        skipped = self.blocked(what)
        if skipped:
            return None, skipped
        try:
            return self.cloud.call(api, action, params), None
        except CloudError as exc:
            return None, self.failed(what, exc.code, exc.message, action=f"{api}:{action}")

    def ecs_read(self) -> Check:
        body, failed = self._read("ecs", "DescribeInstances", PageSize=1)
        return failed or Check(PASS, f"ECS reads: DescribeInstances answers ({body.get('TotalCount', '?')} "
                                     f"instances in {self.config.cloud.region})")

    def slb_read(self) -> Check:
        body, failed = self._read("slb", "DescribeLoadBalancers", PageSize=1)
        return failed or Check(PASS, f"SLB reads: DescribeLoadBalancers answers ({body.get('TotalCount', '?')} "
                                     "load balancers)")

    def _candidate(self) -> tuple[str | None, str, Check | None]:
        """An instance the restart plugin may act on (its tag), else any; or why none was read."""
        tag = str(self.config.plugin_sections.get("restart", {}).get("require_tag",
                                                                     "ecs-worker:auto-restart=true"))
        key, _, value = tag.partition("=")
        for params, why in (({"Tag.1.Key": key, "Tag.1.Value": value, "PageSize": 1}, f"tagged {tag}"),
                            ({"PageSize": 1}, "any instance: none carries the restart tag")):
            body, failed = self._read("ecs", "DescribeInstances", **params)
            if failed:
                return None, "", failed
            found = (body.get("Instances") or {}).get("Instance") or []
            if found:
                return found[0]["InstanceId"], why, None
        return None, "", None

    def start_instance(self) -> Check:
        from ..cloud import CloudError

        skipped = self.blocked("ecs:StartInstance")
        if skipped:
            return skipped
        instance, why, failed = self._candidate()
        if failed is not None:  # the real cause is the read: say so, not "no instance"
            return Check(UNPROVEN, f"ecs:StartInstance: not tried: DescribeInstances failed "
                                   f"({failed.code or failed.text}, above)")
        if instance is None:
            return Check(UNPROVEN, "ecs:StartInstance: no instance in the region to try DryRun on")
        try:
            self.cloud.ecs("StartInstance", InstanceId=instance, DryRun=True)
            answer = "accepted"  # a service that ignores DryRun would have started it: it was Stopped
        except CloudError as exc:
            if exc.code != "DryRunOperation" and not exc.code.startswith("IncorrectInstanceStatus"):
                check = self.failed("ecs:StartInstance", exc.code, f"DryRun on {instance}",
                                    action="ecs:StartInstance")
                return check
            answer = exc.code
        return Check(PASS, f"ecs:StartInstance: permitted (DryRun on {instance}, {why}: {answer})")

    def slb_write(self) -> Check:
        return Check(UNPROVEN, "SLB writes (RemoveVServerGroupBackendServers, SetVServerGroupAttribute): "
                               "not provable without a change (CLB has no dry run); the printed policy grants them")

    def lifecycle_hooks(self) -> list[Check]:
        """Each configured scaling group's SCALE_IN/SCALE_OUT hook: its target and timeout."""
        from .lifecycle_hooks import doctor_checks

        return doctor_checks(self)

    def store(self) -> Check:
        """The state store: reachable, writable, a sane clock and eviction policy (store_probe.py)."""
        from ..state.store_probe import probe

        ok, found, fix = probe(self.config)
        return Check(PASS if ok else FAIL, found, fix)

    def metrics(self) -> Check:
        from .live_worker import metrics_check

        return metrics_check(self.config.metrics.listen)

    def signing_key(self) -> Check:
        from ..trust.fleet_key import ADVICE, load_signer

        name = self.config.worker.signing_key_file
        if not name:
            return Check(UNPROVEN, "signing key: none ([worker] signing_key_file): fine for one worker", ADVICE)
        try:
            signer = load_signer(name)
        except ConfigError as exc:
            return Check(FAIL, f"signing key: {exc}", "run `ecs-worker setup` (it creates the file), "
                                                     "or chmod 600 it")
        return Check(PASS, f"signing key: {signer!r} from {name}")


def main(args: Any) -> int:
    from ..config import load_config
    from ..observability.logsetup import configure_logging
    from ..plugin_host.manager import load_plugins

    config = load_config(args.config)
    configure_logging("WARNING", config.logging.format)
    probe = getattr(args, "probe_wait", None) if getattr(args, "probe", False) else None
    return Doctor(config, load_plugins(config), probe=probe).run()
