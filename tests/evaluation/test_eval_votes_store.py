"""The votes table: added to stores written before it existed, without touching their data."""

import sqlite3

import pytest

from evolvedirector.store import Store
from evolvedirector.store.db import SCHEMA


def old_schema() -> str:
    """The schema as it was before the votes table (every statement up to it)."""
    return SCHEMA[: SCHEMA.index("CREATE TABLE IF NOT EXISTS ab_votes")]


def test_an_existing_store_gains_the_votes_table_and_keeps_its_data(tmp_path):
    path = tmp_path / "evolve.db"
    conn = sqlite3.connect(path)
    conn.executescript(old_schema())
    conn.execute("INSERT INTO samples (prompt, domain, operation, round_added, teacher, image_hash)"
                 " VALUES ('two red circles', 'count', 'seed', 0, 'tally', ?)", ("a" * 64,))
    conn.commit()
    conn.close()

    store = Store(path)
    assert store.sample(1).prompt == "two red circles"
    assert store.votes() == []
    vote = store.add_vote(prompt="two red circles", domain="count", teacher="tally", student_image="b" * 64,
                          teacher_image="a" * 64, student_side="left", preferred="student")
    store.close()
    store = Store(path)  # reopening runs the schema again: nothing is lost or duplicated
    [row] = store.votes()
    assert row["id"] == vote and row["preferred"] == "student" and row["student_side"] == "left"
    assert store.count_samples() == 1
    store.close()


def test_votes_refuse_impossible_values(tmp_path):
    store = Store(tmp_path / "evolve.db")
    fields = dict(prompt="p", domain="object", teacher="atlas", student_image="b" * 64, teacher_image="a" * 64)
    with pytest.raises(sqlite3.IntegrityError):
        store.add_vote(**fields, student_side="middle", preferred="student")
    with pytest.raises(sqlite3.IntegrityError):
        store.add_vote(**fields, student_side="left", preferred="both")
    assert store.votes() == []
    store.close()
