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
