"""The RAM policies come from the API registry (worker/cloud/apis.py): the shipped file, the table
in docs/connect.md and the grants themselves, under both readings of MNS's RAM action names."""
from __future__ import annotations

from ecs_worker.operations.ram_policy import worker_policy


def test_the_shipped_policy_file_is_what_the_registry_generates():
    """deploy/ram-policy.json is generated (python -m ecs_worker.operations.ram_policy --write), never hand-edited."""
    from ecs_worker.operations.ram_policy import SHIPPED, main, shipped_text

    assert SHIPPED.read_text(encoding="utf-8") == shipped_text()
    assert main(["--check"]) == 0


def test_connect_docs_permissions_table_is_the_registry():
    from pathlib import Path

    from ecs_worker.operations.ram_policy import policy_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "connect.md").read_text(encoding="utf-8")
    assert policy_table() in doc, "regenerate it: python -m ecs_worker.operations.ram_policy --table"


def test_the_policy_grants_every_reading_of_every_api_and_only_those():
    """Every RAM action of every non-admin, non-opt-in registry entry, and nothing else."""
    from ecs_worker.cloud.apis import APIS, SETUP

    doc = worker_policy()
    granted = [a for s in doc["Statement"] for a in s["Action"]]
    wanted = {r for a in APIS if set(a.users) - {SETUP} and not a.opt_in for r in a.ram}
    assert set(granted) == wanted and len(granted) == len(set(granted))  # each once
    assert {"mns:ReceiveMessage", "mns:BatchReceiveMessage", "mns:DeleteMessage", "mns:BatchDeleteMessage"} <= wanted
    assert "ecs:RedeployInstance" not in wanted  # opt-in: README says when to add it
