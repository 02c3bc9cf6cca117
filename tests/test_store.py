"""The SQLite state store: dedupe memory, attempt counts and resume lists survive restarts;
a corrupt store is moved aside, never a crash."""
from __future__ import annotations

import json
import logging

import pytest

from ecs_worker.state.store import DB_NAME, SCHEMA_VERSION, StoreError
from store_kit import ReadableStore as Store  # the store, plus the one-key reads tests use


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_settled_events_are_remembered_across_restarts_for_the_ttl(tmp_path):
    clock = Clock()
    store = Store(tmp_path, dedupe_ttl=60, clock=clock)
    store.mark_settled("ev-1")
    store.close()
    store = Store(tmp_path, dedupe_ttl=60, clock=clock)  # a restart
    assert store.is_settled("ev-1") and not store.is_settled("ev-2")
    clock.now += 61
    assert not store.is_settled("ev-1")
    store.purge()
    assert store._run("SELECT COUNT(*) FROM settled") == [(0,)]


def test_attempts_count_failures_and_deferrals_count_nothing(tmp_path):
    store = Store(tmp_path)
    assert store.failed("ev", {"slb": None}) == 1
    store.deferred("ev", {"slb": 1700000000.5})  # a deferral is not an attempt
    assert store.failed("ev", {"slb": None}) == 2
    store.close()
    assert Store(tmp_path).attempts("ev") == 2


def test_resume_lists_round_trip_and_settling_forgets_them(tmp_path):
    store = Store(tmp_path)
    assert store.resume("ev") is None
    store.failed("ev", {"slb": 1700000000.5, "restart": None})
    assert store.resume("ev") == {"slb": 1700000000.5, "restart": None}
    store.set_resume("ev", {"slb": 1700000001.5})
    assert store.attempts("ev") == 1  # setting the resume list keeps the count
    store.mark_settled("ev")
    assert store.resume("ev") is None and store.attempts("ev") == 0


def test_a_corrupt_store_is_moved_aside_with_a_warning(tmp_path, caplog):
    (tmp_path / DB_NAME).write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, "ecs_worker.store"):
        store = Store(tmp_path)
    assert "moved aside" in caplog.text
    assert list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))
    store.mark_settled("ev")
    assert store.is_settled("ev")


def test_dead_letters_are_appended_as_json_lines_once_per_message(tmp_path):
    store = Store(tmp_path)
    assert store.record_dead_letter({"reason": "invalid", "body": "{oops", "message_id": "m-1"})
    store.record_dead_letter({"reason": "max_attempts", "body": "{}", "attempts": 5, "message_id": "m-2"})
    # m-1 again (its dead-letter queue send failed, it came back): not written twice.
    assert not store.record_dead_letter({"reason": "invalid", "body": "{oops", "message_id": "m-1"})
    store.close()
    assert not Store(tmp_path).record_dead_letter({"reason": "invalid", "body": "x", "message_id": "m-1"})
    rows = [json.loads(line) for line in (tmp_path / "dead-letter.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rows] == ["invalid", "max_attempts"] and rows[0]["body"] == "{oops"


def test_an_unusable_state_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create"):
        Store(blocker / "state")


def test_taking_a_batch_counts_nothing_and_reads_what_is_known(tmp_path):
    store = Store(tmp_path)
    store.mark_settled("done")
    store.deferred("back", {"slb": 1700000000.5})  # came back after a deferral
    store.failed("failing", {"slb": None})
    store.crashed([], ["suspect"])
    taken = store.take(["new", "done", "back", "failing", "suspect", "new"], max_attempts=3)
    assert [a.settled for a in taken] == [False, True, False, False, False, False]
    assert [a.made for a in taken] == [0, 0, 0, 1, 0, 0] and [a.number for a in taken] == [1, 1, 1, 2, 1, 1]
    assert taken[2].resume == {"slb": 1700000000.5} and taken[0].resume is None
    assert [a.suspect for a in taken] == [False, False, False, False, True, False]
    store.close()
    store = Store(tmp_path)  # a crash while they ran: taking them on cost nothing
    assert [store.attempts(k) for k in ("new", "back", "failing", "suspect")] == [0, 0, 1, 0]


def test_a_crash_charges_only_the_message_that_ran_alone(tmp_path):
    store = Store(tmp_path)
    store.crashed([], ["a", "b", "c"])  # died with three running: suspects, nobody charged
    assert [store.attempts(k) for k in "abc"] == [0, 0, 0] and all(store.suspect(k) for k in "abc")
    store.failed("a", {})  # it finished (failing): no longer a suspect
    store.mark_settled("b")  # handled
    assert not store.suspect("a") and not store.suspect("b")
    for expected in (1, 2, 3):  # c alone, three times
        store.crashed(["c"], ["c"])
        assert store.attempts("c") == expected
    (attempt,) = store.take(["c"], max_attempts=3)
    assert attempt.exhausted and attempt.made == 3 and attempt.number == 3 and attempt.suspect


def test_a_deferral_keeps_the_plugins_to_resume_and_a_travelling_count(tmp_path):
    store = Store(tmp_path)
    for _ in range(5):  # deferring again and again never uses up attempts
        (attempt,) = store.take(["drain"], max_attempts=1)
        assert attempt.made == 0 and not attempt.exhausted
        store.deferred("drain", {"slb": 1700000000.5})
    assert store.attempts("drain") == 0 and store.resume("drain") == {"slb": 1700000000.5}
    store.deferred("moved", {}, attempts=2)  # a re-sent deferral carries its count
    assert store.attempts("moved") == 2


def test_settling_a_batch_remembers_every_key_and_forgets_their_attempts(tmp_path):
    clock = Clock()
    store = Store(tmp_path, dedupe_ttl=60, clock=clock)
    keys = [f"ev-{i}" for i in range(20)]
    for k in keys:
        store.failed(k, {})
    store.mark_settled_many(keys)
    assert store.settled_among([*keys, "other"]) == set(keys)
    assert all(store.attempts(k) == 0 for k in keys)
    assert all(a.settled for a in store.take(keys, max_attempts=5))
    clock.now += 61
    assert store.settled_among(keys) == set()


def test_keys_no_sqlite_bind_can_take_are_stored_all_the_same(tmp_path):
    store = Store(tmp_path)
    hostile = ["\ud800", "a\x00b", "x" * 100_000, "\udfff|Instance:StateChange|"]
    store.mark_settled_many(hostile[:2])
    store.failed(hostile[2], {})
    assert store.settled_among(hostile) == set(hostile[:2])
    taken = store.take(hostile, max_attempts=5)
    assert [a.settled for a in taken] == [True, True, False, False] and taken[2].made == 1
    assert store.is_settled("\ud800") and not store.is_settled("\udfff")


def test_a_version_1_database_is_migrated_in_place(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / DB_NAME)
    old.executescript("""
        CREATE TABLE settled (key TEXT PRIMARY KEY, expires REAL NOT NULL);
        CREATE TABLE attempts (key TEXT PRIMARY KEY, attempts INTEGER NOT NULL DEFAULT 0,
                               resume TEXT, updated REAL NOT NULL);
        INSERT INTO settled VALUES ('bare-id', 9e12);
        INSERT INTO attempts VALUES ('old', 2, NULL, 9e12);
    """)
    old.close()
    store = Store(tmp_path)
    assert store.is_settled("bare-id")  # old rows stay and expire in their time
    assert store.attempts("old") == 2 and not store.suspect("old")
    store.crashed(["old"], ["old"])
    assert store.attempts("old") == 3 and store.suspect("old")
    assert store._run("PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_files_are_private_without_systemd(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "state")
        store.record_dead_letter({"message_id": "m", "body": "x"})
        store.failed("k", {})
        store.put_state("restart/state/interrupted/i-1", 1.5, 60)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    for f in (tmp_path / "state").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_the_crash_journal_names_what_ran_when_its_worker_died(tmp_path):
    from ecs_worker.consumer import crashes

    calls = []
    live = crashes.Journal(tmp_path)
    assert crashes.recover(tmp_path, lambda *a: calls.append(a), own=live) == 0
    dead = crashes.Journal(tmp_path)
    for key in ("a", "b", "c|x\n\ud800"):
        dead.started(key)
    dead.ended("a")
    # A worker that dies keeps nothing locked: stand in for that by releasing the lock.
    import fcntl
    import os
    fcntl.flock(dead._fd, fcntl.LOCK_UN)
    assert crashes.recover(tmp_path, lambda *a: calls.append(a), own=live) == 1
    assert calls == [([], ["b", "c|x\n\ud800"])]  # suspects, and nobody ran alone
    assert not dead.path.exists() and live.path.exists()
    os.close(dead._fd)
    alone = crashes.Journal(tmp_path)
    alone.started("poison")
    fcntl.flock(alone._fd, fcntl.LOCK_UN)
    crashes.recover(tmp_path, lambda *a: calls.append(a), own=live)
    # Alone with the death, still not charged: an outside kill looks the same (it runs in
    # quarantine next, where a crash is its own).
    assert calls[-1] == ([], ["poison"])
    live.close()
    assert not live.path.exists()


def test_the_crash_journal_outlives_a_kill_9_of_its_worker(tmp_path):
    """The lines are copies into a mapped file, not write()s: what a process wrote before
    SIGKILL is what a sibling reads, its last running message included."""
    import subprocess
    import sys
    from ecs_worker.consumer import crashes

    subprocess.run([sys.executable, "-c", (
        "import os, signal, sys\n"
        "from ecs_worker.consumer.crashes import Journal\n"
        "journal = Journal(sys.argv[1])\n"
        "for key in ('done', 'running', 'twice', 'twice'):\n"
        "    journal.started(key)\n"
        "journal.ended('done')\n"
        "journal.ended('twice')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"), str(tmp_path)], timeout=30)
    calls = []
    assert crashes.recover(tmp_path, lambda *a: calls.append(a)) == 1
    assert calls == [([], ["running", "twice"])]
    assert not list(tmp_path.glob(f"{crashes.PREFIX}*"))


def test_the_crash_journal_stays_small(tmp_path, monkeypatch):
    from ecs_worker.consumer import crashes

    monkeypatch.setattr(crashes, "COMPACT_BYTES", 2000)
    journal = crashes.Journal(tmp_path)
    journal.started("long-running")
    for i in range(500):
        journal.started(f"k{i}")
        journal.ended(f"k{i}")
    assert journal.path.stat().st_size < 3000
    assert crashes.running_at_death(journal.path.read_text()) == ["long-running"]
    journal.close()


def test_a_dead_letter_record_half_written_by_a_dying_worker_is_not_written_again(tmp_path):
    store = Store(tmp_path)
    record = {"message_id": "m-9", "reason": "invalid", "body": "x"}
    # The worker died after the write and before noting it done.
    store._run("INSERT INTO dead_letters (message_id, recorded, written) VALUES ('m-9', 1, 0)")
    (tmp_path / "dead-letter.jsonl").write_text(json.dumps(record) + "\n")
    assert not store.record_dead_letter(record)
    # ... or before the write: then it is written.
    store._run("INSERT INTO dead_letters (message_id, recorded, written) VALUES ('m-10', 1, 0)")
    assert store.record_dead_letter({**record, "message_id": "m-10"})
    lines = (tmp_path / "dead-letter.jsonl").read_text().splitlines()
    assert [json.loads(line)["message_id"] for line in lines] == ["m-9", "m-10"]
