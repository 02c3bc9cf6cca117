"""The SQLite state store: dedupe memory, attempt counts and resume lists survive restarts;
a corrupt store is moved aside, never a crash."""
from __future__ import annotations

import json
import logging

import pytest

from ecs_worker.store import DB_NAME, Store, StoreError


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


def test_attempts_count_real_attempts_and_deferrals_are_taken_back(tmp_path):
    store = Store(tmp_path)
    assert store.begin_attempt("ev") == 1
    store.undo_attempt("ev")  # it deferred
    assert store.begin_attempt("ev") == 1
    assert store.begin_attempt("ev") == 2
    store.close()
    assert Store(tmp_path).attempts("ev") == 2


def test_resume_lists_round_trip_and_settling_forgets_them(tmp_path):
    store = Store(tmp_path)
    assert store.resume("ev") is None
    store.begin_attempt("ev")
    store.set_resume("ev", {"slb": 1700000000.5, "restart": None})
    assert store.resume("ev") == {"slb": 1700000000.5, "restart": None}
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


def test_dead_letters_are_appended_as_json_lines(tmp_path):
    store = Store(tmp_path)
    store.record_dead_letter({"reason": "invalid", "body": "{oops"})
    store.record_dead_letter({"reason": "max_attempts", "body": "{}", "attempts": 5})
    rows = [json.loads(line) for line in (tmp_path / "dead-letter.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rows] == ["invalid", "max_attempts"] and rows[0]["body"] == "{oops"


def test_an_unusable_state_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create"):
        Store(blocker / "state")


def test_a_received_batch_is_counted_in_one_go_and_survives_a_restart(tmp_path):
    store = Store(tmp_path)
    store.mark_settled("done")
    store.set_resume("back", {"slb": 1700000000.5})  # came back after a deferral
    first = store.begin_attempts(["new", "done", "back", "twice", "twice"], max_attempts=3)
    assert [a.settled for a in first] == [False, True, False, False, False]
    assert [a.number for a in first if not a.settled] == [1, 1, 1, 2]  # a key twice counts twice
    assert first[2].resume == {"slb": 1700000000.5} and first[0].resume is None
    store.close()
    store = Store(tmp_path)  # a crash: the attempts taken on still count
    assert [store.attempts(k) for k in ("new", "back", "twice", "done")] == [1, 1, 2, 0]


def test_a_key_with_max_attempts_made_is_given_up_without_counting_another(tmp_path):
    store = Store(tmp_path)
    for expected in (1, 2, 3):  # e.g. it crashed the worker three times
        (attempt,) = store.begin_attempts(["poison"], max_attempts=3)
        assert attempt.number == expected and not attempt.exhausted
    (attempt,) = store.begin_attempts(["poison"], max_attempts=3)
    assert attempt.exhausted and attempt.number == 3 and store.attempts("poison") == 3


def test_a_deferral_takes_its_attempt_back_and_keeps_the_plugins_to_resume(tmp_path):
    store = Store(tmp_path)
    for _ in range(5):  # deferring again and again never uses up attempts
        (attempt,) = store.begin_attempts(["drain"], max_attempts=1)
        assert attempt.number == 1 and not attempt.exhausted
        store.deferred("drain", {"slb": 1700000000.5})
    assert store.attempts("drain") == 0 and store.resume("drain") == {"slb": 1700000000.5}


def test_settling_a_batch_remembers_every_key_and_forgets_their_attempts(tmp_path):
    clock = Clock()
    store = Store(tmp_path, dedupe_ttl=60, clock=clock)
    keys = [f"ev-{i}" for i in range(20)]
    store.begin_attempts(keys, max_attempts=5)
    store.mark_settled_many(keys)
    assert store.settled_among([*keys, "other"]) == set(keys)
    assert all(store.attempts(k) == 0 for k in keys)
    assert all(a.settled for a in store.begin_attempts(keys, max_attempts=5))
    clock.now += 61
    assert store.settled_among(keys) == set()
