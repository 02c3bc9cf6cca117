"""`ecs-worker setup`: connect an account — the queues, the CloudMonitor rule, the RAM policy.

Idempotent: it reads what exists first and changes only what differs, so a second run changes
nothing and says so. Every change goes through the `ActionGateway`, which under `--dry-run`
only records it; the exact call is printed either way.

1. the queue and the dead-letter queue, with the attributes `queue_admin.wanted` gives;
2. a CloudMonitor system-event rule for ECS — the event names the loaded plugins need (all
   ECS events when any plugin takes every event) — whose MNS target is the queue;
3. the fleet's signing key (`[worker] signing_key_file`), created 0600 when missing;
4. the RAM policy the worker needs, filled in, and the separate one-time policy this command
   needs (for the administrator who runs it).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from ..plugin_host.outcomes import EXIT_FAILURE, EXIT_OK
from ..cloud.gateway import ActionGateway
from .ram_policy import mns_location, setup_policy, worker_policy
from ..trust.fleet_key import prepare_key

# Which CloudMonitor event each specific hook receives; on_event / on_settled take every event.
HOOK_EVENTS = {"on_state_change": "Instance:StateChange",
               "on_preemptible_interruption": "Instance:PreemptibleInstanceInterruption"}
ALL_EVENT_HOOKS = {"on_event", "on_settled"}
PRODUCT = "ecs"


def rule_name(queue: str) -> str:
    return f"ecs-worker-{queue}"


def event_names(plugins: Any) -> tuple[str, ...]:
    """The event names the loaded plugins need; () means every ECS event."""
    hooks = {h for info in plugins.info() for h in info.hooks}
    if hooks & ALL_EVENT_HOOKS:
        return ()
    return tuple(sorted({HOOK_EVENTS[h] for h in hooks if h in HOOK_EVENTS}))


def target_region(config: Any) -> str:
    return mns_location(config.mns.endpoint)[1] or config.cloud.region


@dataclass
class Change:
    what: str      # "queue ecs-events"
    action: str    # "CreateQueue"
    call: str      # the call, printed
    do: Callable[[], Any]


class Setup:
    def __init__(self, config: Any, plugins: Any, *, dry_run: bool, out: TextIO = sys.stdout,
                 provider: Any = None, queues: Any = None, monitor: Any = None) -> None:
        from ..cloud.credentials import credentials_provider

        self.config, self.plugins, self.dry_run, self.out = config, plugins, dry_run, out
        # Built first: an unreadable secret file is a config error (exit 2), not a cloud failure.
        self.provider = provider or credentials_provider(config.credentials)
        self.gateway = ActionGateway(dry_run=dry_run)
        self._queues, self._monitor = queues, monitor

    # The clients are built lazily so a config error surfaces before any network call.
    @property
    def queues(self):
        if self._queues is None:
            from ..queue.admin import QueueAdmin

            self._queues = QueueAdmin(self.config.mns.endpoint, self.provider)
        return self._queues

    @property
    def monitor(self):
        if self._monitor is None:
            from ..cloud import CloudClient
            from ..cloud.cms import CloudMonitor

            self._monitor = CloudMonitor(CloudClient(self.config.cloud, self.provider))
        return self._monitor

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # ------------------------------------------------------------------ plan

    def queue_changes(self) -> list[Change]:
        from ..queue.admin import describe, wanted

        changes = []
        mns = self.config.mns
        for name, dead_letter in ((mns.queue, False), (mns.dead_letter_queue, True)):
            if not name:
                self.say("- dead-letter queue: none configured ([mns] dead_letter_queue); "
                         "dead letters go to the state directory's file only")
                continue
            want = wanted(self.config, dead_letter)
            have = self.queues.attributes(name)
            if have is None:
                changes.append(Change(f"queue {name}", "CreateQueue", f"MNS CreateQueue {name} {describe(want)}",
                                      lambda n=name, w=want: self.queues.create(n, w)))
                continue
            diff = {k: v for k, v in want.items() if have.get(k) != v}
            if not diff:
                self.say(f"✓ queue {name}: exists, {describe(want)}")
                continue
            changes.append(Change(f"queue {name}", "SetQueueAttributes",
                                  f"MNS SetQueueAttributes {name} {describe(diff)} (was "
                                  f"{describe({k: have.get(k) for k in diff})})",
                                  lambda n=name, d=diff: self.queues.set_attributes(n, d)))
        return changes

    def rule_changes(self) -> list[Change]:
        from ..cloud.cms import MnsTarget, Rule

        mns = self.config.mns
        name = rule_name(mns.queue)
        names = event_names(self.plugins)
        what = ", ".join(names) if names else "every ECS event"
        want = Rule(name, "ENABLED", PRODUCT, names, f"ECS system events for ecs-worker ({mns.queue})")
        have = self.monitor.rule(name)
        changes = []
        if have is None or (have.state, have.product.lower(), set(have.names)) != ("ENABLED", PRODUCT, set(names)):
            params = self.monitor.put_rule_params(want)
            changes.append(Change(f"rule {name}", "PutEventRule",
                                  f"CMS PutEventRule {_params(params)}",
                                  lambda: self.monitor.put_rule(want)))
        else:
            self.say(f"✓ rule {name}: enabled, {what}")
        region = target_region(self.config)
        targets = self.monitor.targets(name) if have is not None else []
        if any(t.queue == mns.queue and t.region == region for t in targets):
            self.say(f"✓ rule {name}: targets queue {mns.queue} ({region})")
        else:
            used = {t.id for t in targets}
            target_id = next(str(n) for n in range(1, len(used) + 2) if str(n) not in used)
            target = MnsTarget(target_id, region, mns.queue)
            params = self.monitor.put_target_params(name, target)
            changes.append(Change(f"rule {name} target", "PutEventRuleTargets",
                                  f"CMS PutEventRuleTargets {_params(params)}",
                                  lambda: self.monitor.put_target(name, target)))
        return changes

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        from ..cloud import CloudError
        from ..queue.source import MnsError

        cfg = self.config
        self.say(f"setup: queues at {cfg.mns.endpoint}, CloudMonitor in {cfg.cloud.region}"
                 + (" (dry run: nothing will change)" if self.dry_run else ""))
        try:
            queues = self.queue_changes()
            self._apply(queues)  # the rule's target must name an existing queue: queues first
            rule = self.rule_changes()
            self._apply(rule)
        except (CloudError, MnsError, ValueError) as exc:
            self.say(f"✗ {exc}")
            self.say("  (is the administrator's policy below attached to these credentials?)")
            self._policies()
            return EXIT_FAILURE
        try:
            self.say(prepare_key(cfg.worker.signing_key_file, self.dry_run))
        except OSError as exc:
            self.say(f"✗ signing key: cannot create {exc.filename}: {exc.strerror}")
            return EXIT_FAILURE
        n = len(queues) + len(rule)
        if not n:
            self.say("nothing changed: the queues and the rule were already set up")
        elif self.dry_run:
            self.say(f"dry run: {n} call(s) would be made; run without --dry-run to make them")
        else:
            self.say(f"done: {n} change(s) made; run `ecs-worker doctor -c {cfg.path}` to check the chain")
        self._policies()
        return EXIT_OK

    def _apply(self, changes: list[Change]) -> None:
        for c in changes:
            self.say(f"{'would call' if self.dry_run else 'call'}: {c.call}")
            self.gateway.perform("setup", c.action, c.what, c.do)
            if not self.dry_run:
                self.say(f"+ {c.what}: {'created' if c.action == 'CreateQueue' else 'set'}")

    def _policies(self) -> None:
        cfg = self.config
        account, region = mns_location(cfg.mns.endpoint)
        region = region or cfg.cloud.region
        self.say("\nRAM policy for the worker (attach it to the worker's RAM user, or the instance's RAM role):")
        self.say(json.dumps(worker_policy(cfg.mns.queue, cfg.mns.dead_letter_queue, region, account or "*"),
                            indent=2))
        self.say("\n`ecs-worker setup` itself needs a separate one-time policy, for the administrator who runs "
                 "it (the worker does not need it):")
        self.say(json.dumps(setup_policy(cfg.mns.queue, cfg.mns.dead_letter_queue, region, account or "*"),
                            indent=2))


def _params(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def main(args: Any) -> int:
    from ..config import ConfigError, load_config
    from ..observability.logsetup import configure_logging
    from ..plugin_host.manager import load_plugins

    config = load_config(args.config)
    if not config.mns.endpoint:
        raise ConfigError(f"{config.path}: [mns] endpoint: required for `setup`")
    configure_logging("WARNING", config.logging.format)
    plugins = load_plugins(config)
    return Setup(config, plugins, dry_run=args.dry_run).run()
