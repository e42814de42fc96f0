"""The fault matrix: every phase of a dump and of a restore, hit by every fault.

Rows are the phases of the three pipelines, read from their tables so that a
new phase is covered as soon as it exists: ``cr.dump.DUMP_PHASES`` ("dump",
the CLI), ``cr.restore.RESTORE_PHASES`` ("restore", the CLI) and
``Controller.restore_phases_list`` ("controller-restore", the restoring
controller). Columns are the faults:

- ``client-SIGKILL``, ``client-SIGTERM``: the ``cedana dump``/``cedana
  restore`` process (for the controller's phases: the ``cedana restore``
  waiting for it);
- ``criu-SIGKILL``: CRIU killed once it has started on the job (the
  ``criu_killer`` wrapper of cr_helpers); only at phases that run CRIU,
  whose names start with ``criu``;
- ``controller-SIGKILL``: the job's controller (for a restore: the new job's,
  so only where one exists: the controller's own phases, and the CLI's
  phases after the one that starts the job, whose undo kills it);
- ``ENOSPC``, ``EIO``: the phase's own I/O fails (the pipeline's test hook,
  ``<pipeline>.<phase>.fault``); only at phases that do file I/O
  (``Phase.io``).

A fault that makes no sense at a phase is not generated (see ``meaningful``).
Each case stops the run at its phase with the hook (``.pause``, and waits for
``.reached``: no sleeps), does its harm, lets the run go on, and checks:

- dump: if the fault hit before the irreversible phase (``release``: the job
  is killed, its checkpoint kept), the job runs on, unfrozen, and finishes
  with the checksum of an uninterrupted run; after it, or when the job
  cannot go on (a GPU job whose controller died), the job is gone and the
  checkpoint the store lists (if any) restores it with that checksum. A
  dump the fault made fail says so in one line that names what became of
  the job.
- restore: either the restore completed (the job runs and finishes right) or
  nothing of it is left: no process, no controller, no segment, a final
  state in the store; the checkpoint restores afterwards.
- always: no ``.partial`` file or directory in the checkpoint directory, every
  listed checkpoint exists, every checkpoint on disk is listed, and ``cedana
  ps`` says running exactly for the jobs whose process lives.

The jobs are held at a gate (a file: their per-step sleep waits while it
exists) so that none ends before its fault, and each case takes about as
long as its dump and restore.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cr_helpers import (
    CLI_TIMEOUT,
    REPO,
    Cedana,
    alive,
    checksum_line,
    clean_env,
    criu_killer,
    needs_root,
    segment_leftovers,
    unique_jid,
    wait_for,
)

from cedana_gpu.controller.process import Controller
from cedana_gpu.cr import restore as cr_restore
from cedana_gpu.cr.dump import DUMP_PHASES
from cedana_gpu.cr.pipeline import PHASE_HOOK_ENV, Phase
from cedana_gpu.cr.restore import RESTORE_PHASES
from cedana_gpu.jobs.processes import stat_fields, tree_pids

pytestmark = [needs_root, pytest.mark.usefixtures("native_parts")]

CLIENT_KILL = "client-SIGKILL"
CLIENT_TERM = "client-SIGTERM"
CRIU_KILL = "criu-SIGKILL"
CONTROLLER_KILL = "controller-SIGKILL"
ENOSPC = "ENOSPC"
EIO = "EIO"
FAULTS = (CLIENT_KILL, CLIENT_TERM, CRIU_KILL, CONTROLLER_KILL, ENOSPC, EIO)
IO_FAULTS = (ENOSPC, EIO)

PIPELINES: dict[str, Sequence[Phase[Any]]] = {
    "dump": DUMP_PHASES,
    "restore": RESTORE_PHASES,
    "controller-restore": Controller.restore_phases_list(),
}

# A GPU job and a job without GPU, each held at a gate after its first line.
TRAIN = ("samples/train_mlp.py", "--steps", "12", "--print-every", "1", "--sleep-per-step", "0.001")
GATED_TRAIN = """\
import os, runpy, sys, time
gate, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
real_sleep = time.sleep
def held_sleep(seconds):
    real_sleep(seconds)
    while os.path.exists(gate):
        real_sleep(0.01)
time.sleep = held_sleep
runpy.run_path(script, run_name="__main__")
"""
# Forks nothing: CRIU races short-lived children.
COUNTER = """\
import hashlib, os, sys, time
gate = sys.argv[1]
digest = hashlib.sha256()
for i in range(12):
    print(f"count {i}", flush=True)
    digest.update(str(i).encode())
    while os.path.exists(gate):
        time.sleep(0.01)
print(f"checksum: {digest.hexdigest()}", flush=True)
"""
FIRST_LINE = {True: r"^step 0 loss", False: r"^count 0$"}


# ---- which cases exist ---------------------------------------------------------------


@dataclass(frozen=True)
class DumpConfig:
    """A dump's job and options; each dump phase runs under the first that runs it."""

    gpu: bool
    leave_running: bool
    compression: str = "none"
    engine: str = "intercept"
    storage: str = "auto"
    """Driver engine: ``--gpu-storage`` (host staging or custom storage)."""

    @property
    def name(self) -> str:
        run = "leave-running" if self.leave_running else "kill"
        return f"{self.engine}-{self.storage}-{self.compression}-{run}"

    def stub(self) -> Any:
        """What a phase's ``when`` looks at, as a DumpContext has it."""
        return SimpleNamespace(
            job=SimpleNamespace(gpu=self.gpu),
            options=SimpleNamespace(
                leave_running=self.leave_running, compression=self.compression, durable=True
            ),
        )

    def runs(self, phase: Phase[Any]) -> bool:
        return phase.when is None or bool(phase.when(self.stub()))


CONFIGS = (
    DumpConfig(gpu=True, leave_running=False),
    DumpConfig(gpu=True, leave_running=True),
    DumpConfig(gpu=False, leave_running=False),
    DumpConfig(gpu=False, leave_running=True),
    # Archives: the pack phase, and a partial archive to leave behind.
    DumpConfig(gpu=True, leave_running=False, compression="lz4"),
)


# The driver engine (the fake driver's checkpoint API) under both GPU storages, at
# the phases where it differs from the intercept engine.
DRIVER_CONFIGS = (
    DumpConfig(gpu=True, leave_running=True, engine="driver", storage="custom"),
    DumpConfig(gpu=True, leave_running=False, compression="lz4", engine="driver", storage="host"),
)
DRIVER_PHASES = ("freeze", "gpu_dump", "criu_dump", "thaw", "write")


def driver_cases() -> Iterator[Any]:
    for cfg in DRIVER_CONFIGS:
        for i, phase in enumerate(DUMP_PHASES):
            if phase.name not in DRIVER_PHASES or not cfg.runs(phase):
                continue
            for fault in FAULTS:
                if meaningful("dump", i, fault):
                    yield pytest.param(
                        cfg, phase.name, fault, id=f"{cfg.name}.{phase.name}-{fault}"
                    )


def dump_config(phase: str) -> DumpConfig:
    p = next(p for p in DUMP_PHASES if p.name == phase)
    for cfg in CONFIGS:
        if cfg.runs(p):
            return cfg
    raise AssertionError(f"no dump configuration runs the phase {phase}")


def after_point_of_no_return(phase: str, cfg: DumpConfig) -> bool:
    """Whether an irreversible phase has completed when the run reaches ``phase``."""
    before = DUMP_PHASES[: [p.name for p in DUMP_PHASES].index(phase)]
    return any(p.irreversible and cfg.runs(p) for p in before)


def phase_ran(name: str, phase: str, cfg: DumpConfig) -> bool:
    """Whether phase ``name`` has completed when the run reaches ``phase``."""
    before = DUMP_PHASES[: [p.name for p in DUMP_PHASES].index(phase)]
    return any(p.name == name and cfg.runs(p) for p in before)


def restore_job_started_at() -> int:
    """Index of the CLI's restore phase that starts the job (its undo kills it)."""
    return next(i for i, p in enumerate(RESTORE_PHASES) if p.undo is cr_restore.kill_restored)


def meaningful(pipeline: str, index: int, fault: str) -> bool:
    phase = PIPELINES[pipeline][index]
    if fault in IO_FAULTS:
        return phase.io
    if fault == CRIU_KILL:
        return phase.name.startswith("criu")
    if fault == CONTROLLER_KILL and pipeline == "restore":
        return index > restore_job_started_at()
    return True


def cases(pipelines: Sequence[str]) -> Iterator[Any]:
    for pipeline in pipelines:
        for i, phase in enumerate(PIPELINES[pipeline]):
            for fault in FAULTS:
                if meaningful(pipeline, i, fault):
                    yield pytest.param(
                        pipeline, phase.name, fault, id=f"{pipeline}.{phase.name}-{fault}"
                    )


def test_every_phase_is_in_the_matrix() -> None:
    """Each phase of each table has cases, and every fault is somewhere."""
    for pipeline, phases in PIPELINES.items():
        for i, phase in enumerate(phases):
            faults = [f for f in FAULTS if meaningful(pipeline, i, f)]
            assert CLIENT_KILL in faults and CLIENT_TERM in faults, (pipeline, phase.name)
    every = {f for pl, ps in PIPELINES.items() for i in range(len(ps)) for f in FAULTS
             if meaningful(pl, i, f)}  # fmt: skip
    assert every == set(FAULTS)
    for phase in DUMP_PHASES:
        dump_config(phase.name)  # every dump phase runs in some configuration


# ---- helpers ------------------------------------------------------------------------


@dataclass
class Jobs:
    """The gated jobs' scripts and what an uninterrupted run prints last."""

    train: Path
    counter: Path
    expected: dict[bool, str]  # gpu -> checksum line

    def command(self, gpu: bool, gate: Path) -> list[str]:
        if gpu:
            return [sys.executable, str(self.train), str(gate), *TRAIN]
        return [sys.executable, str(self.counter), str(gate)]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Jobs:
    d = tmp_path_factory.mktemp("jobs")
    train, counter = d / "gated_train.py", d / "counter.py"
    train.write_text(GATED_TRAIN)
    counter.write_text(COUNTER)
    expected = {}
    for gpu in (True, False):
        env = clean_env(Path("/nonexistent"))
        if gpu:
            from cedana_gpu import paths

            env["LD_LIBRARY_PATH"] = str(paths.fake_libdir())
        script, args = (train, TRAIN) if gpu else (counter, ())
        out = subprocess.run(
            [sys.executable, str(script), str(d / "no-gate"), *args],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=True,
        )  # fmt: skip
        expected[gpu] = checksum_line(out.stdout.splitlines())
    return Jobs(train, counter, expected)


def start_client(c: Cedana, args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cedana_gpu", *args],
        env=c.env(**env), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@dataclass
class Hook:
    """The test hook's directory for one case, stopping one pipeline at one phase."""

    directory: Path
    pipeline: str
    phase: str

    def path(self, kind: str) -> Path:
        return self.directory / f"{self.pipeline}.{self.phase}.{kind}"

    def arm(self, fault: str) -> None:
        self.path("pause").touch()
        if fault in IO_FAULTS:
            self.path("fault").write_text(fault)

    def wait_reached(self, client: subprocess.Popen[str]) -> int:
        """The pid of the process paused at the phase."""
        reached = self.path("reached")

        def there() -> bool:
            if reached.exists():
                return True
            if client.poll() is not None:
                _out, err = client.communicate()
                raise AssertionError(
                    f"{self.pipeline} ended (status {client.returncode}) before reaching "
                    f"{self.phase}: {err}"
                )
            return False

        wait_for(there, f"{self.pipeline} to reach {self.phase}")
        return int(reached.read_text())

    def release(self) -> None:
        self.path("pause").unlink(missing_ok=True)


def finish(client: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _out, err = client.communicate(timeout=CLI_TIMEOUT)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    return client.returncode, err


def harm(fault: str, client: subprocess.Popen[str], controller: int | None) -> None:
    """Do the fault's harm while the run waits at its phase; a killed process
    is dead (not merely signalled) before the run goes on."""
    if fault == CLIENT_KILL:
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=CLI_TIMEOUT)
    elif fault == CLIENT_TERM:
        client.send_signal(signal.SIGTERM)
    elif fault == CONTROLLER_KILL:
        assert controller, "no controller to kill"
        os.kill(controller, signal.SIGKILL)
        wait_for(lambda: not alive(controller), f"the controller {controller} to die")
    # CRIU_KILL: the wrapper does it; ENOSPC, EIO: the armed .fault file.


def inflict(
    hook: Hook,
    client: subprocess.Popen[str],
    fault: str,
    controller_of: Callable[[int], int | None],
) -> tuple[int, str | None]:
    """Wait for the run at its phase, do the fault's harm, let it go on: its exit
    status and its one outcome line. ``controller_of(paused pid)``:
    the controller to kill."""
    try:
        paused = hook.wait_reached(client)
        harm(fault, client, controller_of(paused))
        hook.release()
        status, err = finish(client)
    finally:
        hook.release()
        if client.poll() is None:
            client.kill()
            client.wait()
    line = outcome_line(status, err, fault)
    if fault == CRIU_KILL:
        assert status != 0, "CRIU was not killed: the case tested nothing"
    return status, line


def outcome_line(status: int, err: str, fault: str) -> str | None:
    """The one line a failed run ends with (None when it succeeded or was SIGKILLed)."""
    if fault == CLIENT_KILL and status == -signal.SIGKILL:
        assert err == "", err
        return None
    if status == 0:
        return None
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cedana: error: "), err
    expected_status = 128 + signal.SIGTERM if fault == CLIENT_TERM else 1
    assert status == expected_status, (status, err)
    return lines[0]


def stopped(pid: int) -> bool:
    """Whether some process of the tree rooted at ``pid`` is stopped (state T or t)."""
    return any((stat_fields(p) or [b""])[0] in (b"T", b"t") for p in tree_pids(pid))


def frozen(c: Cedana, jid: str) -> bool:
    """What the job's controller says (a job without GPU, or whose controller
    died, is never frozen)."""
    live = c.inspect(jid).get("live") or {}
    return bool(live.get("frozen", False))


def assert_store_truthful(c: Cedana) -> None:
    """ps says running (or starting) exactly for the jobs whose process lives,
    and no ended job keeps a controller."""

    def truthful() -> bool:
        for job in c.ps().values():
            active = job["state"] in ("starting", "running")
            if active != alive(job["pid"]):
                return False
            if not active and alive(job["controller_pid"]):
                return False
        return True

    try:
        wait_for(truthful, "the store to agree with the processes")
    except AssertionError:
        raise AssertionError(f"the store does not tell the truth: {c.ps()}") from None


def processes_naming(*markers: str) -> list[str]:
    """Command lines of live processes that name one of ``markers`` (a case's gate,
    its checkpoint): the jobs, their controllers, CRIU, half-restored tasks."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmdline for m in markers) and alive(int(entry.name)):
            found.append(f"{entry.name}: {cmdline}")
    return found


def assert_nothing_left_running(*markers: str) -> None:
    """Once a case's jobs have ended, none of its processes is left (bounded wait)."""
    try:
        wait_for(lambda: not processes_naming(*markers), "the case's processes to end")
    except AssertionError:
        raise AssertionError(f"processes left: {processes_naming(*markers)}") from None


def partials(directory: Path) -> list[str]:
    found = []
    # Not rglob: the janitor may remove a directory while it is walked.
    for root, dirs, files in os.walk(directory):
        found += [os.path.join(root, n) for n in dirs + files if "partial" in n]
    return found


def assert_no_partials(directory: Path) -> None:
    # A SIGKILLed client cleans nothing itself: what it leaves goes once it is gone.
    try:
        wait_for(lambda: not partials(directory), f"no partial checkpoint in {directory}")
    except AssertionError:
        raise AssertionError(f"partial checkpoints left: {partials(directory)}") from None


def on_disk(directory: Path) -> set[str]:
    if not directory.exists():
        return set()
    return {str(p) for p in directory.iterdir() if not p.name.startswith(".")}


def listed(c: Cedana, jid: str) -> list[dict[str, Any]]:
    ckpts: list[dict[str, Any]] = c.json("job", "checkpoints", jid)
    return ckpts


def wait_checksum(c: Cedana, jid: str, expected: str) -> None:
    job = c.wait_final(jid)
    assert job["status"] == "exited (0)", (job, c.log(jid)[-2000:], c.controller_log(jid)[-2000:])
    assert checksum_line(c.log(jid).splitlines()) == expected


def restore_and_check(c: Cedana, expected: str, *args: str) -> str:
    new = unique_jid("rs")
    c.restore(*args, "--jid", new)
    wait_checksum(c, new, expected)
    return new


# ---- dump ---------------------------------------------------------------------------


@pytest.mark.parametrize(("pipeline", "phase", "fault"), list(cases(["dump"])))
def test_dump(
    pipeline: str, phase: str, fault: str, tmp_path: Path, cedana: Cedana, jobs: Jobs
) -> None:
    dump_case(dump_config(phase), pipeline, phase, fault, tmp_path, cedana, jobs)


@pytest.mark.parametrize(("cfg", "phase", "fault"), list(driver_cases()))
def test_dump_driver_engine(
    cfg: DumpConfig, phase: str, fault: str, tmp_path: Path, cedana: Cedana, jobs: Jobs
) -> None:
    """The driver engine's dump hit at its own phases: the same guarantees."""
    dump_case(cfg, "dump", phase, fault, tmp_path, cedana, jobs)


def dump_case(
    cfg: DumpConfig,
    pipeline: str,
    phase: str,
    fault: str,
    tmp_path: Path,
    cedana: Cedana,
    jobs: Jobs,
) -> None:
    c = cedana
    hook = Hook(tmp_path / "hook", pipeline, phase)
    hook.directory.mkdir()
    env = {PHASE_HOOK_ENV: str(hook.directory), "CEDANA_GPU_TIMEOUT_MS": "1000"}
    dump_env = dict(env)
    if fault == CRIU_KILL:
        dump_env.update(criu_killer(tmp_path, "criu"))
    gate = tmp_path / "gate"
    gate.touch()
    jid = unique_jid("fm")
    cmd = jobs.command(cfg.gpu, gate)
    if cfg.gpu:
        job_env = dict(env)
        if cfg.engine == "driver":
            job_env["CEDANA_GPU_ENGINE"] = "driver"
        c.exec_gpu(jid, *cmd, **job_env)
    else:
        c.ok("exec", "--jid", jid, "--", *cmd, **env)
    c.wait_log(jid, FIRST_LINE[cfg.gpu])
    job = c.job(jid)
    ckdir = tmp_path / "ck"
    args = ["dump", "job", jid, "--dir", str(ckdir), "--compression", cfg.compression]
    if cfg.leave_running:
        args.append("--leave-running")
    if cfg.engine == "driver":
        args += ["--gpu-storage", cfg.storage]
    hook.arm(fault)
    client = start_client(c, args, dump_env)
    status, line = inflict(hook, client, fault, lambda _paused: job["controller_pid"])

    # Nothing half-written, on disk or in the store.
    assert_no_partials(ckdir)
    ckpts = listed(c, jid)
    for ck in ckpts:
        assert Path(ck["path"]).exists(), ck
    # (A wait: the janitor of a SIGKILLed dump removes an unlisted one once it is gone.)
    paths = {ck["path"] for ck in ckpts}
    try:
        wait_for(lambda: on_disk(ckdir) == paths, "the checkpoints on disk to be those listed")
    except AssertionError:
        raise AssertionError(f"on disk {on_disk(ckdir)}, listed {paths}") from None

    # A driver engine job that is running again (thawed: unlocked) no longer
    # needs its controller, as a job without GPU never did.
    thawed = cfg.engine == "driver" and phase_ran("thaw", phase, cfg)
    needs_controller = cfg.gpu and not thawed
    gone = after_point_of_no_return(phase, cfg) or (fault == CONTROLLER_KILL and needs_controller)
    if status == 0:
        # The fault did not stop the dump (it came too late to matter).
        assert len(ckpts) == 1
        gone = not cfg.leave_running
    if not gone:
        # The job runs on: not stopped, not frozen (looked at while the gate
        # holds it), then it makes progress and ends right.
        assert line is None or "runs on" in line, line
        wait_for(lambda: not stopped(job["pid"]), f"job {jid} not to be stopped")
        wait_for(lambda: not frozen(c, jid), f"job {jid} not to be frozen")
        assert_store_truthful(c)
        gate.unlink()
        if fault == CONTROLLER_KILL:
            # A job without GPU (or a thawed driver engine one) outlives its
            # controller, unsupervised: it ends right, but nobody is left to
            # record how it ended.
            assert not needs_controller
            assert status == 0 or "controller died" in (line or ""), line
            final = c.wait_final(jid)
            assert final["state"] == "failed" and "controller" in final["error"], final
            assert checksum_line(c.log(jid).splitlines()) == jobs.expected[cfg.gpu]
        else:
            wait_checksum(c, jid, jobs.expected[cfg.gpu])
        if fault != CLIENT_KILL and status != 0:
            assert ckpts == [], "a failed dump listed a checkpoint"
    else:
        # The job is gone; the checkpoint listed (if any) is the job now.
        gate.unlink()
        final = c.wait_final(jid)
        assert not alive(final["pid"]) and not alive(final["controller_pid"])
        if after_point_of_no_return(phase, cfg) or status == 0:
            assert final["state"] == "checkpointed", final
        else:
            # Lost with its controller: the line and the store say so.
            assert line is not None and "lost" in line, line
            assert final["state"] == "failed" and "controller" in final["error"], final
        assert segment_leftovers(jid) == []
        if ckpts:
            assert line is None or ckpts[-1]["id"] in line, line
        else:
            assert fault == CONTROLLER_KILL, f"job {jid} is gone and has no checkpoint"
    for ck in ckpts:
        # Every listed checkpoint is whole: it restores the job, which ends right.
        restore_and_check(c, jobs.expected[cfg.gpu], "--path", ck["path"])
    assert_store_truthful(c)
    assert_nothing_left_running(str(gate))


# ---- restore ------------------------------------------------------------------------


@dataclass
class Checkpoint:
    path: Path
    gate: Path
    expected: str


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, jobs: Jobs) -> Iterator[Checkpoint]:
    """A checkpoint of a gated GPU job: jobs restored from it wait at the gate."""
    base = tmp_path_factory.mktemp("restore-matrix")
    c = Cedana(base / "state")
    gate = base / "gate"
    gate.touch()
    jid = unique_jid("fx")
    try:
        c.exec_gpu(jid, *jobs.command(True, gate), CEDANA_GPU_TIMEOUT_MS="1000")
        c.wait_log(jid, FIRST_LINE[True])
        d = c.dump(jid, "--dir", str(base / "ck"))
        yield Checkpoint(Path(d["path"]), gate, jobs.expected[True])
    finally:
        c.kill_all()


@pytest.mark.parametrize(
    ("pipeline", "phase", "fault"), list(cases(["restore", "controller-restore"]))
)
def test_restore(
    pipeline: str, phase: str, fault: str, tmp_path: Path, cedana: Cedana, checkpoint: Checkpoint
) -> None:
    c = cedana
    hook = Hook(tmp_path / "hook", pipeline, phase)
    hook.directory.mkdir()
    env = {PHASE_HOOK_ENV: str(hook.directory)}
    if fault == CRIU_KILL:
        env.update(criu_killer(tmp_path, "criu"))
    checkpoint.gate.touch()
    new = unique_jid("fr")
    hook.arm(fault)
    client = start_client(
        c, ["restore", "job", "--path", str(checkpoint.path), "--jid", new, "--output", "json"], env
    )

    def controller_of(paused: int) -> int | None:
        """The controller: the paused process itself when it is the one restoring."""
        if fault != CONTROLLER_KILL:
            return None
        return paused if pipeline == "controller-restore" else c.job(new)["controller_pid"]

    status, line = inflict(hook, client, fault, controller_of)
    if fault == CLIENT_KILL:
        # The controller goes on alone: wait until it has restored the job or given up.
        wait_for(
            lambda: c.ps().get(new, {}).get("state") != "starting",
            f"the controller of {new} to finish or give up",
        )
    # Looked at while the gate still holds a restored job: one that ran on
    # after its restore failed could not have ended by itself.
    job = c.ps().get(new)
    restored = job is not None and job["state"] == "running" and alive(job["pid"])
    if status == 0 or (fault == CLIENT_KILL and restored):
        # The restore completed (the fault came too late to stop it, or only
        # killed the client): the job runs and ends right.
        assert restored, job
        assert_store_truthful(c)
        checkpoint.gate.unlink()
        wait_checksum(c, new, checkpoint.expected)
    else:
        # Nothing of the restore is left, and the checkpoint is untouched.
        if line is not None:
            assert "nothing was restored" in line and "unchanged" in line, line
        if job is not None:
            job = c.wait_final(new)
            assert job["state"] in ("failed", "killed"), job
            assert not alive(job["pid"]), job
            assert not alive(job["controller_pid"]), job
        assert segment_leftovers(new) == []
        assert_nothing_left_running(str(checkpoint.gate), str(checkpoint.path))
        assert_store_truthful(c)
        checkpoint.gate.unlink()
        restore_and_check(c, checkpoint.expected, "--path", str(checkpoint.path))
    assert_store_truthful(c)
    assert_nothing_left_running(str(checkpoint.gate), str(checkpoint.path))
