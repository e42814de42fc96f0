"""The host's mounts that CRIU cannot dump (virtiofs, nfs, ramfs...) travel as
external mounts: found in the job's mountinfo, named to CRIU on dump,
recorded in the manifest, bound from the same path on restore
(cedana_gpu/cr/host_mounts.py). Found on the H200 machines, whose driver
libraries are a virtiofs mount at /usr/local/nvidia: every dump failed there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cr_helpers import REPO, needs_root

from cedana_gpu.cr import host_mounts

MOUNTINFO = r"""22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw
24 22 0:5 / /dev rw shared:3 - devtmpfs udev rw,size=1k
25 24 0:22 / /dev/shm rw shared:4 - tmpfs tmpfs rw
26 22 0:40 / /usr/local/nvidia ro,relatime shared:5 - virtiofs nvidia ro
27 22 0:41 / /mnt/my\040data rw shared:6 - nfs4 srv:/x rw
28 22 0:42 / /sys/fs/cgroup rw shared:7 - cgroup2 cgroup2 rw
29 22 0:43 / /home/u/remote rw shared:8 - fuse.sshfs u@h:/ rw
30 22 254:2 / /data rw shared:9 - ext4 /dev/vdb rw
31 22 0:44 / /tmp/persist rw - tmpfs tmpfs rw
"""


def test_mountinfo_is_parsed_with_its_escapes() -> None:
    mounts = host_mounts.parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts][:5] == [
        "/", "/proc", "/dev", "/dev/shm", "/usr/local/nvidia",
    ]  # fmt: skip
    assert mounts[5] == host_mounts.Mount("/mnt/my data", "nfs4")


def test_only_filesystems_criu_cannot_dump_are_external() -> None:
    found = host_mounts.foreign(host_mounts.parse_mountinfo(MOUNTINFO), frozenset({"/dev/shm"}))
    # Not the root (ext4, CRIU takes it as given with --root /), not what CRIU
    # dumps itself (proc, devtmpfs, cgroup2, tmpfs), not what the dump manages.
    assert found == ["/usr/local/nvidia", "/mnt/my data", "/home/u/remote", "/data"]


def test_dump_and_restore_arguments_name_the_same_keys() -> None:
    args, keys = host_mounts.dump_args(["/usr/local/nvidia", "/data"])
    assert args == [
        "--external", "mnt[/usr/local/nvidia]:cedana-host-mnt-0",
        "--external", "mnt[/data]:cedana-host-mnt-1",
    ]  # fmt: skip
    assert host_mounts.restore_args(keys) == [
        "--external", "mnt[cedana-host-mnt-0]:/usr/local/nvidia",
        "--external", "mnt[cedana-host-mnt-1]:/data",
    ]  # fmt: skip
    assert host_mounts.dump_args([]) == ([], {})


# Run in a mount namespace of its own (unshare -m), so that the ramfs it
# mounts is seen by this scenario's jobs only, never by other tests' jobs.
SCENARIO = textwrap.dedent(
    """\
    import json, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from cr_helpers import Cedana, unique_jid

    c = Cedana(Path({state!r}))
    host, pm, script = Path({host!r}), Path({pm!r}), Path({script!r})
    jid, new = unique_jid("hm"), unique_jid("hmr")
    try:
        c.ok("exec", "--jid", jid, "--persistent-mount", str(pm), "--", "sh", str(script),
             str(host))  # fmt: skip
        c.wait_log(jid, "^tick ", 3)
        dumped = c.dump(jid)
        manifest = json.loads((Path(dumped["path"]) / "manifest.json").read_text())
        # The host's file changes while the job is saved: the restored job sees
        # the host's mount (bound again), not a copy taken at dump time.
        (host / "driver.txt").write_text("v2\\n")
        c.restore(jid, "--jid", new)
        c.wait_log(new, "^tick v2$", 2)
    finally:
        c.kill_all()  # the jobs loop for ever
    print(json.dumps({{"manifest": manifest["job"], "before": c.log(jid), "after": c.log(new)}}))
    """
)

JOB = """\
while true; do echo "tick $(cat "$1/driver.txt")"; sleep 0.05; done
"""


@needs_root
@pytest.mark.usefixtures("native_parts")
def test_job_beside_a_mount_criu_cannot_dump(tmp_path: Path) -> None:
    """A ramfs (a filesystem CRIU does not dump) is mounted on the host before
    the job starts, so the job's mount namespace has it: the dump marks it
    external and the restore binds the host's again."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    host, state = tmp_path / "host-ramfs", tmp_path / "state"
    host.mkdir()
    state.mkdir()
    script = tmp_path / "job.sh"
    script.write_text(JOB)
    runner = tmp_path / "scenario.py"
    runner.write_text(
        SCENARIO.format(
            tests=str(REPO / "tests"),
            state=str(state),
            host=str(host),
            pm=str(tmp_path / "pm"),
            script=str(script),
        )
    )
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t ramfs ramfs "$1" && echo v1 > "$1/driver.txt" && exec "$2" "$3"',
         "sh", str(host), sys.executable, str(runner)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    said = json.loads(out.stdout.strip().splitlines()[-1])
    assert str(host) in said["manifest"]["host_mounts"].values()
    before = [ln for ln in said["before"].splitlines() if ln.startswith("tick")]
    after = [ln for ln in said["after"].splitlines() if ln.startswith("tick")]
    assert before and set(before) == {"tick v1"}
    assert after[-1] == "tick v2"
