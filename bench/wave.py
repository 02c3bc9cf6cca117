"""The wave: a burst of spot interruptions over many vserver groups, SLB throttled; the
worker's time and SLB calls against the ideal (the fewest calls, at the allowed rate),
and the naive one-call-per-instance loop."""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

from kit import CRED, Emulator, base_state, emulator, event_body, plugins_toml, wait_until, worker, worker_config


def wave_state(instances: int, groups: int, lbs: int, rps: float, busy: float = 0.0) -> tuple[dict, list[str]]:
    spot = [f"i-spot{n:013d}" for n in range(instances)]
    steady = [f"i-web{n:014d}" for n in range(groups)]
    per_lb = groups // lbs
    load_balancers = []
    for lb in range(lbs):
        vgroups = []
        for g in range(lb * per_lb, (lb + 1) * per_lb):
            members = spot[g::groups] + [steady[g]]
            vgroups.append({"id": f"rsp-bench{g:04d}",
                            "backend_servers": [{"server_id": s, "port": 80} for s in members]})
        load_balancers.append({"id": f"lb-bench{lb:04d}", "vserver_groups": vgroups})
    inst = [{"id": s, "status": "Running", "spot": True} for s in spot]
    inst += [{"id": s, "status": "Running"} for s in steady]
    slb = {"throttle_rps": rps}
    if busy:  # CLB's "busy with another change" answer (449) to a share of calls
        slb.update(error_rate=busy, error_code="SystemBusy")
    state = base_state(instances=inst, load_balancers=load_balancers, faults={"slb": slb})
    return state, spot


def spot_left(emu: Emulator) -> int:
    return sum(1 for lb in emu.state()["load_balancers"] for g in lb["vserver_groups"]
               for s in g["backend_servers"] if s["server_id"].startswith("i-spot"))


def wave_worker(instances: int, groups: int, lbs: int, rps: float, busy: float = 0.0) -> tuple[float, int]:
    state, spot = wave_state(instances, groups, lbs, rps, busy)
    with emulator(state) as emu, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = worker_config(emu, tmp, plugins_toml(disabled=("restart", "webhook", "hello")),
                               slb_rps=rps)
        with worker(config, tmp / "worker.log"):
            before = emu.state()["calls"]
            start = time.monotonic()
            emu.fill([event_body(i, "Instance:PreemptibleInstanceInterruption", s,
                                 {"instanceId": s, "action": "delete"}) for i, s in enumerate(spot)])
            end = wait_until(lambda: spot_left(emu) == 0, timeout=600, every=0.1)
            calls = emu.state()["calls"]
        slb_calls = sum(v - before.get(k, 0) for k, v in calls.items() if k.startswith("slb:"))
        return end - start, slb_calls


def wave_naive(instances: int, groups: int, lbs: int, rps: float) -> float:
    """One RemoveVServerGroupBackendServers per instance, serially, retrying on throttling,
    with the group known up front (the naive approach's best case: no discovery)."""
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkslb.request.v20140515.RemoveVServerGroupBackendServersRequest import (
        RemoveVServerGroupBackendServersRequest)

    state, spot = wave_state(instances, groups, lbs, rps)
    with emulator(state) as emu:
        client = AcsClient(CRED["access_key_id"], CRED["access_key_secret"], "cn-hangzhou")
        start = time.monotonic()
        for i, s in enumerate(spot):
            req = RemoveVServerGroupBackendServersRequest()
            req.set_endpoint(emu.endpoint)
            req.set_protocol_type("http")
            req.set_VServerGroupId(f"rsp-bench{i % groups:04d}")
            req.set_BackendServers(json.dumps([{"ServerId": s, "Port": "80", "Type": "ecs"}]))
            while True:
                try:
                    client.do_action_with_exception(req)
                    break
                except ServerException as exc:
                    if not exc.get_error_code().startswith("Throttling"):
                        raise
                    time.sleep(1 / rps)
        return time.monotonic() - start


def ideal_wave_calls(instances: int, groups: int, lbs: int) -> int:
    """The fewest SLB calls that can do the job: list the load balancers (one page), list
    each one's vserver groups, read each group's members, then one Remove per group per
    20 servers."""
    per_group = math.ceil(instances / groups)
    return 1 + lbs + groups + groups * math.ceil(per_group / 20)


def busy_ideal_seconds(ideal_calls: int, busy: float, rps: float) -> float:
    """With a share `busy` of calls answered SystemBusy, each useful call takes 1 / (1 - busy)
    tries on average, all within the rate: ideal calls / (1 - busy) / rate."""
    return ideal_calls / (1 - busy) / rps
