"""Checkpoint/restore of jobs without a GPU (CRIU alone), persistent mounts, the CLI around it.

Quick cases: a plain job's dump and restore go through the same orchestration
(control socket, manifest, archive, store) as a GPU job's, minus the GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cr_helpers import (
    Cedana,
    alive,
    assert_one_line_error,
    needs_root,
    segment_leftovers,
    unique_jid,
    wait_for,
)

pytestmark = [needs_root, pytest.mark.usefixtures("native_parts")]

# Counts to N; its state lives both in the shell and in the persistent tmpfs.
COUNTER = """\
n="$1"; dir="$2"
i=$(cat "$dir/n" 2>/dev/null || echo 0)
while [ "$i" -lt "$n" ]; do
    echo "$i $(cat "$dir/n" 2>/dev/null || echo none)"
    i=$((i + 1))
    echo "$i" > "$dir/n"
    sleep 0.03
done
echo "end"
"""


def counter(c: Cedana, tmp_path: Path, jid: str, n: int) -> Path:
    script = tmp_path / "counter.sh"
    script.write_text(COUNTER)
    mount = tmp_path / "pm"
    c.ok("exec", "--jid", jid, "--persistent-mount", str(mount), "--", "sh", str(script),
         str(n), str(mount))  # fmt: skip
    c.wait_log(jid, r"^\d+ ", 3)
    return mount


def expected_counter(n: int) -> list[str]:
    return [f"{i} {i if i else 'none'}" for i in range(n)] + ["end"]


def numbers(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("cedana")]


def test_plain_job_dump_restore_cycles_with_a_persistent_mount(
    cedana: Cedana, tmp_path: Path
) -> None:
    jids = [unique_jid(f"pl{i}") for i in range(4)]
    # Long enough (9 s) to outlive three dumps and two restores on a loaded
    # machine: with 60 counts (1.8 s) the job sometimes finished during the
    # last dump, which then failed, rightly, with "the job has ended".
    mount = counter(cedana, tmp_path, jids[0], 300)
    for i, compression in enumerate(("none", "lz4", "tar")):
        if i:
            cedana.wait_log(jids[i], r"^\d+ ", 2)
        dumped = cedana.dump(jids[i], "--compression", compression)
        assert dumped["gpu_bytes"] == 0
        assert cedana.job(jids[i])["status"] == "checkpointed"
        # The tmpfs is private to the job: on the host the directory is empty,
        # and removing it changes nothing for the restored job.
        assert not mount.exists() or list(mount.iterdir()) == []
        if mount.exists():
            mount.rmdir()
        cedana.restore(jids[i], "--jid", jids[i + 1])
    job = cedana.wait_final(jids[3])
    assert job["status"] == "exited (0)", cedana.controller_log(jids[3])
    assert job["generation"] == 4
    combined = [ln for jid in jids for ln in numbers(cedana.log(jid))]
    assert combined == expected_counter(300)
    assert segment_leftovers(*jids) == []
    for jid in jids:
        assert not alive(cedana.job(jid)["controller_pid"])


def test_one_checkpoint_restored_twice_at_once(cedana: Cedana, tmp_path: Path) -> None:
    jid, a, b = unique_jid("tw"), unique_jid("twa"), unique_jid("twb")
    counter(cedana, tmp_path, jid, 40)
    cedana.dump(jid, "--leave-running", "--compression", "gzip")
    cedana.restore(jid, "--jid", a)
    cedana.restore(jid, "--jid", b)
    for j in (jid, a, b):
        assert cedana.wait_final(j)["status"] == "exited (0)"
    full = expected_counter(40)
    assert numbers(cedana.log(jid)) == full
    for j in (a, b):
        rest = numbers(cedana.log(j))
        assert rest and rest == full[-len(rest) :]
    assert segment_leftovers(jid, a, b) == []


def test_dump_process_by_pid_and_attach(cedana: Cedana, tmp_path: Path) -> None:
    jid, new = unique_jid("pp"), unique_jid("ppr")
    # 100 counts (3 s): with 30 the job sometimes ended before a loaded
    # machine got to dump it.
    counter(cedana, tmp_path, jid, 100)
    pid = cedana.job(jid)["pid"]
    dumped = cedana.json("dump", "process", str(pid))
    assert dumped["job"] == jid
    out = cedana("restore", "job", jid, "--jid", new, "--attach")
    assert out.returncode == 0, out.stderr
    assert numbers(cedana.log(jid)) + numbers(out.stdout) == expected_counter(100)


def test_persistent_mounts_from_the_environment(cedana: Cedana, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    jid = unique_jid("env")
    cedana.ok(
        "exec", "--jid", jid, "--persistent-mount", str(a), "--",
        "sh", "-c", f"touch {a}/x {b}/y && grep -c ' {tmp_path}/[ab] ' /proc/self/mountinfo; "
        "sleep 60",
        CEDANA_PERSISTENT_MOUNTS=f"{b}",
    )  # fmt: skip
    assert cedana.job(jid)["persistent_mounts"] == [str(a), str(b)]
    wait_for(lambda: cedana.log(jid).strip() == "2", "the job to see both mounts")
    assert list(a.iterdir()) == [] and list(b.iterdir()) == []
    cedana.ok("job", "kill", jid)
    line = assert_one_line_error(cedana("exec", "--persistent-mount", "rel/dir", "--", "true"))
    assert "absolute" in line
    line = assert_one_line_error(cedana("exec", "--persistent-mount", "/dev/shm/x", "--", "true"))
    assert "/dev/shm" in line


def test_checkpoints_of_an_unknown_job(cedana: Cedana) -> None:
    assert "no job 'nope'" in assert_one_line_error(cedana("job", "checkpoints", "nope"))
