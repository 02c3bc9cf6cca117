"""`ecs-worker doctor`: prove the chain without changing anything, one line per check.

✓ passes, ✗ fails (with the fix), – not checked: cannot be proven without a change, or not
configured (not a failure).
Exit 0 only when every check passes, 1 otherwise (2 for a bad config, from the CLI).

StartInstance is proven with ECS's `DryRun=true`: RAM is checked before the instance's
status, so any answer but `Forbidden.RAM` (e.g. `DryRunOperation`, `IncorrectInstanceStatus`)
proves the permission (help/en/ecs/developer-reference/api-ecs-2014-05-26-startinstance).
CLB has no dry run, so SLB writes cannot be proven without a change.
"""
from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from ..plugin_host.outcomes import EXIT_FAILURE, EXIT_OK
from .setup import PRODUCT, event_names, rule_name, target_region

PASS, FAIL, UNPROVEN = "✓", "✗", "–"
DENIED = ("Forbidden.RAM", "Forbidden", "AccessDenied", "NoPermission", "403")


def denied(code: str) -> bool:
    return code in DENIED or code.startswith(("Forbidden", "NoPermission"))


@dataclass
class Check:
    mark: str
    text: str
    fix: str = ""


class Doctor:
    def __init__(self, config: Any, plugins: Any, out: TextIO = sys.stdout) -> None:
        self.config, self.plugins, self.out = config, plugins, out
        from ..cloud.credentials import credentials_provider

        self.results: list[Check] = []
        # Built first: an unreadable secret file is a config error (exit 2), not a failed check.
        self._provider = credentials_provider(config.credentials)
        self._cloud = None

    def say(self, check: Check) -> None:
        self.results.append(check)
        print(f"{check.mark} {check.text}" + (f"\n    fix: {check.fix}" if check.fix else ""),
              file=self.out, flush=True)

    @property
    def provider(self):
        return self._provider

    @property
    def cloud(self):
        if self._cloud is None:
            from ..cloud import CloudClient

            self._cloud = CloudClient(self.config.cloud, self.provider, backoff_cap=2.0)
        return self._cloud

    def run(self) -> int:
        checks: list[Callable[[], Check]] = [self.credentials, self.queue, self.dead_letter_queue, self.rule,
                                             self.ecs_read, self.slb_read, self.start_instance, self.slb_write,
                                             self.store, self.metrics, self.signing_key]
        for check in checks:
            try:
                self.say(check())
            except Exception as exc:  # a check that crashed is a failed check, not a traceback
                self.say(Check(FAIL, f"{check.__name__}: {type(exc).__name__}: {exc}"))
        failed = [c for c in self.results if c.mark == FAIL]
        print(f"\n{len(failed)} check(s) failed" if failed else "\nall checks passed", file=self.out)
        return EXIT_FAILURE if failed else EXIT_OK

    # ------------------------------------------------------------------ checks

    def credentials(self) -> Check:
        try:
            self.provider.get_credentials()
        except Exception as exc:
            return Check(FAIL, f"credentials: {exc}",
                         "set [credentials] access_key_id + access_key_secret_file, or give the host a RAM role "
                         "(ECS) or ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET")
        describe = getattr(self.provider, "describe", lambda: type(self.provider).__name__)
        return Check(PASS, f"credentials: {describe()}")

    def _queue(self, name: str, role: str) -> Check:
        from ..queue.source import MnsError, MnsQueue

        try:
            visibility = MnsQueue(self.config.mns.endpoint, name, self.provider, 0).visibility_timeout()
        except MnsError as exc:
            fix = {"QueueNotExist": f"run `ecs-worker setup -c {self.config.path}` (it creates the queue)",
                   "AccessDenied": f"grant mns:GetQueueAttributes on {name} (`setup` prints the policy)"}
            return Check(FAIL, f"{role} {name}: {exc}",
                         fix.get(exc.code, "check [mns] endpoint (https://<account-id>.mns.<region>.aliyuncs.com) "
                                           "and the network"))
        return Check(PASS, f"{role} {name}: answers (VisibilityTimeout {visibility} s)")

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
            return Check(FAIL, f"event rule {name}: {exc}", "check [cloud] region/endpoint and the network")
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
        from ..cloud import CloudError

        try:
            return self.cloud.call(api, action, params), None
        except CloudError as exc:
            fix = f"grant {api}:{action}" if denied(exc.code) else \
                "check [cloud] region/endpoint and the network"
            return None, Check(FAIL, f"{api.upper()} {action}: {exc.code}: {exc.message}", fix)

    def ecs_read(self) -> Check:
        body, failed = self._read("ecs", "DescribeInstances", PageSize=1)
        return failed or Check(PASS, f"ECS reads: DescribeInstances answers ({body.get('TotalCount', '?')} "
                                     f"instances in {self.config.cloud.region})")

    def slb_read(self) -> Check:
        body, failed = self._read("slb", "DescribeLoadBalancers", PageSize=1)
        return failed or Check(PASS, f"SLB reads: DescribeLoadBalancers answers ({body.get('TotalCount', '?')} "
                                     "load balancers)")

    def _candidate(self) -> tuple[str | None, str]:
        """An instance the restart plugin may act on (its tag), else any."""
        tag = str(self.config.plugin_sections.get("restart", {}).get("require_tag",
                                                                     "ecs-worker:auto-restart=true"))
        key, _, value = tag.partition("=")
        for params, why in (({"Tag.1.Key": key, "Tag.1.Value": value, "PageSize": 1}, f"tagged {tag}"),
                            ({"PageSize": 1}, "any instance: none carries the restart tag")):
            body, _ = self._read("ecs", "DescribeInstances", **params)
            found = ((body or {}).get("Instances") or {}).get("Instance") or []
            if found:
                return found[0]["InstanceId"], why
        return None, ""

    def start_instance(self) -> Check:
        from ..cloud import CloudError

        instance, why = self._candidate()
        if instance is None:
            return Check(UNPROVEN, "ecs:StartInstance: no instance in the region to try DryRun on")
        try:
            self.cloud.ecs("StartInstance", InstanceId=instance, DryRun=True)
            answer = "accepted"  # a service that ignores DryRun would have started it: it was Stopped
        except CloudError as exc:
            if denied(exc.code):
                return Check(FAIL, f"ecs:StartInstance: {exc.code} (DryRun on {instance})",
                             "grant ecs:StartInstance to the worker (`setup` prints the policy)")
            answer = exc.code
        return Check(PASS, f"ecs:StartInstance: permitted (DryRun on {instance}, {why}: {answer})")

    def slb_write(self) -> Check:
        return Check(UNPROVEN, "SLB writes (RemoveVServerGroupBackendServers, SetVServerGroupAttribute): "
                               "not provable without a change (CLB has no dry run); the printed policy grants them")

    def store(self) -> Check:
        from ..state.store_probe import probe

        ok, found, fix = probe(self.config)
        return Check(PASS if ok else FAIL, found, fix)

    def metrics(self) -> Check:
        from ..observability.health import parse_listen

        listen = self.config.metrics.listen
        if not listen:
            return Check(PASS, "metrics: off ([metrics] listen is empty)")
        host, port = parse_listen(listen)
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, port))
        except OSError as exc:
            running = _healthz(host, port)
            if running is not None:  # doctor on a live host: the address is the running worker's
                return Check(PASS, f"metrics: {listen} is served by a running ecs-worker (healthz: {running})")
            return Check(FAIL, f"metrics: cannot listen on {listen}: {exc.strerror or exc}",
                         "stop what holds that address or change [metrics] listen")
        return Check(PASS, f"metrics: {listen} is free")


    def signing_key(self) -> Check:
        from ..config import ConfigError
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


def _healthz(host: str, port: int) -> str | None:
    """The status a running worker's /healthz reports on that address, or None if it is not one."""
    import json
    import urllib.error
    import urllib.request

    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as r:
            body = json.loads(r.read(4096))
    except urllib.error.HTTPError as exc:  # 503: a worker whose loop is stalled
        try:
            body = json.loads(exc.read(4096))
        except ValueError:
            return None
    except (OSError, ValueError):
        return None
    return str(body.get("status")) if isinstance(body, dict) and "seconds_since_poll" in body else None


def main(args: Any) -> int:
    from ..config import ConfigError, load_config
    from ..observability.logsetup import configure_logging
    from ..plugin_host.manager import load_plugins

    config = load_config(args.config)
    if not config.mns.endpoint:
        raise ConfigError(f"{config.path}: [mns] endpoint: required for `doctor`")
    configure_logging("WARNING", config.logging.format)
    return Doctor(config, load_plugins(config)).run()
