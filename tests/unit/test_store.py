"""The local job store: atomic records, prefix lookup, corrupt files reported and skipped."""

import json

import pytest

from p_tasks.exceptions import JobNotFound, UsageError
from p_tasks.job import DONE, RUNNING, Job
from p_tasks.store import BadRecord, Store

A = "a3f2b091-0000-4000-8000-000000000001"
B = "a3f2c000-0000-4000-8000-000000000002"
C = "7c91d302-0000-4000-8000-000000000003"


def make(store, job_id, status=RUNNING, **kw):
    job = Job(job_id, "beefy", "/src", ["make", "-j16"], status=status, **kw)
    store.save(job)
    return job


def test_save_load_round_trip_with_schema_version(tmp_path):
    store = Store(tmp_path)
    job = make(store, A, started_at=100.0)
    data = json.loads(store.path(A).read_text())
    assert data["schema_version"] == 1 and data["argv"] == ["make", "-j16"]
    assert data["command"] == "make -j16"
    assert store.load(A) == job


def test_active_index_follows_status(tmp_path):
    store = Store(tmp_path)
    make(store, A)
    job = make(store, C)
    assert set(store.ids(active_only=True)) == {A, C}
    job.status = DONE
    store.save(job)
    assert store.ids(active_only=True) == [A]
    assert {j.id for j in store.jobs()} == {A, C}


def test_prefix_lookup_unique_ambiguous_unknown(tmp_path):
    store = Store(tmp_path)
    make(store, A)
    make(store, B)
    make(store, C)
    assert store.resolve("7c9").id == C
    assert store.resolve(A.upper()).id == A
    with pytest.raises(UsageError) as err:
        store.resolve("a3f2")
    assert "a3f2b091 on beefy: make -j16" in err.value.message and "a3f2c000" in err.value.message
    with pytest.raises(JobNotFound, match="no job matches 'ffff'"):
        store.resolve("ffff")
    with pytest.raises(UsageError, match="not a job id"):
        store.resolve("../../etc")


def test_corrupt_record_is_reported_not_fatal(tmp_path):
    store = Store(tmp_path)
    make(store, A)
    store.path(C).write_text('{"id": "7c91d302-0000-4000-8000-0000')
    records = list(store.scan())
    bad = [r for r in records if isinstance(r, BadRecord)]
    assert [j.id for j in records if isinstance(j, Job)] == [A]
    assert bad and bad[0].path == store.path(C)
    assert store.path(C).exists()


def test_refuses_to_store_malformed_id(tmp_path):
    with pytest.raises(ValueError):
        Store(tmp_path).save(Job("../evil", "w", "/", ["x"]))
