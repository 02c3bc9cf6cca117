"""A spot notice is a claim, checked against ECS (issue 17, item 2), in a real worker: the
`slb` plugin takes out only instances ECS says are spot instances, reading a wave's
instances in one DescribeInstances call."""
from __future__ import annotations

import pytest

from ecs_worker.testing import body, interruption, run_emulator
from runner_kit import DLQ, QUEUE, Worker, connection_toml, depth, wait_until

pytestmark = pytest.mark.slow
KEY = {"access_key_id": "LTAIspottest001", "access_key_secret": "spot-test-secret-001"}
SPOTS = [f"i-spot{n:02d}" for n in range(12)]


def world() -> dict:
    servers = [{"server_id": i, "port": 80} for i in [*SPOTS, "i-ondemand", "i-gone"]]
    return {"region": "cn-hangzhou", "account_id": "1690000000000000", "credentials": [KEY],
            "queues": [{"name": QUEUE, "visibility_timeout": 5}, {"name": DLQ}],
            "instances": [{"id": "i-ondemand", "status": "Running"},  # pay-as-you-go: SpotStrategy NoSpot
                          *({"id": i, "status": "Running", "spot": True} for i in SPOTS)],
            "load_balancers": [{"id": "lb-1", "vserver_groups": [{"id": "rsp-web80", "backend_servers": servers}]}]}


def config(tmp_path, emu):
    path = tmp_path / "worker.toml"
    path.write_text(connection_toml(emu, KEY["access_key_id"], KEY["access_key_secret"], None) + f"""[worker]
state_dir = "{tmp_path / 'state'}"
[plugins]
disabled = ["hello", "restart", "maintenance", "webhook"]
[plugins.slb]
coalesce_ms = 500
""")
    return path


def members(emu) -> set[str]:
    return {b["server_id"] for b in emu.state()["load_balancers"][0]["vserver_groups"][0]["backend_servers"]}


def test_only_instances_ecs_calls_spot_leave_their_groups(tmp_path):
    with run_emulator(world()) as emu:
        for iid in [*SPOTS, "i-ondemand", "i-gone"]:
            emu.send(QUEUE, body(interruption(iid)))
        worker = Worker(config(tmp_path, emu))
        try:
            wait_until(lambda: sum(depth(emu).values()) == 0, 30, message="every notice settled")
        finally:
            worker.finish(30)
        assert members(emu) == {"i-ondemand", "i-gone"}  # the spot ones out; the others stay
        out = worker.output()
        assert "not removing i-ondemand from its load balancers: it is not a spot instance (SpotStrategy NoSpot)" in out
        assert "not removing i-gone from its load balancers: ECS knows no such instance" in out
        assert "-> ignored (slb: not removing i-ondemand from its load balancers: it is not a spot" in out
        # 14 notices in at most a few reads (one per coalesced batch), never one per notice.
        assert emu.state()["calls"]["ecs:DescribeInstances"] <= 3
