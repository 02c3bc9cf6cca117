"""`ecs-worker doctor`: prove the chain without changing anything, one line per check.

✓ passes, ✗ fails (with its code's one fix, doctor_fixes.py), – not provable here (a change
would be needed, or nothing is configured): reported, not a failure. First the start-up checks
`run` and `check-config` make (startup_checks.py; a failure there is a config error, exit 2);
then each call, the real cause first. Exit 1 when any line is ✗, else 0.

Which permissions are checked comes from the API registry (`cloud/apis.py`): every API the
worker and its enabled plugins call (`doctor_permissions.py`). Reads are called; changes are
proven with `DryRun=true` where the API has it (ECS StartInstance/RebootInstance: RAM is checked
before the instance's status, so `DryRunOperation` or `IncorrectInstanceStatus` proves the
permission, help/en/ecs/developer-reference/api-ecs-2014-05-26-startinstance; ALB/NLB
server-group changes); MNS deletes and visibility changes with a receipt handle of no message.
What cannot be proven without a change (CLB writes, MNS receive and send) is a `–` line saying so.
"""
from __future__ import annotations

import socket
import sys
from dataclasses import replace
from typing import Any, Callable, TextIO

from ..config import ConfigError
from .doctor_lines import DENIED, FAIL, PASS, UNPROVEN, Check, denied  # noqa: F401 - DENIED for callers
from .doctor_permissions import Permissions
from ..exit_codes import EXIT_FAILURE, EXIT_OK
from .setup import PRODUCT, event_names, rule_name, target_region

TIMEOUT = 3.0  # seconds to connect, and to answer: an unreachable endpoint is reported, not retried


class Doctor:
    def __init__(self, config: Any, plugins: Any, out: TextIO = sys.stdout, probe: float | None = None,
                 credentials: Any = None) -> None:
        """`probe`: also run `--probe`, watching that many seconds for the test event;
        `credentials`: builds the provider when a check first needs it (app.App.credentials)."""
        self.config, self.plugins, self.out, self.probe = config, plugins, out, probe
        self._credentials = credentials
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
            if self._credentials is None:  # a test's Doctor: build them as app would
                from ..cloud.credentials import credentials_provider

                self._credentials = lambda: credentials_provider(self.config.credentials)
            self._provider = self._credentials()
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
        checks = [self.startup, self.queue, self.dead_letter_queue, self.rule, self.permissions,
                  self.lifecycle_hooks, self.store, self.metrics, self.signing_key]
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
        from ..cloud.apis import mns_ram
        from ..queue.source import MnsError, MnsQueue

        what = f"{role} {name}"
        skipped = self.blocked(what, "mns")
        if skipped:
            return skipped
        try:
            queue = MnsQueue(self.config.mns.endpoint, name, self.provider, 0, ram=mns_ram,
                             socket_timeout=self.timeout)
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
        if not self.plugins.rule_needed():
            return Check(PASS, f"event rule {name}: not needed (the plugins take only Auto Scaling "
                               "lifecycle-hook notifications, which ESS sends to the queue itself)")
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
        from ..cloud.apis import ram_text

        what = f"{api.upper()} {action}"
        skipped = self.blocked(what)
        if skipped:
            return None, skipped
        try:
            return self.cloud.call(api, action, params), None
        except CloudError as exc:
            return None, self.failed(what, exc.code, exc.message, action=ram_text(api, action))

    def permissions(self) -> list[Check]:
        """Every API the worker and its enabled plugins call (the registry), proven where it can be."""
        return Permissions(self).checks()

    def start_instance(self) -> Check:
        from ..cloud.apis import api

        return Permissions(self).prove_change(api("ecs", "StartInstance"))

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
