"""One contract, two stores: the SQLite store and the Redis store (a real server on
127.0.0.1) answer every case here the same way. Two stores built on one database stand in
for two workers."""
from __future__ import annotations

import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ecs_worker.state.store import Store
from ecs_worker.state.store_sqlite_shared import judge
from ecs_worker.state.store_types import Slot
from redis_kit import fleet_name


def _redis_pair(server, tmp_path, **kw):
    import redis

    from ecs_worker.state.store_redis import RedisStore

    fleet = fleet_name()
    return [RedisStore(redis.Redis.from_url(server.url), fleet, tmp_path / name, **kw) for name in ("a", "b")]


@pytest.fixture(params=["sqlite", "redis"])
def pair(request, tmp_path):
    """Two workers' views of one store."""
    if request.param == "sqlite":
        stores = [Store(tmp_path / "shared", dedupe_ttl=60), Store(tmp_path / "shared", dedupe_ttl=60)]
    else:
        stores = _redis_pair(request.getfixturevalue("redis_server"), tmp_path, dedupe_ttl=60)
    yield stores
    for s in stores:
        s.close()


def test_settled_keys_are_seen_by_the_other_worker_and_forget_attempts(pair):
    a, b = pair
    assert a.failed("k1", {"slb": None}) == 1
    a.mark_settled_many(["k1", "k2"])
    found = b.take(["k1", "k2", "k3"], max_attempts=5)
    assert [t.settled for t in found] == [True, True, False]
    assert found[2].made == 0 and found[2].resume is None


def test_attempts_resume_lists_and_deferrals_are_shared(pair):
    a, b = pair
    assert a.failed("k", {"slb": 1700000000.5, "restart": None}) == 1
    assert b.failed("k", {"slb": None}) == 2
    b.deferred("k", {"maintenance": 1700000001.0}, attempts=4)  # a re-sent copy's count raises it
    got = a.take(["k"], max_attempts=5)[0]
    assert (got.made, got.exhausted, got.resume) == (4, False, {"maintenance": 1700000001.0})
    a.failed("k", None)
    got = b.take(["k"], max_attempts=5)[0]
    assert got.made == 5 and got.exhausted and got.resume is None


def test_crash_suspects_and_charges_are_shared(pair):
    a, b = pair
    a.crashed(["alone"], ["alone", "beside"])
    alone, beside = b.take(["alone", "beside"], max_attempts=2)
    assert (alone.made, alone.suspect, beside.made, beside.suspect) == (1, True, 0, True)
    b.failed("beside", None)  # finishing once clears the mark
    assert not a.take(["beside"], max_attempts=2)[0].suspect


def test_a_running_message_is_claimed_so_a_copy_elsewhere_waits(pair):
    a, b = pair
    assert not a.take(["k"], 5, owners=["msg-1"], hold=30)[0].busy
    assert a.take(["k"], 5, owners=["msg-1"], hold=30)[0].busy is False  # its own claim
    assert b.take(["k"], 5, owners=["msg-2"], hold=30)[0].busy  # another copy: wait
    a.deferred("k", {"x": None}, owner="msg-1")  # the claim ends with the attempt
    assert not b.take(["k"], 5, owners=["msg-2"], hold=30)[0].busy
    b.mark_settled_many(["k"])
    assert a.take(["k"], 5, owners=["msg-3"], hold=30)[0].settled


def test_a_claim_ends_with_its_owners_run_and_only_by_its_owner(pair):
    """Whatever ends a run unsettled ends its claim (a copy then runs at once, not after
    the claim lapses); a worker never ends a claim another copy holds."""
    a, b = pair
    keys = ["given-back", "failed", "deferred"]
    a.take(keys, 5, owners=["m1", "m2", "m3"], hold=30)
    b.unclaim([("given-back", "x1")])  # not its claim: nothing ends
    b.failed("failed", None, owner="x2")
    b.deferred("deferred", {}, owner="x3")
    assert [t.busy for t in b.take(keys, 5, owners=["x1", "x2", "x3"], hold=30)] == [True, True, True]
    a.unclaim([("given-back", "m1")])
    a.failed("failed", None, owner="m2")
    a.deferred("deferred", {}, owner="m3")
    assert [t.busy for t in b.take(keys, 5, owners=["x1", "x2", "x3"], hold=30)] == [False, False, False]
    a.unclaim([("given-back", "m1")])  # now b's: a's old message id ends nothing
    assert a.take(["given-back"], 5, owners=["m9"], hold=30)[0].busy


def test_a_suspect_that_crashed_its_quarantine_stays_one_and_is_charged(pair):
    a, b = pair
    a.crashed([], ["poison"])  # nobody is charged when a worker dies
    assert (b.take(["poison"], 5)[0].made, b.take(["poison"], 5)[0].suspect) == (0, True)
    assert b.failed("poison", None, crashed=True) == 1  # its quarantine process died
    got = a.take(["poison"], 5)[0]
    assert (got.made, got.suspect) == (1, True)
    a.failed("poison", None)  # finished in quarantine, even failing: no longer a suspect
    assert not b.take(["poison"], 5)[0].suspect


def test_only_the_keys_with_owners_are_claimed(pair):
    """Admission looks a batch up by key and by message id in one step; only the keys are
    claimed (owners name the first len(owners) keys)."""
    a, b = pair
    a.mark_settled_many(["mns:m-resent"])
    got = a.take(["k1", "k2", "mns:m1", "mns:m-resent"], 5, owners=["m1", "m2"], hold=30)
    assert [(t.settled, t.busy) for t in got] == [(False, False), (False, False), (False, False), (True, False)]
    again = b.take(["k1", "k2", "mns:m1", "mns:m2"], 5, owners=["x1", "x2", "x3", "x4"], hold=30)
    assert [t.busy for t in again] == [True, True, False, False]  # the looked-up ids were not claimed


def test_a_forked_child_uses_the_store_through_its_own_connection(pair):
    """A quarantine child (`quarantine.py`) gets `forked()`: a connection (a Redis client and
    pool) of its own, none of the parent's, on the same shared data."""
    import os

    a, _ = pair
    a.put_state("before", 1, ttl=60)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            child = a.forked()
            own = getattr(child, "client", None) is not getattr(a, "client", None) or \
                getattr(child, "_db", None) is not getattr(a, "_db", None)
            pool = getattr(getattr(child, "client", None), "connection_pool", None)
            fresh = pool is None or pool is not a.client.connection_pool
            child.put_state("from-child", child.get_state("before") + 1, ttl=60)
            child.failed("k-child", None)
            os.write(write, b"ok" if own and fresh else b"shared")
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    said = os.read(read, 16)
    os.close(read)
    assert os.waitpid(pid, 0)[1] == 0 and said == b"ok"
    assert a.get_state("from-child") == 2 and a.take(["k-child"], 5)[0].made == 1
    a.put_state("after", 3, ttl=60)  # the parent's own connection still answers in turn
    assert a.get_state("after") == 3


def test_a_claim_lapses_by_itself_and_a_crash_ends_it(pair):
    a, b = pair
    a.take(["lapse", "crash"], 5, owners=["m1", "m2"], hold=0.3)
    assert [t.busy for t in b.take(["lapse", "crash"], 5, owners=["x1", "x2"], hold=0.3)] == [True, True]
    a.crashed([], ["crash"])
    time.sleep(0.4)
    assert [t.busy for t in b.take(["lapse", "crash"], 5, owners=["x1", "x2"], hold=30)] == [False, False]


def test_budgets_are_all_or_none_and_shared(pair):
    a, b = pair
    hour, minute = Slot("restart:i-1", 2, 3600), Slot("restart:*", 3, 60)
    assert a.take_budgets([hour, minute], "t1").blocked is None
    assert b.take_budgets([hour, minute], "t2").blocked is None
    refused = a.take_budgets([hour, minute], "t3")
    assert refused.blocked == 0 and 3590 < refused.wait <= 3600
    # The refusal took nothing from the other budget: one more fits there.
    assert b.take_budgets([Slot("restart:i-2", 2, 3600), minute], "t4").blocked is None
    full = b.take_budgets([Slot("restart:i-3", 2, 3600), minute], "t5")
    assert full.blocked == 1 and 59 < full.wait <= 60
    a.give_back([hour.key, minute.key], "t2")  # t2's restart did not happen
    assert b.take_budgets([hour, minute], "t6").blocked is None


def test_a_budget_window_slides_by_the_store_clock(pair):
    a, b = pair
    slot = Slot("tiny", 1, 0.3)
    assert a.take_budgets([slot], "t1").blocked is None
    refused = b.take_budgets([slot], "t2")
    assert refused.blocked == 0 and 0 < refused.wait <= 0.3
    time.sleep(refused.wait + 0.05)
    assert b.take_budgets([slot], "t3").blocked is None


def test_budgets_hold_under_concurrent_takes(pair):
    a, b = pair
    granted = []

    def worker(store, n):
        for i in range(10):
            if store.take_budgets([Slot("race", 7, 60)], f"{n}-{i}").blocked is None:
                granted.append(1)

    threads = [threading.Thread(target=worker, args=(s, n)) for n, s in enumerate([a, b, a, b])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(granted) == 7


def test_plugin_state_is_shared_and_expires(pair):
    a, b = pair
    a.put_state("restart/interrupted/i-1", {"at": 1.5}, ttl=60)
    a.put_state("short", [1], ttl=0.2)
    assert b.get_state("restart/interrupted/i-1") == {"at": 1.5}
    assert b.get_state("nothing") is None
    time.sleep(0.3)
    assert b.get_state("short") is None
    b.delete_state("restart/interrupted/i-1")
    assert a.get_state("restart/interrupted/i-1") is None


def test_removal_reservations_never_take_the_last_healthy_member(pair):
    a, b = pair
    members = ["i-1", "i-2"]
    assert a.reserve_removal("clb:rsp-1", "i-1", members, keep=1, max_out_share=1.0, ttl=60).granted
    refused = b.reserve_removal("clb:rsp-1", "i-2", members, keep=1, max_out_share=1.0, ttl=60)
    assert not refused.granted and refused.remaining == 0
    # Once i-1 is out of the group it is no longer listed healthy, and still counts as out.
    assert not b.reserve_removal("clb:rsp-1", "i-2", ["i-2"], keep=1, max_out_share=1.0, ttl=60).granted
    # A reclaimed spot instance is never held back, and counts.
    assert b.reserve_removal("clb:rsp-1", "i-2", ["i-2"], keep=1, max_out_share=1.0, ttl=60, force=True).granted
    a.release_removal("clb:rsp-1", "i-1")
    b.release_removal("clb:rsp-1", "i-2")
    assert b.reserve_removal("clb:rsp-1", "i-2", members, keep=1, max_out_share=1.0, ttl=60).granted


def test_a_share_limits_how_much_of_a_group_is_out(pair):
    a, b = pair
    members = [f"i-{n}" for n in range(10)]
    granted = [s.reserve_removal("g", m, members, keep=1, max_out_share=0.3, ttl=60).granted
               for s, m in zip([a, b] * 5, members)]
    assert granted == [True] * 3 + [False] * 7
    assert a.reserve_removal("g", "i-0", members, keep=1, max_out_share=0.3, ttl=60).granted  # held already
    assert a.reserve_removal("g", "i-9", members, keep=1, max_out_share=0.3, ttl=60).granted is False
    assert a.reserve_removal("g", "i-sick", members, keep=1, max_out_share=0.3, ttl=60).granted  # not healthy


def test_a_batch_of_forced_removals_counts_in_every_group_and_lapses(pair):
    a, b = pair
    lapsed = time.monotonic() + 1.0
    a.force_removals([("clb:f1", "i-1"), ("alb:f2", "i-1"), ("clb:f1", "i-2"), ("clb:f3", "i-3")], ttl=1.0)
    # Each counts out of its group for the other worker: no group gives up its last healthy member.
    for group, healthy, candidate in [("clb:f1", ["i-4"], "i-4"), ("alb:f2", ["i-5"], "i-5"),
                                      ("clb:f3", ["i-6"], "i-6")]:
        refused = b.reserve_removal(group, candidate, healthy, keep=1, max_out_share=1.0, ttl=60)
        assert not refused.granted and refused.remaining == 0
    # Two out of f1 (i-1, i-2): with a share of 0.5 of four members, no room for a third.
    assert not b.reserve_removal("clb:f1", "i-4", ["i-4", "i-7"], keep=1, max_out_share=0.5, ttl=60).granted
    b.release_removal("clb:f3", "i-3")
    assert b.reserve_removal("clb:f3", "i-6", ["i-6", "i-8"], keep=1, max_out_share=1.0, ttl=60).granted
    a.force_removals([], ttl=60)  # nothing to count: no step
    time.sleep(max(0.0, lapsed - time.monotonic()) + 0.1)  # they lapse with `ttl`, as a forced one does
    assert b.reserve_removal("alb:f2", "i-5", ["i-5", "i-9"], keep=1, max_out_share=0.5, ttl=60).granted


def test_a_reservation_lapses_when_its_holder_never_comes_back(pair):
    a, b = pair
    assert a.reserve_removal("g2", "i-1", ["i-1", "i-2"], keep=1, max_out_share=1.0, ttl=0.3).granted
    time.sleep(0.4)
    assert b.reserve_removal("g2", "i-2", ["i-1", "i-2"], keep=1, max_out_share=1.0, ttl=60).granted


def test_the_dead_letter_record_is_written_once_per_message(pair, tmp_path):
    a, b = pair
    assert a.record_dead_letter({"message_id": "m-1", "reason": "x"})
    assert not a.record_dead_letter({"message_id": "m-1", "reason": "x"})
    assert a.dead_letter_path.read_text().count('"m-1"') == 1


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(healthy=st.sets(st.sampled_from([f"i-{n}" for n in range(6)])),
       out=st.sets(st.sampled_from([f"i-{n}" for n in range(8)])),
       keep=st.integers(0, 3), share=st.sampled_from([0.0, 0.25, 0.5, 1.0]))
def test_the_guard_never_leaves_fewer_than_keep_unless_forced(healthy, out, keep, share):
    for holder in sorted(healthy):
        verdict = judge(out, holder, sorted(healthy), keep, share, force=False)
        if holder not in out and verdict.granted:
            assert len(healthy - out - {holder}) >= keep
            assert len(out) + 1 <= share * len(healthy | out) + 1e-9


def test_every_script_names_its_keys_through_keys_only():
    """Tair cluster's Lua limits (docs/cloud-behaviour.md K1): each redis.call's key is a
    KEYS[...] expression, and every script is called with at least one key."""
    import re

    from ecs_worker.state import store_redis_lua as lua

    scripts = {n: text for n, text in vars(lua).items() if n.isupper() and isinstance(text, str)}  # every one
    assert {"RESERVE", "FORCE", "UNCLAIM"} <= scripts.keys()
    keyless = ("TIME",)
    for name, text in scripts.items():
        calls = re.findall(r"redis\.call\('(\w+)'(?:,\s*([^,)]+))?", text)
        assert calls, name
        for command, first in calls:
            if command in keyless:
                continue
            assert first.strip().startswith("KEYS["), f"{name}: {command} on {first!r}"


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                 HealthCheck.function_scoped_fixture])
@given(healthy=st.sets(st.sampled_from([f"i-{n}" for n in range(5)])),
       out=st.sets(st.sampled_from([f"i-{n}" for n in range(7)]), max_size=4),
       holder=st.sampled_from([f"i-{n}" for n in range(7)]),
       keep=st.integers(0, 3), share=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))
def test_the_redis_script_judges_as_the_rule_does(redis_server, tmp_path, healthy, out, holder, keep, share):
    """RESERVE is `judge` transcribed to Lua: the same verdict for any group and holder."""
    store = _redis_pair(redis_server, tmp_path)[0]
    try:
        group = fleet_name()
        for member in out:  # taken out earlier (forced: whatever the rule says)
            store.reserve_removal(group, member, [], keep, share, ttl=60, force=True)
        got = store.reserve_removal(group, holder, sorted(healthy), keep, share, ttl=60)
        assert got == judge(set(out), holder, sorted(healthy), keep, share, force=False)
    finally:
        store.close()


def test_what_a_plugin_keeps_is_bounded_and_its_own(tmp_path):
    """ctx's store members refuse what would bloat or break a shared store, and one plugin's
    keys never meet another's."""
    from ecs_worker.config import parse_config
    from ecs_worker.plugin_host.context import Runtime

    runtime = Runtime(parse_config({"worker": {"state_dir": str(tmp_path)}}), {}, dry_run=False)
    a, b = runtime.context("a"), runtime.context("b")
    with pytest.raises(ValueError):
        a.remember("big", "x" * 9000, ttl=60)
    with pytest.raises(ValueError):
        a.remember("forever", 1, ttl=10 ** 9)
    with pytest.raises(ValueError):
        a.remember("nan", float("nan"), ttl=60)
    with pytest.raises(ValueError):
        a.budget("none", limit=0, per=60)
    a.remember("k", {"v": 1}, ttl=60)
    assert a.recall("k") == {"v": 1} and b.recall("k") is None
    assert a.take(a.budget("x", 1, 60)) and b.take(b.budget("x", 1, 60))  # separate budgets
    assert not a.take(a.budget("x", 1, 60))
