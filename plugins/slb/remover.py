"""The slb plugin's coalescer: a window gathers a wave's instances, one batched read finds
their groups, and per-group batched changes take them out — each event recording its own
part through its own `ctx`."""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from functools import partial
from typing import Any

from ..lb.actions import MAX_BACKENDS_PER_CALL, MAX_SERVERS_PER_CALL, REMOVE as SG_REMOVE, UPDATE as SG_UPDATE
from ..lb import guard
from ..lb.batch import KeyedBatcher
from ..lb.clb import BackendIndex, clb_wire
from ..lb.server_groups import ServerGroupIndex, change, remove, server_group_wire
from .job import DRAIN, REMOVE, Job
from .spot import MAX_IDS_PER_CALL, spot_only

JOB_SENDERS_PER_WORKER = 4
MERGE_ROUNDS = 3  # rounds of late jobs a dispatch takes in before its calls leave
# The ALB/NLB action for each CLB one (drain = weight 0 through the servers' attributes).
_SERVER_GROUP_ACTIONS = {REMOVE: SG_REMOVE, DRAIN: SG_UPDATE}


class Remover:
    """The coalescer: window → locate (one batched read) → per-group batched changes."""

    def __init__(self, cloud, dry_run: bool, cfg, spot_check: bool = True) -> None:
        self.cloud, self.dry_run = cloud, dry_run  # the starting plugin's `ctx.cloud`, `ctx.dry_run`
        # Spot notices are checked against ECS (spot.py); the scaling plugin's instances are
        # verified through ESS instead (DescribeLifecycleActions) and may well be on-demand.
        self.spot_check = spot_check
        self.window = cfg.coalesce_ms / 1000.0
        self.job_timeout = cfg.job_timeout
        self.index = BackendIndex(lambda action, **p: cloud.slb(action, **p),
                                  cfg.vserver_groups, cfg.discovery_ttl, workers=cfg.workers) \
            if "clb" in cfg.kinds else None
        configured = {"alb": cfg.alb_server_groups, "nlb": cfg.nlb_server_groups}
        self.group_indexes = {
            kind: ServerGroupIndex(kind, partial(_api_call, cloud, kind), configured[kind],
                                   cfg.discovery_ttl, workers=cfg.workers)
            for kind in ("alb", "nlb") if kind in cfg.kinds}
        # A group's call is chosen once its rate-limit token is in hand (`cloud.turn`): a wave's
        # late instances join the call still waiting for the rate limit, not a new one. More
        # senders than `workers`: one backing off after SystemBusy must not idle the rate.
        self.batcher = KeyedBatcher(self._send, max_batch=MAX_BACKENDS_PER_CALL, turn=self._turn,
                                    workers=cfg.workers * JOB_SENDERS_PER_WORKER, name="slb-send")
        # ALB/NLB: 200 servers a call, and a sender waits for its job to end (seconds, mostly
        # idle), so more of them, or a wave over many groups would queue behind a few jobs.
        # Calls still pass the per-API rate limit.
        self.job_batcher = KeyedBatcher(self._send, max_batch=MAX_SERVERS_PER_CALL,
                                        workers=cfg.workers * JOB_SENDERS_PER_WORKER, name="sg-send",
                                        turn=self._turn)
        self._incoming: list[Job] = []
        self._since = 0.0
        self._cond = threading.Condition()
        self._stopping = False
        self._locating = ThreadPoolExecutor(1, thread_name_prefix="slb-locate")
        self._thread = threading.Thread(target=self._run, name="slb-coalesce", daemon=True)
        self._thread.start()

    def _turn(self, key: tuple[str, str]):  # the rate limit of the group's API (CLB's is `slb`)
        turn = getattr(self.cloud, "turn", None)  # (a test's stand-in cloud may have none)
        if turn is None or self.dry_run:
            return nullcontext()
        return turn("slb" if key[0] == "clb" else key[0])

    def submit(self, instance_id: str, ctx, kind: str) -> Future:
        job = Job(instance_id, ctx, kind)
        with self._cond:
            if self._stopping:
                raise RuntimeError("slb plugin is shutting down")
            if not self._incoming:
                self._since = time.monotonic()  # the window runs from the first job's arrival
            self._incoming.append(job)
            self._cond.notify()
        return job.future

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        with self._cond:
            left, self._incoming = self._incoming, []
        error = RuntimeError("worker shut down before the SLB change was made")
        for job in left:
            job.fail(error)
        for done in self.batcher.close() + self.job_batcher.close():
            done(error)
        self._locating.shutdown(wait=False, cancel_futures=True)
        for index in self._indexes():
            index.close()

    def _warm(self) -> None:
        """The cloud SDK's first-use cost, paid before any job comes, not on a wave's first call."""
        warm = getattr(self.cloud, "warm", None)  # (a test's stand-in cloud may have none)
        try:
            if warm is not None:
                warm(*(["ecs"] if self.spot_check else []), *(["slb"] if self.index is not None else []),
                     *self.group_indexes)
        except Exception:  # the first call reports it, with its action
            pass

    def _indexes(self) -> list:
        return ([self.index] if self.index is not None else []) + list(self.group_indexes.values())

    # -- the coalescing thread ------------------------------------------------------
    def _run(self) -> None:
        self._warm()
        while True:
            with self._cond:
                while not self._incoming and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                # From the first job's arrival: jobs that came while the last batch was being
                # located have waited their window already, and go at once.
                deadline = self._since + self.window
                while not self._stopping and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                if self._stopping:
                    return
                jobs, self._incoming = self._incoming, []
            self._dispatch(jobs)

    def _dispatch(self, jobs: list[Job]) -> None:
        entries = self._prepare(jobs)
        # Jobs that came while these were checked and located (the groups' first read takes
        # seconds) join before any call leaves: one call per group per 20 members even for a
        # wave arriving over longer than the window. Bounded, not to hold back a steady stream.
        for _ in range(MERGE_ROUNDS):
            with self._cond:
                more, self._incoming = self._incoming, []
            if not more:
                break
            entries += self._prepare(more)
        self.batcher.put([e for e in entries if e[0][0] == "clb"])  # 20 a call, synchronous
        self.job_batcher.put([e for e in entries if e[0][0] != "clb"])  # ALB/NLB: 200 a call, jobs

    def _prepare(self, jobs: list[Job]) -> list[tuple]:
        """The jobs' batcher entries, once ECS and the groups are read (jobs with nothing to
        do are finished here). ECS and SLB have rate limits of their own: the groups are
        read while ECS is asked which instances are spot ones (reads only: an instance ECS
        refuses costs no change), and jobs arriving meanwhile are checked and join."""
        located = self._locating.submit(self._locate, {j.instance_id for j in jobs})
        located.add_done_callback(self._wake)
        checked = partial(spot_only, self.cloud, dry_run=self.dry_run) if self.spot_check else list
        jobs = checked(jobs)
        while not located.done() and not self._stopping:  # late jobs checked a full page at a time
            with self._cond:
                while len(self._incoming) < MAX_IDS_PER_CALL and not located.done() and not self._stopping:
                    self._cond.wait()
                late, self._incoming = self._incoming, []
            jobs += checked(late)
        found, error = located.result()
        if late_ids := {j.instance_id for j in jobs} - found.keys():  # their groups were just read
            more, more_error = self._locate(late_ids)
            found, error = {**found, **more}, error or more_error
        entries, forced, counter = [], {}, None
        for job in jobs:
            backends = found.get(job.instance_id) or []
            if not backends:  # in no group: gone already, or never there — done
                self._unlocated(job, error) if error is not None else job.finish(nothing=True)
                continue
            if error is not None and not job.ctx.dry_run:
                job.fail_later(error)  # the message comes back for the groups not read
            if job.kind == REMOVE and not job.ctx.dry_run:  # never held back, but counted (lb/guard.py)
                forced[job.instance_id], counter = backends, job.ctx
            job.expect(len(backends))
            entries += [(b.key, job.kind, (b, job), partial(job.entry_done, b)) for b in backends]
        if counter is not None:  # one store step for the batch, before any of its Removes leave
            guard.count_forced(counter, forced)
        return entries

    def _wake(self, _located: Future) -> None:
        with self._cond:
            self._cond.notify()

    def _locate(self, ids: set[str]) -> tuple[dict[str, list], Exception | None]:
        """Each instance's entries of every kind, the kinds read side by side, and the first
        error (one kind unreadable must not hold back the others)."""
        found: dict[str, list] = {i: [] for i in ids}
        error: Exception | None = None
        indexes = self._indexes()
        with ThreadPoolExecutor(max(1, len(indexes)), thread_name_prefix="slb-kind") as pool:
            reads = [pool.submit(index.locate, ids) for index in indexes]
        for read in reads:
            try:
                for iid, backends in read.result().items():
                    found[iid] += backends
            except Exception as exc:
                error = error or exc
        return found, error

    def _unlocated(self, job: Job, exc: Exception) -> None:
        try:  # a dry run on a laptop has no credentials: the plan, marked as unchecked
            note = job.ctx.unverified(exc, "SLB")
        except Exception:
            job.fail(exc)  # the message comes back and we try again
            return
        job.ctx.plan(job.kind, [f"?/{job.instance_id}"], note=note)
        job.future.set_result(f"planned ({note})")

    # -- one batched call (a KeyedBatcher worker thread) ------------------------------
    def _send(self, key: tuple[str, str], kind: str, items: list[tuple[Any, Job]]) -> None:
        if key[0] != "clb":
            return self._send_server_group(key, kind, items)
        group = key[1]
        if kind == REMOVE:  # (a dry run removed nothing: nothing is removed lately)
            # A duplicate event queued behind the call that removed its entry: done already.
            done = [(job.ctx, b.target) for b, job in items if self.index.removed_lately(b)]
            if done:
                done[0][0].act_many(kind, done, _already_removed)
                items = [(b, job) for b, job in items if not self.index.removed_lately(b)]
                if not items:
                    return
        backends = [b for b, _ in items]
        unique = list({(b.server_id, b.port): b for b in backends}.values())  # one per entry, even for duplicate events
        wire = [clb_wire(b, weight=0 if kind == DRAIN else None) for b in unique]
        targets = [(job.ctx, b.target) for b, job in items]
        targets[0][0].act_many(kind, targets, self.cloud.slb, kind, VServerGroupId=group, BackendServers=wire)
        if kind == REMOVE and not self.dry_run:  # the cache learns only of changes made
            self.index.forget(unique)

    def _send_server_group(self, key: tuple[str, str], kind: str, items: list[tuple[Any, Job]]) -> None:
        """One ALB/NLB change (≤ 200 servers), followed until its job is done."""
        lb, group = key
        index = self.group_indexes[lb]
        action = _SERVER_GROUP_ACTIONS[kind]
        if kind == REMOVE:
            done = [(job.ctx, m.target) for m, job in items if index.removed_lately(m)]
            if done:
                done[0][0].act_many(action, done, _already_removed)
                items = [(m, job) for m, job in items if not index.removed_lately(m)]
                if not items:
                    return
        unique = list({(m.server_id, m.port): m for m, _ in items}.values())
        servers = [server_group_wire(m, weight=0) if kind == DRAIN else server_group_wire(m, with_weight=False)
                   for m in unique]
        targets = [(job.ctx, m.target) for m, job in items]
        api = partial(_api_call, self.cloud, lb)
        if kind == REMOVE:  # servers gone meanwhile (a stale cache) are dropped, not an error
            call = partial(remove, lb, api, group, servers, job_timeout=self.job_timeout)
        else:
            call = partial(change, lb, api, action, group, servers, job_timeout=self.job_timeout)
        targets[0][0].act_many(action, targets, call)  # in a dry run, ctx plans it: nothing is called
        if kind == REMOVE and not self.dry_run:  # the cache learns only of changes made
            index.forget(unique)


def _api_call(cloud, api: str, action: str, **params: Any) -> dict:
    return cloud.call(api, action, params)


def _already_removed(*args: Any, **kwargs: Any) -> str:
    return "already removed by an earlier call"
