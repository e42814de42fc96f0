"""The host's mounts that CRIU cannot dump, handed to it as external mounts.

A job runs in a mount namespace of its own (``controller/jobspawn.py``), a
copy of the host's mount table. CRIU dumps every mount of such a namespace
and refuses the whole dump at the first whose filesystem it does not know
("FS mnt ./usr/local/nvidia ... unsupported"). GPU machines have such mounts
where jobs need them most: on the H200 machines NVIDIA's driver libraries are
a read-only virtiofs mount at /usr/local/nvidia, and networked or virtual
filesystems (nfs, 9p, virtiofs, ceph, ramfs, squashfs, another ext4 disk)
are common beside them.

Those mounts belong to the host, not to the job: their contents are never in
a checkpoint. So each is dumped as an external mount (``--external
mnt[PATH]:KEY``) and, on restore, bound from the same path of the restoring
host (``--external mnt[KEY]:PATH``), which is what the job saw before; the
manifest records the keys (``job.extra.host_mounts``). The namespace's root
mount, whatever its filesystem, CRIU takes as given (``--root /``).
"""

from __future__ import annotations

from dataclasses import dataclass

# What CRIU 4.1 dumps and restores itself (criu/filesystems.c: its fstypes
# table, cgroup2 and bpf from criu/mount.c); every other type is "unsupported"
# to it unless named with --enable-fs. tmpfs is dumped with its contents
# (the persistent mounts, /dev/shm's bind is external already).
CRIU_FILESYSTEMS = frozenset(
    {
        "proc",
        "sysfs",
        "devtmpfs",
        "binfmt_misc",
        "tmpfs",
        "devpts",
        "simfs",
        "pstore",
        "mqueue",
        "securityfs",
        "fusectl",
        "debugfs",
        "tracefs",
        "cgroup",
        "cgroup2",
        "aufs",
        "overlay",
        "autofs",
        "bpf",
        "nsfs",
    }
)

KEY_PREFIX = "cedana-host-mnt-"


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``/proc/PID/mountinfo``, in its order (parents first)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        mounts.append(Mount(_unescape(fields[4]), fields[sep + 1]))
    return mounts


def foreign(mounts: list[Mount], managed: frozenset[str] = frozenset()) -> list[str]:
    """Mount points CRIU cannot dump: filesystems it does not know, below the
    namespace's root, and not among ``managed`` (mounts the dump already
    handles itself, such as the job's /dev/shm)."""
    points: list[str] = []
    for m in mounts:
        if m.mount_point == "/" or m.mount_point in managed or m.mount_point in points:
            continue
        # Not fuse (fuse.sshfs, fuse.lxcfs...): CRIU fails on any that is not external.
        if m.fstype in CRIU_FILESYSTEMS:
            continue
        points.append(m.mount_point)
    return points


def of_process(pid: int, managed: frozenset[str] = frozenset()) -> list[str]:
    """The mount points of ``pid``'s namespace that must be external (``foreign``)."""
    with open(f"/proc/{pid}/mountinfo") as f:
        return foreign(parse_mountinfo(f.read()), managed)


def dump_args(points: list[str]) -> tuple[list[str], dict[str, str]]:
    """CRIU dump arguments marking ``points`` external, and the key of each."""
    keys = {f"{KEY_PREFIX}{i}": p for i, p in enumerate(points)}
    args: list[str] = []
    for key, point in keys.items():
        args += ["--external", f"mnt[{point}]:{key}"]
    return args, keys


def restore_args(keys: dict[str, str]) -> list[str]:
    """CRIU restore arguments binding each recorded mount from the same host path."""
    args: list[str] = []
    for key, point in sorted(keys.items()):
        args += ["--external", f"mnt[{key}]:{point}"]
    return args
