"""The RAM policies, generated from the API registry (`cloud/apis.py`): the worker's own, and the
one-time one `setup` needs.

`deploy/ram-policy.json` is the worker's policy for the default queue names (`ecs-events` /
`ecs-events-dlq`) in any region and account; a test fails when it differs from what the registry
generates, and `python -m ecs_worker.operations.ram_policy --write` regenerates it. `setup` prints the same
document with the configured queue names, region and account put in.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ..cloud.apis import ANY, SETUP, APIS, Api, used_by

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "ram-policy.json"
DEFAULT_QUEUE, DEFAULT_DLQ = "ecs-events", "ecs-events-dlq"


def _worker_users() -> set[str]:
    """Everyone but the administrator: the consume loop and every built-in plugin."""
    return {u for a in APIS for u in a.users} - {SETUP}


def _document(apis: list[Api], queue: str, dlq: str, region: str, account: str) -> dict:
    """One Allow statement per resource set, in registry order; RAM actions once each."""
    statements: dict[tuple[str, ...], list[str]] = {}
    for a in apis:
        actions = statements.setdefault(a.resources, [])
        actions += [r for r in a.ram if r not in actions]
    out = []
    for resources, actions in statements.items():
        filled = [_resource(r, queue, dlq, region, account) for r in resources]
        filled = [r for r in dict.fromkeys(filled) if r]
        if filled:  # the dead-letter queue's statement, with none configured, goes
            out.append({"Effect": "Allow", "Action": actions, "Resource": filled})
    return {"Version": "1", "Statement": out}


def _resource(template: str, queue: str, dlq: str, region: str, account: str) -> str:
    if template == ANY[0]:
        return template
    if "{dlq}" in template and not dlq:
        return ""
    return f"acs:mns:{region}:{account}:" + template.format(queue=queue, dlq=dlq)


def worker_policy(queue: str = DEFAULT_QUEUE, dlq: str = DEFAULT_DLQ, region: str = "*",
                  account: str = "*") -> dict:
    """The worker's policy for these queue names (an empty `dlq`: no dead-letter queue)."""
    return _document(used_by(_worker_users()), queue, dlq, region, account)


def setup_policy(queue: str, dlq: str, region: str = "*", account: str = "*") -> dict:
    """The separate, one-time policy for whoever runs `ecs-worker setup` (and `doctor`)."""
    return _document(used_by({SETUP}), queue, dlq, region, account)


def policy_table() -> str:
    """The worker's permissions as docs/connect.md shows them (a test keeps the doc equal)."""
    rows = ["| Action | Who | What the worker does with it |", "| --- | --- | --- |"]
    for a in used_by(_worker_users(), shipped_only=False):
        who = ", ".join(u for u in a.users if u != SETUP)
        note = f" (only with {a.opt_in})" if a.opt_in else ""
        rows.append(f"| {', '.join(f'`{r}`' for r in a.ram)} | {who} | {a.why}{note} |")
    return "\n".join(rows) + "\n"


def shipped_text() -> str:
    return json.dumps(worker_policy(), indent=2) + "\n"


def mns_location(endpoint: str) -> tuple[str | None, str | None]:
    """(account id, region) from `https://<account>.mns.<region>[-internal[-vpc]].aliyuncs.com`."""
    m = re.match(r"https?://(\d+)\.mns\.([a-z0-9-]+?)(?:-internal(?:-vpc)?)?\.aliyuncs\.com", endpoint or "")
    return (m.group(1), m.group(2)) if m else (None, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecs_worker.operations.ram_policy",
                                     description="Print the worker's RAM policy, generated from the API "
                                                 "registry (worker/cloud/apis.py), or write/check "
                                                 "deploy/ram-policy.json.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write {SHIPPED}")
    group.add_argument("--check", action="store_true", help="exit 1 when the file differs from the registry")
    group.add_argument("--table", action="store_true", help="print the permissions table of docs/connect.md")
    args = parser.parse_args(argv)
    text = shipped_text()
    if args.write:
        SHIPPED.write_text(text, encoding="utf-8")
        print(f"wrote {SHIPPED}")
    elif args.check:
        same = SHIPPED.is_file() and SHIPPED.read_text(encoding="utf-8") == text
        print(f"{SHIPPED}: {'up to date' if same else 'differs from the registry: run with --write'}")
        return 0 if same else 1
    elif args.table:
        sys.stdout.write(policy_table())
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
