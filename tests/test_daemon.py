"""The daemon through a gRPC client generated from the shipped proto.

Each test starts its own daemon (its own socket, state directory and job
ids). Jobs are plain shell loops: the daemon's part of a dump or restore is
the same for a GPU job (the pipelines are shared), and plain jobs keep these
tests quick. Moments inside a dump are reached with the pipeline's test hook
(``CEDANA_TEST_PHASE_HOOK``, set in the daemon's environment), never by
sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cr_helpers import REPO, WAIT, alive, needs_root, unique_jid, wait_for
from daemon_helpers import Daemon, counter_req, ppid, run_req, running

from cedana_gpu.daemon.proto import daemon_pb2 as pb
from cedana_gpu.jobs.processes import stopped_pids
from cedana_gpu.jobs.store import JobStore

pytestmark = [needs_root, pytest.mark.usefixtures("native_parts")]

LONG = 100_000  # counts: a job that runs until the test kills it


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running(Daemon(tmp_path)) as d:
        yield d


def attach(stub: Any, jid: str) -> tuple[bytes, Any]:
    out = b""
    for msg in stub.Attach(iter([pb.AttachReq(jid=jid)])):
        if msg.HasField("ended"):
            return out, msg.ended
        out += msg.output
    raise AssertionError(f"the attach stream of job {jid} ended without the job's end")


def lines(data: bytes) -> list[str]:
    return data.decode().splitlines()


def store_of(d: Daemon) -> JobStore:
    return JobStore(d.state / "jobs.db")


def test_the_socket_is_private_and_the_daemon_says_who_it_is(daemon: Daemon) -> None:
    st = os.stat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    with daemon.client() as stub:
        info = stub.HealthCheck(pb.HealthCheckReq()).daemon
    assert daemon.proc is not None
    assert info.pid == daemon.proc.pid
    assert Path(info.state_dir) == daemon.state
    # A second daemon on the same socket refuses to start, in one line.
    second = subprocess.run(
        [sys.executable, "-m", "cedana_gpu", "daemon", "start"],
        env=daemon.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"cedana: error: a daemon already answers at {daemon.socket}: stop it first"
    )


def test_run_attach_list_get_kill_delete(daemon: Daemon) -> None:
    done, running = unique_jid("dra"), unique_jid("drb")
    with daemon.client() as stub:
        job = stub.Run(counter_req(done, 20)).job
        assert (job.jid, job.state) == (done, "running")
        # The daemon started the job's controller: the job is the daemon's.
        assert daemon.proc is not None and ppid(job.controller_pid) == daemon.proc.pid
        out, ended = attach(stub, done)
        assert lines(out) == [f"n {i}" for i in range(20)] + ["end"]
        assert (ended.state, ended.exit_code, ended.status) == ("exited", 0, "exited (0)")

        stub.Run(counter_req(running, LONG))
        listed = {j.jid: j for j in stub.List(pb.ListReq()).jobs}
        assert listed[done].status == "exited (0)"
        assert listed[running].state == "running"
        got = stub.Get(pb.GetReq(jid=running, live=True))
        assert got.job.pid == listed[running].pid

        with pytest.raises(grpc.RpcError) as refused:
            stub.Delete(pb.DeleteReq(jid=running))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.details() == (
            f"job {running} is running: kill it first ('cedana job kill')"
        )
        killed = stub.Kill(pb.KillReq(jid=running)).job
        assert (killed.state, killed.signal, killed.status) == ("killed", 9, "killed (SIGKILL)")
        assert not alive(killed.pid)

        assert stub.Delete(pb.DeleteReq(jid=running)).jid == running
        assert not (daemon.state / "jobs" / running).exists()
        with pytest.raises(grpc.RpcError) as missing:
            stub.Get(pb.GetReq(jid=running))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert missing.value.details() == f"no job {running!r} (see 'cedana ps')"

        with pytest.raises(grpc.RpcError) as no_input:
            attach_with_input = stub.Attach(iter([pb.AttachReq(jid=done, stdin=b"x")]))
            list(attach_with_input)
        assert no_input.value.details() == (
            f"job {done} reads /dev/null: start it with 'cedana exec -i' to send it input"
        )


def test_dump_and_restore_with_progress_events(daemon: Daemon) -> None:
    jid, back = unique_jid("drd"), unique_jid("drr")
    cli = daemon.cli()
    with daemon.client() as stub:
        stub.Run(counter_req(jid, 120))
        cli.wait_log(jid, r"^n \d+", 3)
        events = list(stub.DumpWithProgress(pb.DumpReq(jid=jid, compression="lz4")))
        phases = [e.progress.phase for e in events if e.HasField("progress")]
        assert phases[:2] == ["directory", "connect"]
        assert phases.index("criu_dump") < phases.index("commit") < phases.index("release")
        assert events[-1].HasField("result") and not any(e.HasField("result") for e in events[:-1])
        dumped = events[-1].result
        assert (dumped.job, dumped.job_state, dumped.compression) == (jid, "checkpointed", "lz4")
        assert stub.Get(pb.GetReq(jid=jid)).job.state == "checkpointed"

        listed = stub.ListCheckpoints(pb.ListCheckpointsReq(jid=jid)).checkpoints
        assert [(c.id, c.status, c.path) for c in listed] == [
            (dumped.checkpoint, "committed", dumped.path)
        ]
        inspected = stub.GetCheckpoint(pb.GetCheckpointReq(id=dumped.checkpoint))
        assert inspected.checkpoint.size == dumped.size
        assert inspected.manifest_error.startswith("an archive")

        restored = stub.Restore(pb.RestoreReq(jid=jid, new_jid=back))
        assert (restored.job, restored.checkpoint, restored.state) == (
            back,
            dumped.checkpoint,
            "running",
        )
        assert daemon.proc is not None and ppid(restored.controller_pid) == daemon.proc.pid
        _out, ended = attach(stub, back)
        assert ended.status == "exited (0)"
        combined = [ln for j in (jid, back) for ln in cli.log(j).splitlines()]
        assert combined == [f"n {i}" for i in range(120)] + ["end"]

        gone = stub.DeleteCheckpoint(pb.DeleteCheckpointReq(id=dumped.checkpoint)).checkpoint
        assert gone.id == dumped.checkpoint and not Path(gone.path).exists()
        assert list(stub.ListCheckpoints(pb.ListCheckpointsReq(jid=jid)).checkpoints) == []


# A client that asks for a dump and waits for it (killed by the test meanwhile).
DUMP_CLIENT = """\
import sys, grpc
from cedana_gpu.daemon.proto import daemon_pb2 as pb, daemon_pb2_grpc as pb_grpc
stub = pb_grpc.DaemonStub(grpc.insecure_channel(sys.argv[1]))
for event in stub.DumpWithProgress(pb.DumpReq(jid=sys.argv[2], leave_running=sys.argv[3] == "1")):
    print(event, flush=True)
"""


def _kill_client_at(daemon: Daemon, phase: str, jid: str, leave_running: bool) -> None:
    pause = daemon.hooks / f"dump.{phase}.pause"
    reached = daemon.hooks / f"dump.{phase}.reached"
    for old in daemon.hooks.glob("*.reached"):  # an earlier dump's
        old.unlink()
    pause.touch()
    client = subprocess.Popen(
        [sys.executable, "-c", DUMP_CLIENT, daemon.target, jid, "1" if leave_running else "0"],
        env=daemon.env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(reached.exists, f"the daemon's dump of {jid} to reach {phase}")
    finally:
        client.kill()
        client.wait()
        reached.unlink(missing_ok=True)
        pause.unlink()


def test_a_client_killed_mid_dump_leaves_the_dump_to_the_daemon(daemon: Daemon) -> None:
    ended, kept = unique_jid("drk"), unique_jid("drl")
    cli = daemon.cli()
    with daemon.client() as stub:
        for jid in (ended, kept):
            stub.Run(counter_req(jid, LONG))
            cli.wait_log(jid, r"^n \d+", 2)

        # Killed while CRIU has the job: the daemon completes the dump, the job
        # is checkpointed (not left stopped) and the store lists its checkpoint.
        _kill_client_at(daemon, "criu_dump", ended, leave_running=False)
        wait_for(
            lambda: stub.Get(pb.GetReq(jid=ended)).job.state == "checkpointed",
            f"job {ended} to be checkpointed",
        )
        listed = stub.ListCheckpoints(pb.ListCheckpointsReq(jid=ended)).checkpoints
        assert len(listed) == 1 and Path(listed[0].path).is_dir()

        # With --leave-running, killed after CRIU left it running: it runs on,
        # not stopped, and its checkpoint is complete.
        _kill_client_at(daemon, "write", kept, leave_running=True)
        wait_for(
            lambda: len(stub.ListCheckpoints(pb.ListCheckpointsReq(jid=kept)).checkpoints) == 1,
            f"job {kept}'s checkpoint to be listed",
        )
        job = stub.Get(pb.GetReq(jid=kept)).job
        assert job.state == "running" and alive(job.pid)
        assert stopped_pids(job.pid) == []
        assert store_of(daemon).checkpoints(status="pending") == []


def test_a_restarted_daemon_finds_its_jobs_and_settles_a_dump_it_died_in(
    daemon: Daemon,
) -> None:
    jid = unique_jid("drs")
    cli = daemon.cli()
    with daemon.client() as stub:
        job = stub.Run(counter_req(jid, LONG)).job
        cli.wait_log(jid, r"^n \d+", 2)
    # The daemon dies while CRIU has the job stopped, in the middle of a dump.
    pause, reached = daemon.hooks / "dump.write.pause", daemon.hooks / "dump.write.reached"
    pause.touch()
    dumping = threading.Thread(target=_dump_quietly, args=(daemon, jid), daemon=True)
    dumping.start()
    wait_for(reached.exists, "the dump to reach its write phase")
    daemon.stop(signal.SIGKILL)
    pause.unlink()
    dumping.join(timeout=60)

    # The job outlives the daemon, running again (its controller let it go).
    assert alive(job.controller_pid)
    wait_for(lambda: stopped_pids(job.pid) == [], f"job {jid} to be continued")
    daemon.start()
    with daemon.client() as stub:
        found = stub.Get(pb.GetReq(jid=jid)).job
        assert (found.state, found.pid) == ("running", job.pid)
        # The dump the daemon died in left nothing listed or pending.
        assert list(stub.ListCheckpoints(pb.ListCheckpointsReq(jid=jid)).checkpoints) == []
        assert store_of(daemon).checkpoints(status="pending") == []
        assert not any(
            p.name.endswith(".partial") for p in (daemon.state / "checkpoints" / jid).iterdir()
        )
        # And the new daemon dumps it.
        dumped = stub.Dump(pb.DumpReq(jid=jid, leave_running=True))
        assert dumped.job_state == "running"
        assert stub.Get(pb.GetReq(jid=jid)).job.state == "running"


def _dump_quietly(daemon: Daemon, jid: str) -> None:
    try:
        with daemon.client() as stub:
            stub.Dump(pb.DumpReq(jid=jid))
    except grpc.RpcError:
        pass  # the daemon was killed under it: expected


def test_two_clients_dump_two_jobs_at_once(daemon: Daemon) -> None:
    jids = [unique_jid("drc"), unique_jid("drd")]
    cli = daemon.cli()
    with daemon.client() as stub:
        for jid in jids:
            # A working directory each: CRIU's parasite makes a directory in a
            # job's cwd to mount its /proc, and two dumps at the same instant
            # of jobs sharing a cwd collide there (EEXIST), daemon or not.
            cwd = daemon.tmp / f"cwd-{jid}"
            cwd.mkdir()
            stub.Run(counter_req(jid, LONG, cwd_override=str(cwd)))
            cli.wait_log(jid, r"^n \d+", 2)
    pause = daemon.hooks / "dump.criu_dump.pause"
    pause.touch()
    results: dict[str, Any] = {}

    def dump(jid: str) -> None:
        with daemon.client() as own:  # a client (channel) of its own
            results[jid] = own.Dump(pb.DumpReq(jid=jid, leave_running=True))

    threads = [threading.Thread(target=dump, args=(jid,)) for jid in jids]
    for t in threads:
        t.start()
    # Both dumps are under way in the daemon at the same time: each has its
    # pending checkpoint and waits at the same phase.
    wait_for(
        lambda: {c.jid for c in store_of(daemon).checkpoints(status="pending")} == set(jids),
        "both dumps to be in flight",
    )
    pause.unlink()
    for t in threads:
        t.join(timeout=120)
    assert {jid: results[jid].job for jid in jids} == {jid: jid for jid in jids}
    with daemon.client() as stub:
        for jid in jids:
            listed = stub.ListCheckpoints(pb.ListCheckpointsReq(jid=jid)).checkpoints
            assert [c.id for c in listed] == [results[jid].checkpoint]
            assert stub.Get(pb.GetReq(jid=jid)).job.state == "running"


def test_a_second_dump_of_a_job_being_dumped_is_refused(daemon: Daemon) -> None:
    jid = unique_jid("drb")
    cli = daemon.cli()
    with daemon.client() as stub:
        stub.Run(counter_req(jid, LONG))
        cli.wait_log(jid, r"^n \d+", 2)
    pause, reached = daemon.hooks / "dump.criu_dump.pause", daemon.hooks / "dump.criu_dump.reached"
    pause.touch()
    first = threading.Thread(target=_dump_quietly, args=(daemon, jid))
    first.start()
    try:
        wait_for(reached.exists, "the first dump to be under way")
        with daemon.client() as stub, pytest.raises(grpc.RpcError) as refused:
            stub.Dump(pb.DumpReq(jid=jid))
        assert refused.value.details() == (
            f"job {jid} is busy (a dump in the daemon): try again later"
        )
    finally:
        pause.unlink()
        first.join(timeout=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tcp_needs_the_token(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"
    refused = subprocess.run(
        [sys.executable, "-m", "cedana_gpu", "daemon", "start"],
        env=Daemon(tmp_path / "a", CEDANA_PROTOCOL="tcp", CEDANA_ADDRESS=address).env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "cedana: error: protocol tcp needs a token: set auth.token (or CEDANA_AUTH_TOKEN)"
        )
    )

    (tmp_path / "b").mkdir()
    d = Daemon(
        tmp_path / "b", CEDANA_PROTOCOL="tcp", CEDANA_ADDRESS=address, CEDANA_AUTH_TOKEN="s3cret"
    ).start()
    try:
        with d.client() as stub:
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.RpcError) as denied:
                    stub.List(pb.ListReq(), metadata=metadata)
                assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert (denied.value.details() or "").startswith("no valid token")
            ok = stub.List(pb.ListReq(), metadata=(("authorization", "Bearer s3cret"),))
            assert list(ok.jobs) == []
        # The CLI sends the configured token.
        cli = d.cli()
        assert cli.ok("daemon", "check").startswith("cedana daemon")
        wrong = cli("ps", CEDANA_AUTH_TOKEN="nope")
        assert wrong.returncode == 1
        assert wrong.stderr.startswith(f"cedana: error: the daemon at {address} refused us")
    finally:
        d.stop()


def test_periodic_checkpoints_keep_the_newest_and_survive_a_failed_one(daemon: Daemon) -> None:
    jid = unique_jid("drp")
    # The first periodic dump fails (its manifest cannot be written); the
    # next ones go on.
    (daemon.hooks / "dump.write.fault").write_text("ENOSPC")
    seen: list[str] = []
    with daemon.client() as stub:
        job = stub.Run(counter_req(jid, LONG, policy=pb.CheckpointPolicy(every=0.2, keep=2))).job
        assert (job.policy.every, job.policy.keep) == (0.2, 2)

        def enough() -> bool:
            listed = stub.ListCheckpoints(pb.ListCheckpointsReq(jid=jid)).checkpoints
            # One dump at a time per job: at most keep + 1 between a commit and its pruning.
            assert len(listed) <= 3
            seen.extend(c.id for c in listed if c.id not in seen)
            return len(seen) >= 4

        wait_for(enough, "four periodic checkpoints")
        running = stub.Get(pb.GetReq(jid=jid)).job
        assert running.state == "running" and stopped_pids(running.pid) == []
    assert not (daemon.hooks / "dump.write.fault").exists()  # the fault was met
    # Stopping the daemon lets the dump under way finish and prune.
    daemon.stop()
    assert f"periodic checkpoint of job {jid} failed" in daemon.output()
    left = [c.id for c in store_of(daemon).checkpoints(jid)]
    assert len(left) == 2
    assert all(old not in left for old in seen[:-3])
    # The job's restore takes the newest.
    cli = daemon.cli()
    cli.ok("--no-server", "job", "kill", jid)
    restored = cli.json("--no-server", "restore", "job", jid, "--jid", unique_jid("drq"))
    assert restored["checkpoint"] == left[-1]
    cli.ok("--no-server", "job", "kill", restored["job"])


def test_setting_and_clearing_a_policy_on_a_running_job(daemon: Daemon) -> None:
    jid = unique_jid("drx")
    with daemon.client() as stub:
        stub.Run(counter_req(jid, LONG))
        set_ = stub.SetCheckpointPolicy(
            pb.SetCheckpointPolicyReq(jid=jid, policy=pb.CheckpointPolicy(every=3600, keep=1))
        )
        assert (set_.job.policy.every, set_.job.policy.keep) == (3600, 1)
        assert store_of(daemon).policies() == {jid: (3600.0, 1)}
        stub.SetCheckpointPolicy(pb.SetCheckpointPolicyReq(jid=jid, policy=pb.CheckpointPolicy()))
        assert store_of(daemon).policies() == {}
        assert not stub.Get(pb.GetReq(jid=jid)).job.HasField("policy") or (
            stub.Get(pb.GetReq(jid=jid)).job.policy.every == 0
        )


def test_a_gpu_dump_reports_its_bytes(daemon: Daemon) -> None:
    jid = unique_jid("drg")
    train = [sys.executable, "samples/train_mlp.py", "--steps", "100000", "--print-every", "1"]
    cli = daemon.cli()
    with daemon.client() as stub:
        stub.Run(run_req(jid, *train, "--sleep-per-step", "0.05", gpu=True, gpu_driver="fake"))
        cli.wait_log(jid, r"^step \d+ loss", 2)
        # Held after the GPU dump, the daemon's poll of the controller sees its counts.
        pause = daemon.hooks / "dump.criu_dump.pause"
        pause.touch()
        # Without counts the test fails instead of hanging.
        guard = threading.Timer(WAIT, lambda: pause.unlink(missing_ok=True))
        guard.start()
        stream = stub.DumpWithProgress(pb.DumpReq(jid=jid, leave_running=True))
        counted: list[Any] = []
        for event in stream:
            if event.HasField("progress") and event.progress.total:
                counted.append(event.progress)
                pause.unlink(missing_ok=True)
            if event.HasField("result"):
                result = event.result
        pause.unlink(missing_ok=True)
        guard.cancel()
    assert counted, "no byte counts"
    last = counted[-1]
    assert last.phase and 0 < last.done <= last.total
    assert result.gpu_bytes > 0 and result.job_state == "running"


def test_freeze_holds_a_gpu_job_until_unfreeze(daemon: Daemon) -> None:
    jid = unique_jid("drz")
    train = [sys.executable, "samples/train_mlp.py", "--steps", "100000", "--print-every", "1"]
    cli = daemon.cli()
    with daemon.client() as stub:
        stub.Run(run_req(jid, *train, "--sleep-per-step", "0.02", gpu=True, gpu_driver="fake"))
        cli.wait_log(jid, r"^step \d+ loss", 2)

        def frozen() -> bool:
            live = json.loads(stub.Get(pb.GetReq(jid=jid, live=True)).live_json)
            return bool(live["frozen"])

        stub.Freeze(pb.FreezeReq(jid=jid))
        assert frozen()
        steps = cli.log(jid).count("step ")
        stub.Unfreeze(pb.UnfreezeReq(jid=jid))
        assert not frozen()
        cli.wait_log(jid, r"^step \d+ loss", steps + 2)
        with pytest.raises(grpc.RpcError) as twice:
            stub.Unfreeze(pb.UnfreezeReq(jid=jid))
        assert twice.value.details() == f"job {jid} is not frozen by this daemon"


def test_a_restarted_daemon_takes_up_the_periodic_policies(daemon: Daemon) -> None:
    jid = unique_jid("dru")
    with daemon.client() as stub:
        stub.Run(counter_req(jid, LONG, policy=pb.CheckpointPolicy(every=0.3, keep=1)))
    daemon.stop(signal.SIGKILL)
    before = {c.id for c in store_of(daemon).checkpoints(jid)}
    daemon.start()
    assert "1 job(s) running, 1 periodic policies" in daemon.output()
    with daemon.client() as stub:
        wait_for(
            lambda: (
                {c.id for c in stub.ListCheckpoints(pb.ListCheckpointsReq(jid=jid)).checkpoints}
                - before
            ),
            "a periodic checkpoint by the new daemon",
        )
        assert stub.Get(pb.GetReq(jid=jid)).job.policy.every == 0.3
