"""A dump's durability, observed in its system calls; signing and bounds end to end.

The claim (docs/reliability.md): when ``cedana dump job`` has killed the
job, the checkpoint and its record are on disk. Checked by running the dump
under ``strace -f`` and reading the order of the calls that matter, not by
reading the code:

1. every file and every directory of the checkpoint is fsynced while it
   still has its temporary name;
2. then the rename to the final name;
3. then the directory that holds it is fsynced (the rename is on disk);
4. then the job store's write-ahead log is synced (the record of it);
5. and only then is the job killed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cr_helpers import REPO, Cedana, assert_one_line_error, needs_root, unique_jid, wait_for

pytestmark = [needs_root, pytest.mark.usefixtures("native_parts")]

TRAIN = ("samples/train_mlp.py", "--steps", "400", "--print-every", "1", "--sleep-per-step", "0.05")

STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(
    STRACE is None, reason="strace is not installed (.ci/run installs it)"
)

# 1234  fsync(7</path/to/file>) = 0       (-y prints the path of each descriptor)
# Calls of threads that interleave are split in two lines:
# 1234  fsync(7</path/to/file> <unfinished ...>
# 1234  <... fsync resumed>)              = 0
CALL = re.compile(r"^(?P<pid>\d+)\s+(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+)")
UNFINISHED = re.compile(r"^(?P<pid>\d+)\s+(?P<name>\w+)\((?P<args>.*) <unfinished \.\.\.>$")
RESUMED = re.compile(
    r"^(?P<pid>\d+)\s+<\.\.\. (?P<name>\w+) resumed>(?P<args>.*)\)\s+=\s+(?P<ret>-?\d+)"
)
FD_PATH = re.compile(r"<(?P<path>[^>]*)>")


@dataclass
class Call:
    index: int
    name: str
    args: str
    ret: int

    def path(self) -> str:
        m = FD_PATH.search(self.args)
        return m["path"] if m else ""


def trace_calls(text: str) -> list[Call]:
    """The calls in the order they *returned* (what "synced before" means)."""
    out: list[Call] = []
    started: dict[str, str] = {}  # pid -> args of its unfinished call
    for line in text.splitlines():
        if m := CALL.match(line):
            out.append(Call(len(out), m["name"], m["args"], int(m["ret"])))
        elif m := UNFINISHED.match(line):
            started[m["pid"]] = m["args"]
        elif m := RESUMED.match(line):
            args = started.pop(m["pid"], "") + m["args"]
            out.append(Call(len(out), m["name"], args, int(m["ret"])))
    return out


def first(calls: list[Call], pred: object, what: str, after: int = -1) -> Call:
    for c in calls:
        if c.index > after and pred(c):  # type: ignore[operator]
            return c
    raise AssertionError(f"no {what} after call {after}")


def traced_dump(cedana: Cedana, jid: str, trace: Path, *options: str) -> dict[str, object]:
    import json

    assert STRACE is not None
    proc = subprocess.run(
        [
            STRACE, "-f", "-y", "-qq", "-o", str(trace),
            "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,kill",
            sys.executable, "-m", "cedana_gpu", "dump", "job", jid, "--output", "json", *options,
        ],
        env=cedana.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


@needs_strace
@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_a_dump_is_on_disk_before_the_job_dies(
    cedana: Cedana, tmp_path: Path, compression: str
) -> None:
    jid = unique_jid("dur")
    cedana.exec_gpu(jid, sys.executable, *TRAIN)
    cedana.wait_log(jid, r"^step ", 3)
    pid = int(cedana.job(jid)["pid"])
    trace = tmp_path / "trace"
    doc = traced_dump(cedana, jid, trace, "--compression", compression, "--stream", "2")
    final = Path(str(doc["path"]))
    calls = trace_calls(trace.read_text())
    partial = final.parent / f".{final.name.removesuffix('.tar')}.partial"
    staged = final.parent / f".{final.name}.partial" if compression != "none" else partial

    rename = first(
        calls,
        lambda c: c.name.startswith("rename") and str(staged) in c.args and str(final) in c.args,
        f"rename of {staged} to {final}",
    )
    synced = {
        c.path() for c in calls if c.name in ("fsync", "fdatasync") and c.index < rename.index
    }
    # 1. Everything it holds was synced under the temporary name.
    if compression == "none":
        expected = {str(partial)} | {str(partial / p.relative_to(final)) for p in final.rglob("*")}
    else:
        expected = {str(staged)}
    assert expected, "an empty checkpoint?"
    missing = sorted(expected - synced)
    assert not missing, f"not synced before the rename: {missing[:10]}"
    # 3. Then the directory holding it.
    parent_sync = first(
        calls,
        lambda c: c.name == "fsync" and c.path() == str(final.parent),
        f"fsync of {final.parent}",
        after=rename.index,
    )
    # 4. Then the store's record (SQLite syncs its write-ahead log at commit).
    store_sync = first(
        calls,
        lambda c: c.name in ("fsync", "fdatasync") and c.path().endswith("jobs.db-wal"),
        "sync of the job store's log",
        after=parent_sync.index,
    )
    # 5. Only then the job's end.
    kill = first(
        calls,
        lambda c: c.name == "kill" and re.match(rf"-?{pid}, SIGKILL", c.args) is not None,
        f"SIGKILL of job pid {pid}",
    )
    assert kill.index > store_sync.index, (kill, store_sync)
    assert not [c for c in calls if c.name in ("fsync", "fdatasync") and c.ret != 0]
    # And what was made durable restores, leaving the checkpoint as it was
    # (CRIU's own restore output goes to the job's directory).
    before = sorted(p.relative_to(final) for p in final.rglob("*")) if final.is_dir() else []
    restored = cedana.restore(jid)
    cedana.wait_final(restored["job"])
    assert cedana.job(restored["job"])["state"] == "exited"
    if final.is_dir():
        assert sorted(p.relative_to(final) for p in final.rglob("*")) == before


def test_signed_dump_restores_only_with_its_key(cedana: Cedana, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32).hex().encode())
    key.chmod(0o600)
    other = tmp_path / "other"
    other.write_bytes(os.urandom(32).hex().encode())
    other.chmod(0o600)
    jid = unique_jid("sig")
    cedana.exec_gpu(jid, sys.executable, *TRAIN)
    cedana.wait_log(jid, r"^step ", 2)
    signed = cedana.dump(jid, "--leave-running", "--signing-key", str(key))
    unsigned = cedana.dump(jid, "--leave-running", "--dir", str(tmp_path / "plain"))
    cedana.ok("job", "kill", jid)

    refused = cedana("restore", "job", "--path", str(signed["path"]), "--signing-key", str(other))
    line = assert_one_line_error(refused)
    assert "signed with another key" in line, line
    # The environment names the key as well as the flag does.
    refused = cedana(
        "restore", "job", "--path", str(unsigned["path"]), CEDANA_CHECKPOINT_SIGNING_KEY=str(key)
    )
    assert "is not signed and a signing key is configured" in assert_one_line_error(refused)
    before = set(cedana.ps())
    assert before == {jid}, "a refused restore started a job"

    ok = cedana.restore("--path", str(signed["path"]), "--signing-key", str(key))
    assert str(ok["signature"]).startswith("signed, verified")
    cedana.ok("job", "kill", str(ok["job"]))
    ok = cedana.restore(
        "--path", str(unsigned["path"]), "--allow-unsigned", CEDANA_CHECKPOINT_SIGNING_KEY=str(key)
    )
    assert "accepted" in str(ok["signature"])
    cedana.ok("job", "kill", str(ok["job"]))


def test_clear_refusals(cedana: Cedana, tmp_path: Path) -> None:
    """Bad requests get one line that says what to do, and the job runs on."""
    jid = unique_jid("bnd")
    cedana.exec_gpu(jid, sys.executable, *TRAIN)
    cedana.wait_log(jid, r"^step ", 1)
    line = assert_one_line_error(cedana("dump", "job", jid, "--stream", "65"))
    assert "--stream must be between 1 and 64" in line
    partial = tmp_path / ".x.partial"
    partial.mkdir()
    line = assert_one_line_error(cedana("restore", "job", "--path", str(partial)))
    assert "unfinished checkpoint" in line
    a_file = tmp_path / "file"
    a_file.write_text("")
    line = assert_one_line_error(cedana("dump", "job", jid, "--dir", str(a_file)))
    assert "is a file, not a directory" in line and "Errno" not in line
    # A job someone stopped: not a freeze timeout, but what to do.
    pid = int(cedana.job(jid)["pid"])
    stopped = tree(pid)[-1]  # the training process (below an init, if it has one)
    os.kill(stopped, signal.SIGSTOP)
    try:
        line = assert_one_line_error(cedana("dump", "job", jid))
        assert f"is stopped (process {stopped} is in state T)" in line
        assert f"kill -CONT {stopped}" in line
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert cedana.job(jid)["state"] == "running"
    assert cedana.json("job", "checkpoints", jid) == []


def tree(pid: int) -> list[int]:
    from cedana_gpu.jobs.processes import tree_pids

    return tree_pids(pid)


@pytest.mark.parametrize("phase", ["criu_dump", "write"])
def test_a_job_killed_during_its_dump(cedana: Cedana, tmp_path: Path, phase: str) -> None:
    """The job itself dies while it is dumped (OOM killer, an operator): one line
    says it ended during the dump, and whether CRIU had it whole before: then
    that checkpoint is kept and listed; else nothing is listed or left."""
    from cedana_gpu.cr.pipeline import PHASE_HOOK_ENV
    from cedana_gpu.jobs.processes import signal_job

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / f"dump.{phase}.pause").touch()
    jid = unique_jid("kil")
    cedana.exec_gpu(jid, sys.executable, *TRAIN)
    cedana.wait_log(jid, r"^step ", 1)
    job = cedana.job(jid)
    ckdir = tmp_path / "ck"
    client = subprocess.Popen(
        [sys.executable, "-m", "cedana_gpu", "dump", "job", jid, "--dir", str(ckdir)],
        env=cedana.env(**{PHASE_HOOK_ENV: str(hook)}), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    reached = hook / f"dump.{phase}.reached"
    wait_for(lambda: reached.exists() or client.poll() is not None, f"the dump to reach {phase}")
    assert client.poll() is None, client.communicate()
    signal_job(int(job["pid"]), bool(job["pid_namespace"]), signal.SIGKILL)
    wait_for(lambda: cedana.job(jid)["state"] != "running", f"job {jid}'s end to be recorded")
    (hook / f"dump.{phase}.pause").unlink()
    _out, err = client.communicate(timeout=600)
    line = assert_one_line_error(subprocess.CompletedProcess([], client.returncode, "", err))
    assert f"job {jid} ended during the dump (killed (SIGKILL))" in line, line
    listed = cedana.json("job", "checkpoints", jid)
    if phase == "criu_dump":  # killed before CRIU had it
        assert "no checkpoint was made" in line, line
        assert listed == []
        assert not ckdir.exists() or not any(ckdir.iterdir()), list(ckdir.iterdir())
    else:  # CRIU had it whole, stopped, before it was killed
        assert f"but checkpoint {listed[0]['id']} was complete" in line, line
        assert [p.name for p in ckdir.iterdir()] == [listed[0]["id"]]


def test_ctrl_c_during_a_dump_says_what_became_of_the_job(cedana: Cedana, tmp_path: Path) -> None:
    """Ctrl-C unwinds a dump like SIGTERM and ends in the same one line."""
    from cedana_gpu.cr.pipeline import PHASE_HOOK_ENV

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "dump.criu_dump.pause").touch()
    jid = unique_jid("int")
    cedana.exec_gpu(jid, sys.executable, *TRAIN)
    cedana.wait_log(jid, r"^step ", 1)
    client = subprocess.Popen(
        [sys.executable, "-m", "cedana_gpu", "dump", "job", jid],
        env=cedana.env(**{PHASE_HOOK_ENV: str(hook)}), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint,
    )  # fmt: skip
    reached = hook / "dump.criu_dump.reached"
    wait_for(lambda: reached.exists() or client.poll() is not None, "the dump to reach criu_dump")
    client.send_signal(signal.SIGINT)
    _out, err = client.communicate(timeout=600)
    line = assert_one_line_error(subprocess.CompletedProcess([], client.returncode, "", err), 130)
    assert f"interrupted by signal SIGINT; job {jid} runs on; no checkpoint was made" in line
    steps = sum(1 for ln in cedana.log(jid).splitlines() if ln.startswith("step "))
    cedana.wait_log(jid, r"^step ", steps + 3)  # it makes progress: not frozen, not stopped
    assert cedana.job(jid)["state"] == "running"
    assert cedana.json("job", "checkpoints", jid) == []


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("damage", ["shard byte", "image truncated"])
def test_verify_catches_what_was_not_written_as_meant(
    cedana: Cedana, tmp_path: Path, damage: str
) -> None:
    """Bytes changed between write and commit are caught by the read-back: the
    dump fails in one line, the job runs on, nothing is listed or left."""
    from cedana_gpu.cr.pipeline import PHASE_HOOK_ENV

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "dump.verify.pause").touch()
    jid = unique_jid("ver")
    cedana.exec_gpu(jid, sys.executable, *TRAIN)
    cedana.wait_log(jid, r"^step ", 1)
    ckdir = tmp_path / "ck"
    client = subprocess.Popen(
        [sys.executable, "-m", "cedana_gpu", "dump", "job", jid, "--leave-running",
         "--dir", str(ckdir)],
        env=cedana.env(**{PHASE_HOOK_ENV: str(hook)}), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    reached = hook / "dump.verify.reached"
    wait_for(lambda: reached.exists() or client.poll() is not None, "the dump to reach verify")
    [partial] = list(ckdir.glob(".*.partial"))
    if damage == "shard byte":
        shard = partial / "gpu" / "img-0"
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0x40
        shard.write_bytes(bytes(data))
    else:
        image = max((partial / "criu").glob("pages-*.img"), key=lambda p: p.stat().st_size)
        with open(image, "r+b") as f:
            f.truncate(image.stat().st_size - 1)
    (hook / "dump.verify.pause").unlink()
    _out, err = client.communicate(timeout=600)
    line = assert_one_line_error(subprocess.CompletedProcess([], client.returncode, "", err))
    assert "did not read back as written" in line and f"job {jid} runs on" in line, line
    assert cedana.job(jid)["state"] == "running"
    assert cedana.json("job", "checkpoints", jid) == []
    assert list(ckdir.iterdir()) == []
