"""The CLI through the daemon and in-process (``--no-server``): the same output
and the same exit status, verb by verb; and what only the daemon can do."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cr_helpers import (
    assert_one_line_error,
    checksum_line,
    needs_root,
    run_direct,
    unique_jid,
    without_notes,
)
from daemon_helpers import COUNTER, Daemon, DaemonCedana, ppid, running

pytestmark = [needs_root, pytest.mark.usefixtures("native_parts")]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running(Daemon(tmp_path)) as d:
        yield d


def same(a: subprocess.CompletedProcess[str], b: subprocess.CompletedProcess[str]) -> None:
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)


def both(cli: DaemonCedana, *args: str) -> subprocess.CompletedProcess[str]:
    """``cedana ARGS`` through the daemon and in-process: the same; the result."""
    routed = cli(*args)
    local = cli("--no-server", *args)
    same(routed, local)
    return routed


def counter(cli: DaemonCedana, jid: str, n: int, *flags: str) -> subprocess.CompletedProcess[str]:
    return cli(*flags, "exec", "--jid", jid, "--", "sh", "-c", COUNTER, "counter", str(n))


def test_every_verb_prints_the_same_either_way(daemon: Daemon) -> None:
    cli = daemon.cli()
    # exec --attach: the job's output and its exit status.
    script = "echo out; echo err >&2; exit 3"
    attached = unique_jid("dca")
    routed = cli("exec", "--jid", attached, "--attach", "--", "sh", "-c", script)
    local = cli("--no-server", "exec", "--jid", unique_jid("dcb"), "--attach", "--",
                "sh", "-c", script)  # fmt: skip
    same(routed, local)
    assert (routed.returncode, routed.stdout) == (3, "out\nerr\n")
    # Attaching to it later gives the same, either way.
    same(cli("job", "attach", attached), routed)
    same(cli("--no-server", "job", "attach", attached), routed)

    # A job started through the daemon is the daemon's (its controller's parent).
    running = unique_jid("dcr")
    assert counter(cli, running, 100_000).stdout == f"{running}\n"
    controller = cli.job(running)["controller_pid"]
    assert daemon.proc is not None and ppid(controller) == daemon.proc.pid
    cli.wait_log(running, r"^n \d+", 2)
    dumped = cli.json("dump", "job", running, "--compression", "tar")
    assert dumped["job_state"] == "checkpointed"
    cid = dumped["checkpoint"]

    for args in (
        ("ps",),
        ("ps", "-o", "json"),
        ("job", "inspect", running),
        ("job", "checkpoints", running),
        ("job", "checkpoints", running, "-o", "json"),
        ("checkpoint", "list"),
        ("checkpoint", "list", running, "-o", "json"),
        ("checkpoint", "inspect", cid),
    ):
        assert both(cli, *args).returncode == 0, args
    for args in (
        ("job", "kill", "nosuch"),
        ("job", "kill", running),
        ("job", "delete", "nosuch"),
        ("dump", "job", running),
        ("restore", "job", "nosuch"),
        ("checkpoint", "delete", "nosuch"),
        ("exec", "--", "/nonexistent/program"),
    ):
        assert_one_line_error(both(cli, *args))
    # Only the daemon can hold a job frozen; in-process says so.
    assert "needs the daemon" in assert_one_line_error(cli("--no-server", "job", "freeze", running))


def test_a_dump_reports_the_same_either_way(daemon: Daemon) -> None:
    cli = daemon.cli()
    jids = [unique_jid("dcd"), unique_jid("dce")]
    for jid in jids:
        counter(cli, jid, 100_000)
        cli.wait_log(jid, r"^n \d+", 2)
    routed = cli("dump", "job", jids[0], "--leave-running")
    local = cli("--no-server", "dump", "job", jids[1], "--leave-running")
    assert (routed.returncode, routed.stderr) == (local.returncode, local.stderr) == (0, "")

    def shape(text: str, jid: str) -> list[str]:
        # The same lines, but for the job's id and what was measured.
        return [ln.replace(jid, "J").split(":")[0].split()[0] for ln in text.splitlines()]

    assert shape(routed.stdout, jids[0]) == shape(local.stdout, jids[1])
    docs = [
        cli.json("dump", "job", jids[0], "--leave-running"),
        cli.json("--no-server", "dump", "job", jids[1], "--leave-running"),
    ]
    assert list(docs[0]) == list(docs[1])
    kept = ("compression", "streams", "job_state", "leave_running", "gpu_bytes")
    assert [{k: d[k] for k in kept} for d in docs] == [
        {"compression": "none", "streams": 1, "job_state": "running", "leave_running": True,
         "gpu_bytes": 0}
    ] * 2  # fmt: skip


def test_the_configured_dump_options_apply_either_way(daemon: Daemon) -> None:
    cli = daemon.cli()
    jid = unique_jid("dcf")
    counter(cli, jid, 100_000)
    cli.wait_log(jid, r"^n \d+", 2)
    env = {"CEDANA_CHECKPOINT_COMPRESSION": "tar", "CEDANA_CRIU_LEAVE_RUNNING": "true"}
    by_env = cli.json("dump", "job", jid, **env)
    assert (by_env["compression"], by_env["leave_running"]) == ("tar", True)
    by_flag = cli.json("dump", "job", jid, "--compression", "lz4", **env)
    assert by_flag["compression"] == "lz4"
    by_file = cli.json("--no-server", "dump", "job", jid, "--leave-running",
                       CEDANA_CHECKPOINT_STREAM="3")  # fmt: skip
    assert by_file["streams"] == 3


def test_what_needs_the_daemon_says_so_without_one(daemon: Daemon) -> None:
    cli = daemon.cli()
    out = cli("--no-server", "exec", "--checkpoint-every", "1m", "--", "true")
    assert assert_one_line_error(out) == (
        "cedana: error: periodic checkpoints (--checkpoint-every) need the daemon: start it "
        "with 'cedana daemon start'"
    )
    # Through the daemon the policy is set and shown.
    jid = unique_jid("dcp")
    cli.ok("exec", "--jid", jid, "--checkpoint-every", "1h", "--keep", "2", "--",
           "sh", "-c", COUNTER, "counter", "100000")  # fmt: skip
    assert json.loads(cli.ok("job", "inspect", jid))["policy"] == {"every": 3600.0, "keep": 2}
    assert cli.ok("job", "policy", jid, "--checkpoint-every", "0") == (
        f"job {jid}: no periodic checkpoints\n"
    )


def test_check_through_the_daemon(daemon: Daemon) -> None:
    cli = daemon.cli()
    out = cli("check", "-o", "json")
    found = {r["name"]: r for r in json.loads(out.stdout)}
    assert found["daemon"]["status"] == "OK"
    assert found["root"]["status"] == "OK"
    assert found["criu check"]["status"] == "OK", found["criu check"]
    assert found["fake driver"]["status"] == "OK"
    assert out.returncode == (1 if any(r["status"] == "FAIL" for r in found.values()) else 0)
    text = cli("health")
    assert text.returncode == out.returncode
    lines = text.stdout.splitlines()
    assert len(lines) == len(found)
    assert all(ln.split()[0] in ("OK", "WARN", "FAIL") for ln in lines)
    alone = cli("--no-server", "check", "-o", "json")
    assert {r["name"]: r["status"] for r in json.loads(alone.stdout)}["daemon"] == "OK"


def test_a_gpu_job_dumped_and_restored_through_the_daemon(daemon: Daemon) -> None:
    train = ("samples/train_mlp.py", "--steps", "120", "--print-every", "1")
    expected = list(run_direct(*train))
    cli = daemon.cli()
    jid, back = unique_jid("dcg"), unique_jid("dch")
    cli.exec_gpu(jid, sys.executable, *train, "--sleep-per-step", "0.05")
    assert daemon.proc is not None
    assert ppid(cli.job(jid)["controller_pid"]) == daemon.proc.pid
    cli.wait_log(jid, r"^step \d+ loss", 3)
    dumped = cli.dump(jid, "--compression", "lz4", "--stream", "2")
    assert dumped["gpu_bytes"] > 0 and dumped["job_state"] == "checkpointed"
    restored = cli.restore(jid, "--jid", back)
    assert ppid(restored["controller_pid"]) == daemon.proc.pid
    assert cli.wait_final(back)["status"] == "exited (0)", cli.controller_log(back)
    combined = without_notes(cli.log(jid)) + without_notes(cli.log(back))
    assert combined == expected
    assert checksum_line(combined) == checksum_line(expected)
