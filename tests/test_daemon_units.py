"""The daemon's pieces alone: conversions between the library's objects and the
API's messages (both ways must print the same), durations, environments."""

from __future__ import annotations

import pytest

from cedana_gpu.daemon import convert, ops
from cedana_gpu.daemon.periodic import parse_duration
from cedana_gpu.jobs.store import Checkpoint, Job


def full_job() -> Job:
    return Job(
        jid="j1",
        cmd=["python", "train.py", "--x", "ü"],
        state="exited",
        exit_code=3,
        signal=None,
        pid=4242,
        pid_namespace=True,
        controller_pid=4241,
        gpu=True,
        driver="fake",
        cwd="/work",
        log_path="/s/jobs/j1/job.log",
        socket_path="/s/jobs/j1/control.sock",
        error="boom",
        generation=3,
        created_at=1.5,
        updated_at=2.25,
        shm_dir="/dev/shm/cedana-gpu.d/j1",
        segment="cedana-gpu.j0",
        persistent_mounts=["/a", "/b"],
        restored_from="j0-ckpt",
        engine="driver",
    )


def test_the_full_job_sets_every_field() -> None:
    """So that a field added to Job and forgotten in the conversion fails the round trip."""
    import dataclasses

    bare = Job(jid="bare", cmd=["sh"])
    unset = [
        f.name
        for f in dataclasses.fields(Job)
        if getattr(full_job(), f.name) == getattr(bare, f.name) and f.name != "signal"
    ]
    assert unset == []


@pytest.mark.parametrize("job", [full_job(), Job(jid="bare", cmd=["sh"])], ids=["full", "bare"])
def test_a_job_survives_the_round_trip(job: Job) -> None:
    back = convert.job_from_pb(convert.job_to_pb(job, status="x"))
    assert back == job
    assert back.to_json() == job.to_json()


def test_a_zero_is_not_a_missing_value() -> None:
    job = Job(jid="z", cmd=["true"], exit_code=0, signal=0)
    back = convert.job_from_pb(convert.job_to_pb(job))
    assert (back.exit_code, back.signal, back.pid) == (0, 0, None)


def test_a_checkpoint_survives_the_round_trip() -> None:
    for ckpt in (
        Checkpoint("c1", "j1", "/p", 10, "lz4", 2, True, 3, {"total": 1.25}, 5.5, "committed"),
        Checkpoint("c2", "j1", "/q", 0, "none", 1, False, owner="12:34", status="pending"),
    ):
        assert convert.checkpoint_from_pb(convert.checkpoint_to_pb(ckpt)) == ckpt


def test_dump_and_restore_documents_survive_the_round_trip() -> None:
    dump = {
        "checkpoint": "c1",
        "job": "j1",
        "path": "/p",
        "size": 123,
        "compression": "tar",
        "streams": 2,
        "leave_running": True,
        "generation": 1,
        "gpu_bytes": 4096,
        "regions": 2,
        "engine": "driver",
        "phases": {"total": 1.0, "freeze": 0.5, "criu_dump": 0.25},
        "job_state": "running",
    }
    assert convert.dump_from_pb(convert.dump_to_pb(dump)) == dump
    plain = {**dump, "engine": None}  # a job without GPU has no engine
    assert convert.dump_from_pb(convert.dump_to_pb(plain)) == plain
    back = convert.dump_from_pb(convert.dump_to_pb(dump))
    # Keys and phases in the library's order: both ways print the same JSON.
    assert list(back) == list(dump) and list(back["phases"]) == list(dump["phases"])
    restore = {
        "job": "j2",
        "pid": 99,
        "state": "running",
        "generation": 2,
        "checkpoint": None,
        "path": "/p",
        "controller_pid": 98,
        "signature": "unsigned",
        "phases": {"check": 0.1},
    }
    back = convert.restore_from_pb(convert.restore_to_pb(restore))
    assert back == restore and list(back) == list(restore)


def test_details_survive_the_round_trip() -> None:
    detail = ops.JobDetail(full_job(), "exited (3)", (60.0, 2), {"launches": 5}, None)
    back = convert.detail_from_pb(convert.detail_to_pb(detail))
    assert back.to_json() == detail.to_json()
    bare = ops.JobDetail(Job(jid="b", cmd=["sh"]), "running", None, None, "no controller")
    assert convert.detail_from_pb(convert.detail_to_pb(bare)).to_json() == bare.to_json()
    ck = ops.CheckpointDetail(Checkpoint("c", "j", "/p", 1, "none", 1, False), {"version": 1}, None)
    back_ck = convert.checkpoint_detail_from_pb(convert.checkpoint_detail_to_pb(ck))
    assert back_ck.to_json() == ck.to_json()


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1.5h", 5400.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "-1s", "0", "ten"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_an_environment_travels_as_lines() -> None:
    env = {"A": "1", "B": "x=y", "EMPTY": ""}
    assert ops.env_dict(ops.env_list(env)) == env
