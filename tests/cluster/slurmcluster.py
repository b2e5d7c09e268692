"""A throwaway single-node SLURM cluster on localhost, for tests.

Stdlib only, no pytest dependency.  Needs root and the Debian packages
``slurm-wlm`` and ``munge`` (``.ci/install-system.sh`` installs them).

Usage::

    from slurmcluster import local_slurm_cluster, completed_jobs

    with local_slurm_cluster(tmp_path / "slurm") as cluster:
        subprocess.run(["sbatch", "-p", cluster.partition, "--gpus=1",
                        "--wrap", "true"], check=True)
        ...
        jobs = wait_for_completed_jobs(cluster, count=1)

What it does:

* ``munged``: reuses a running, responsive daemon, otherwise writes
  ``/etc/munge/munge.key`` if it is missing and starts ``munged`` (as the
  ``munge`` user) on the default socket ``/run/munge/munge.socket.2``.
* writes ``/etc/slurm/slurm.conf`` and ``/etc/slurm/gres.conf`` (the default
  paths, so every SLURM client and job step finds them without
  ``SLURM_CONF``).  These files are left in place afterwards.
* starts ``slurmctld -D`` and ``slurmd -D`` as root in the background; their
  state, pid and log files live under ``state_dir``, slurmd's spool dir
  (step sockets: short path needed) is ``/var/spool/gammasweep-slurmd``.
* one node (``hostname -s``) with all CPUs, ~90 % of the memory and two fake
  GPUs (``gres.conf``: ``Name=gpu File=/dev/null`` and ``/dev/zero``), in one default
  partition; ``select/cons_tres`` with ``CR_CPU_Memory`` so several 1-CPU
  jobs run at once.
* no accounting database (``sacct`` exists but fails with "Slurm accounting
  storage is disabled"): every finished job is recorded by an
  ``EpilogSlurmctld`` script (``scontrol --details show job -o`` plus the
  epilog's ``SLURM_*`` environment) under ``state_dir/jobrecords``, and by
  ``jobcomp/filetxt`` in ``state_dir/jobcomp.txt`` (final JobState/ExitCode,
  but neither Comment nor GRES); :func:`completed_jobs` merges both.
* ``MinJobAge=600`` keeps finished jobs visible to ``squeue --states=all``
  for 10 minutes; backfill runs every second so queued jobs start at once.
* on exit kills still-running job steps, stops slurmd and slurmctld, and
  munged if it started it.  Daemons (and their job processes) left running
  by an earlier, crashed run are killed before starting; a still working
  munged from such a run is adopted and stopped on exit.

Public API: :func:`slurm_available`, :func:`missing_binaries`,
:func:`local_slurm_cluster` (yields :class:`SlurmCluster`),
:func:`completed_jobs`, :func:`wait_for_completed_jobs`,
:class:`SlurmClusterError`, :data:`INSTALL_HINT`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from typing import Iterator

__all__ = [
    "INSTALL_HINT",
    "REQUIRED_BINARIES",
    "SlurmCluster",
    "SlurmClusterError",
    "completed_jobs",
    "local_slurm_cluster",
    "missing_binaries",
    "slurm_available",
    "wait_for_completed_jobs",
]

SLURM_CONF = pathlib.Path("/etc/slurm/slurm.conf")
GRES_CONF = pathlib.Path("/etc/slurm/gres.conf")
MUNGE_KEY = pathlib.Path("/etc/munge/munge.key")
MUNGE_RUN_DIR = pathlib.Path("/run/munge")
MUNGE_SOCKET = MUNGE_RUN_DIR / "munge.socket.2"
#: pids of the daemons a running cluster started, so a later run can clean up
#: after a crashed one.
REGISTRY = pathlib.Path("/run/gammasweep-slurm/daemons.json")
#: slurmd's spool dir holds the job steps' unix sockets (``<node>_<job>.<step>``,
#: at most 108 bytes incl. the path), so it must not live under a long tmp
#: path; it is wiped whenever a cluster starts.
SLURMD_SPOOL = pathlib.Path("/var/spool/gammasweep-slurmd")

PARTITION = "debug"
FAKE_GPUS = 2  # two fake GPUs (/dev/null, /dev/zero) so two 1-CPU GPU jobs can run at once
CLUSTER_NAME = "gammasweep"

REQUIRED_BINARIES = (
    "slurmctld",
    "slurmd",
    "munged",
    "munge",
    "unmunge",
    "sbatch",
    "squeue",
    "sinfo",
    "scontrol",
)
_DAEMON_NAMES = ("slurmctld", "slurmscriptd", "slurmd")
_STEPD = "slurmstepd"
_EXTRA_PATH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")

INSTALL_HINT = "run `sudo .ci/install-system.sh` (installs slurm-wlm and munge)"


class SlurmClusterError(RuntimeError):
    """The local cluster could not be started (message includes daemon logs)."""


# --------------------------------------------------------------------------
# availability
# --------------------------------------------------------------------------


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "")
    found = shutil.which(name, path=os.pathsep.join([path, *_EXTRA_PATH]))
    return found


def missing_binaries() -> list[str]:
    """The binaries of :data:`REQUIRED_BINARIES` that cannot be found."""
    return [b for b in REQUIRED_BINARIES if _which(b) is None]


def slurm_available() -> bool:
    """True if slurmctld, slurmd, munged, sbatch, squeue, ... are installed."""
    return not missing_binaries()


# --------------------------------------------------------------------------
# the cluster handle
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """What :func:`local_slurm_cluster` yields."""

    state_dir: pathlib.Path
    node: str
    partition: str
    cpus: int
    real_memory_mb: int
    gpus: int
    slurm_conf: pathlib.Path
    gres_conf: pathlib.Path
    slurmctld_log: pathlib.Path
    slurmd_log: pathlib.Path
    slurmd_spool: pathlib.Path
    munged_log: pathlib.Path | None  # None if an already running munged was reused
    job_records_dir: pathlib.Path
    jobcomp_log: pathlib.Path

    def logs(self, tail: int = 60) -> str:
        """The last ``tail`` lines of every daemon log (for error messages)."""
        return _format_logs(
            [self.slurmctld_log, self.slurmd_log, self.munged_log, self.jobcomp_log],
            tail,
        )


def _format_logs(paths, tail: int = 60) -> str:
    chunks = []
    for p in paths:
        if p is None:
            continue
        p = pathlib.Path(p)
        try:
            lines = p.read_text(errors="replace").splitlines()
        except OSError as exc:
            chunks.append(f"----- {p}: <unreadable: {exc}>")
            continue
        chunks.append(f"----- {p} (last {min(tail, len(lines))} lines)")
        chunks.extend(lines[-tail:])
    return "\n".join(chunks)


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def _run(args, timeout=15, **kw) -> subprocess.CompletedProcess:
    exe = _which(args[0]) or args[0]
    return subprocess.run(
        [exe, *args[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=timeout,
        **kw,
    )


def _short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _mem_total_mb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise SlurmClusterError("cannot read MemTotal from /proc/meminfo")


def _proc_comm(pid: int) -> str | None:
    try:
        return pathlib.Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _pids_named(names) -> list[int]:
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        if _proc_comm(pid) in names and _pid_alive(pid):
            pids.append(pid)
    return pids


def _ppid(pid: int) -> int | None:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _descendants(roots) -> list[int]:
    """All living descendants of the given pids."""
    children: dict[int, list[int]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _ppid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return [p for p in found if _pid_alive(p)]


def _kill_job_processes() -> None:
    """SIGKILL every slurmstepd and the job processes below it.

    Only needed for steps that are still running when the cluster goes away
    (a failed test, or a crashed earlier run); slurmstepd ignores SIGTERM.
    """
    stepds = _pids_named((_STEPD,))
    if not stepds:
        return
    victims = stepds + _descendants(stepds)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_pid_alive(p) for p in victims):
        time.sleep(0.1)


def _kill_pids(pids, timeout: float = 15.0) -> None:
    """SIGTERM the given pids, SIGKILL whatever is still alive after timeout."""
    pids = [p for p in set(pids) if _pid_alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in pids if _pid_alive(p)]
        if not pids:
            return
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.1)


def _stop_popen(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _read_registry() -> dict:
    try:
        return json.loads(REGISTRY.read_text())
    except (OSError, ValueError):
        return {}


def _write_registry(data: dict) -> None:
    REGISTRY.parent.mkdir(parents=True, exist_ok=True)
    tmp = REGISTRY.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(REGISTRY)


def _kill_stale_daemons() -> int | None:
    """Stop slurm daemons left over by an earlier (crashed) run.

    SLURM daemons are stopped unconditionally: a running slurmctld/slurmd
    holds the ports and would otherwise be talked to with a stale config.
    A munged that an earlier cluster of ours started is stopped if it no
    longer answers, and adopted (its pid returned, so that it is stopped on
    exit) if it still works.
    """
    registry = _read_registry()
    _kill_job_processes()
    pids = []
    for name, pid in registry.items():
        if name == "munged":
            continue
        if isinstance(pid, int) and _proc_comm(pid) in _DAEMON_NAMES:
            pids.append(pid)
    pids.extend(_pids_named(_DAEMON_NAMES))
    if pids:
        _kill_pids(pids, timeout=10)
    adopted = None
    munged_pid = registry.get("munged")
    if isinstance(munged_pid, int) and _proc_comm(munged_pid) == "munged":
        if _munge_works():
            adopted = munged_pid
        else:
            _kill_pids([munged_pid])
    with contextlib.suppress(OSError):
        REGISTRY.unlink()
    return adopted


# --------------------------------------------------------------------------
# munge
# --------------------------------------------------------------------------


def _munge_works() -> bool:
    munge, unmunge = _which("munge"), _which("unmunge")
    if not munge or not unmunge:
        return False
    try:
        cred = subprocess.run(
            [munge, "-n"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            timeout=5,
        )
        if cred.returncode != 0 or not cred.stdout:
            return False
        res = subprocess.run(
            [unmunge],
            input=cred.stdout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=5,
        )
        return res.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _munge_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("munge")
    except KeyError:
        return None


def _ensure_munge_key(user: pwd.struct_passwd | None) -> None:
    MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
    if user is not None:
        os.chown(MUNGE_KEY.parent, user.pw_uid, user.pw_gid)
        os.chmod(MUNGE_KEY.parent, 0o700)
    if not MUNGE_KEY.exists() or MUNGE_KEY.stat().st_size < 32:
        tmp = MUNGE_KEY.with_name(MUNGE_KEY.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        try:
            os.write(fd, os.urandom(1024))
        finally:
            os.close(fd)
        tmp.replace(MUNGE_KEY)
    if user is not None:
        os.chown(MUNGE_KEY, user.pw_uid, user.pw_gid)
    os.chmod(MUNGE_KEY, 0o400)


def _start_munged(state_dir: pathlib.Path) -> tuple[subprocess.Popen, pathlib.Path]:
    user = _munge_user()
    _ensure_munge_key(user)
    MUNGE_RUN_DIR.mkdir(parents=True, exist_ok=True)
    seed_dir = pathlib.Path("/var/lib/munge")
    seed_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        for d in (MUNGE_RUN_DIR, seed_dir):
            os.chown(d, user.pw_uid, user.pw_gid)
    os.chmod(MUNGE_RUN_DIR, 0o755)
    os.chmod(seed_dir, 0o711)
    # a socket/lock left behind by a dead daemon
    for stale in (MUNGE_SOCKET, pathlib.Path(str(MUNGE_SOCKET) + ".lock")):
        with contextlib.suppress(OSError):
            stale.unlink()

    log = state_dir / "munged.log"
    args = [
        _which("munged") or "munged",
        "--foreground",
        "--force",
        f"--key-file={MUNGE_KEY}",
        f"--socket={MUNGE_SOCKET}",
        f"--pid-file={MUNGE_RUN_DIR / 'munged.pid'}",
        f"--seed-file={seed_dir / 'munged.seed'}",
    ]
    kw = {}
    if user is not None and os.geteuid() == 0:
        kw = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd="/",
            start_new_session=True,
            **kw,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _munge_works():
            return proc, log
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    _stop_popen(proc)
    raise SlurmClusterError("munged did not come up (`munge -n | unmunge` fails)\n" + _format_logs([log]))


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------


_EPILOG = """\
#!/bin/sh
# EpilogSlurmctld written by tests/cluster/slurmcluster.py: record every finished job.
rec={records}/"$SLURM_JOB_ID"
env | grep '^SLURM_' | sort > "$rec.env.tmp"
{scontrol} --details show job -o "$SLURM_JOB_ID" > "$rec.job.tmp" 2>&1
mv -f "$rec.env.tmp" "$rec.env"
mv -f "$rec.job.tmp" "$rec.job"
exit 0
"""


def _write_config(state_dir: pathlib.Path, node: str, cpus: int, mem_mb: int) -> dict[str, pathlib.Path]:
    paths = {
        "ctld_state": state_dir / "slurmctld-state",
        "spool": SLURMD_SPOOL,
        "records": state_dir / "jobrecords",
        "slurmctld_log": state_dir / "slurmctld.log",
        "slurmd_log": state_dir / "slurmd.log",
        "jobcomp": state_dir / "jobcomp.txt",
        "epilog": state_dir / "epilog_slurmctld.sh",
    }
    shutil.rmtree(SLURMD_SPOOL, ignore_errors=True)
    for key in ("ctld_state", "spool", "records"):
        paths[key].mkdir(parents=True, exist_ok=True)

    paths["epilog"].write_text(
        _EPILOG.format(
            records=shlex.quote(str(paths["records"])),
            scontrol=shlex.quote(_which("scontrol") or "scontrol"),
        )
    )
    os.chmod(paths["epilog"], 0o755)

    conf = f"""\
# Written by tests/cluster/slurmcluster.py for a throwaway single-node test cluster.
ClusterName={CLUSTER_NAME}
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={paths["ctld_state"]}
SlurmdSpoolDir={paths["spool"]}
SlurmctldPidFile={state_dir / "slurmctld.pid"}
SlurmdPidFile={state_dir / "slurmd.pid"}
SlurmctldLogFile={paths["slurmctld_log"]}
SlurmdLogFile={paths["slurmd_log"]}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
# start queued jobs within ~1 s (defaults: backfill every 30 s)
SchedulerParameters=bf_interval=1,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={paths["jobcomp"]}
EpilogSlurmctld={paths["epilog"]}
# keep finished jobs visible to squeue (snakemake polls with squeue)
MinJobAge=600
# jobs without --mem must not grab the whole node's memory
DefMemPerCPU=500
InactiveLimit=0
KillWait=5
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=20
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} Gres=gpu:{FAKE_GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
    gres = f"""\
# Written by tests/cluster/slurmcluster.py: fake GPUs (character devices), no hardware detection.
AutoDetect=off
NodeName={node} Name=gpu File=/dev/null
NodeName={node} Name=gpu File=/dev/zero
"""
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(conf)
    GRES_CONF.write_text(gres)
    return paths


# --------------------------------------------------------------------------
# the context manager
# --------------------------------------------------------------------------


def _node_state(node: str) -> str:
    try:
        res = _run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], timeout=10)
    except subprocess.TimeoutExpired:
        return "<sinfo timed out>"
    if res.returncode != 0:
        return f"<sinfo failed: {res.stdout.strip()}>"
    return res.stdout.strip() or "<no node>"


@contextlib.contextmanager
def local_slurm_cluster(state_dir: pathlib.Path, *, timeout: float = 60.0) -> Iterator[SlurmCluster]:
    """Start munged (if needed), slurmctld and slurmd; yield a SlurmCluster.

    Waits (up to ``timeout`` seconds) until ``sinfo`` reports the node idle;
    raises :class:`SlurmClusterError` with the daemon logs otherwise.  Stops
    everything it started on exit.
    """
    missing = missing_binaries()
    if missing:
        raise SlurmClusterError(f"SLURM/munge binaries not found: {', '.join(missing)}; {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise SlurmClusterError("local_slurm_cluster() must run as root")

    state_dir = pathlib.Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    node = _short_hostname()
    cpus = _cpu_count()
    mem_mb = max(256, int(_mem_total_mb() * 0.9))

    adopted_munged = _kill_stale_daemons()

    munged_proc = None
    munged_log = None
    slurmctld = slurmd = None
    registry: dict[str, int] = {}
    if adopted_munged is not None:
        registry["munged"] = adopted_munged
        _write_registry(registry)
    try:
        if adopted_munged is None and not _munge_works():
            munged_proc, munged_log = _start_munged(state_dir)
            registry["munged"] = munged_proc.pid
            _write_registry(registry)

        paths = _write_config(state_dir, node, cpus, mem_mb)
        cluster = SlurmCluster(
            state_dir=state_dir,
            node=node,
            partition=PARTITION,
            cpus=cpus,
            real_memory_mb=mem_mb,
            gpus=FAKE_GPUS,
            slurm_conf=SLURM_CONF,
            gres_conf=GRES_CONF,
            slurmctld_log=paths["slurmctld_log"],
            slurmd_log=paths["slurmd_log"],
            slurmd_spool=paths["spool"],
            munged_log=munged_log,
            job_records_dir=paths["records"],
            jobcomp_log=paths["jobcomp"],
        )

        def start(name, args):
            out = open(state_dir / f"{name}.stdout", "ab")
            try:
                return subprocess.Popen(
                    [_which(name) or name, *args],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=state_dir,
                    start_new_session=True,
                )
            finally:
                out.close()

        # -D: foreground, -i: ignore state errors, -c: clear state (fresh dir
        # anyway), -f: explicit config
        slurmctld = start("slurmctld", ["-D", "-c", "-i", "-f", str(SLURM_CONF)])
        registry["slurmctld"] = slurmctld.pid
        _write_registry(registry)
        slurmd = start("slurmd", ["-D", "-N", node, "-f", str(SLURM_CONF)])
        registry["slurmd"] = slurmd.pid
        _write_registry(registry)

        deadline = time.monotonic() + timeout
        state = "<not checked>"
        resumed = False
        while True:
            for name, proc in (("slurmctld", slurmctld), ("slurmd", slurmd)):
                if proc.poll() is not None:
                    raise SlurmClusterError(
                        f"{name} exited with code {proc.returncode} during startup\n"
                        + _startup_logs(cluster, state_dir)
                    )
            state = _node_state(node)
            base = state.rstrip("*~#!%$@^-")
            if base == "idle":
                break
            if not resumed and base in ("down", "drained", "draining", "drain"):
                # e.g. a node that was down when slurmctld started
                _run(["scontrol", "update", f"NodeName={node}", "State=RESUME"])
                resumed = True
            if time.monotonic() > deadline:
                raise SlurmClusterError(
                    f"node {node} not idle after {timeout:.0f}s (sinfo state: "
                    f"{state})\n" + _startup_logs(cluster, state_dir)
                )
            time.sleep(0.5)

        yield cluster
    finally:
        # jobs still running (e.g. a failing test): kill their steps first
        _kill_job_processes()
        _stop_popen(slurmd)
        _stop_popen(slurmctld)
        _kill_job_processes()
        _stop_popen(munged_proc)
        if adopted_munged is not None:
            _kill_pids([adopted_munged])
        with contextlib.suppress(OSError):
            REGISTRY.unlink()


def _startup_logs(cluster: SlurmCluster, state_dir: pathlib.Path) -> str:
    return _format_logs(
        [
            cluster.slurmctld_log,
            state_dir / "slurmctld.stdout",
            cluster.slurmd_log,
            state_dir / "slurmd.stdout",
            cluster.munged_log,
        ]
    )


# --------------------------------------------------------------------------
# finished jobs
# --------------------------------------------------------------------------

# `scontrol show job -o` prints `Key=value` pairs separated by blanks; values
# may contain blanks (e.g. Command, Comment), so split at " Key=" boundaries.
_KEY_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")
_GPU_RE = re.compile(r"gpu(?::[^:,=\s]+)?[:=](\d+)")


def _parse_scontrol_line(line: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    matches = list(_KEY_RE.finditer(line))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        fields[m.group(1)] = line[m.end() : end].strip()
    return fields


def _gpu_count(*specs: str) -> int:
    """Largest GPU count in TRES/gres strings like 'gres:gpu:1', 'gres/gpu=1'."""
    best = 0
    for spec in specs:
        for m in _GPU_RE.finditer(spec or ""):
            best = max(best, int(m.group(1)))
        # a bare 'gpu' request (count omitted) means one GPU
        if best == 0 and re.search(r"(^|[:/,])gpu($|,)", spec or ""):
            best = 1
    return best


def _none(value: str | None) -> str:
    return "" if value in (None, "(null)", "N/A") else value


def _parse_record(job_file: pathlib.Path, final: dict[str, str] | None) -> dict:
    text = job_file.read_text(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("JobId=")), "")
    fields = _parse_scontrol_line(line) if line else {}
    env: dict[str, str] = {}
    env_file = job_file.with_suffix(".env")
    if env_file.exists():
        for ln in env_file.read_text(errors="replace").splitlines():
            key, sep, value = ln.partition("=")
            if sep:
                env[key] = value
    job_id = fields.get("JobId") or env.get("SLURM_JOB_ID") or job_file.stem
    exit_code = fields.get("ExitCode") or env.get("SLURM_JOB_EXIT_CODE2") or (final or {}).get("ExitCode", "")
    # What the job asked for: --gpus -> TresPerJob, --gres -> TresPerNode,
    # --gpus-per-task -> TresPerTask, --gpus-per-socket -> TresPerSocket.
    requested = {
        k: _none(fields.get(k))
        for k in ("TresPerJob", "TresPerNode", "TresPerSocket", "TresPerTask")
        if _none(fields.get(k))
    }
    gpus_requested = _gpu_count(*requested.values())
    # What it was given (scontrol --details): JOB_GRES=gpu:1
    job_gres = _none(fields.get("JOB_GRES"))
    state_at_epilog = fields.get("JobState", "")
    return {
        "job_id": int(job_id) if str(job_id).isdigit() else job_id,
        "name": _none(fields.get("JobName") or env.get("SLURM_JOB_NAME")),
        "comment": _none(fields.get("Comment") or env.get("SLURM_JOB_COMMENT")),
        "state": (final or {}).get("JobState") or state_at_epilog,
        "state_at_epilog": state_at_epilog,
        "final": final is not None,
        "exit_code": exit_code,
        "partition": _none(fields.get("Partition") or env.get("SLURM_JOB_PARTITION")),
        "node_list": _none(env.get("SLURM_JOB_NODELIST") or fields.get("BatchHost")),
        "num_cpus": _none(fields.get("NumCPUs")),
        "min_memory_node": _none(fields.get("MinMemoryNode")),
        "time_limit": _none(fields.get("TimeLimit")),
        "work_dir": _none(fields.get("WorkDir")),
        "tres": _none(fields.get("TRES")),
        "tres_request": ",".join(f"{k}={v}" for k, v in requested.items()),
        "gpus_requested": gpus_requested,
        "requests_gpu": gpus_requested > 0,
        "job_gres": job_gres,
        "gpus_allocated": _gpu_count(job_gres),
        "fields": fields,
        "env": env,
    }


def _jobcomp_entries(cluster: SlurmCluster) -> dict[str, dict[str, str]]:
    """jobcomp/filetxt lines by job id (final JobState, ExitCode, ...)."""
    entries: dict[str, dict[str, str]] = {}
    try:
        text = cluster.jobcomp_log.read_text(errors="replace")
    except OSError:
        return entries
    for line in text.splitlines():
        if line.startswith("JobId="):
            fields = _parse_scontrol_line(line)
            entries[fields.get("JobId", "")] = fields
    return entries


def completed_jobs(cluster: SlurmCluster) -> list[dict]:
    """All jobs that finished on ``cluster`` so far, sorted by job id.

    One dict per job, from the ``EpilogSlurmctld`` record
    (``scontrol --details show job -o`` at job end + the epilog's ``SLURM_*``
    environment), completed with the final state from ``jobcomp/filetxt``:

    ``job_id`` (int), ``name`` (JobName; snakemake: its run uuid),
    ``comment`` (Comment, '' if unset; snakemake: ``rule_<rule>[_wildcards_..]``),
    ``state`` (final JobState: COMPLETED/FAILED/CANCELLED/TIMEOUT/...),
    ``state_at_epilog`` (usually COMPLETING), ``final`` (bool: the jobcomp
    entry with the final state was found), ``exit_code`` ('0:0' =
    status:signal), ``partition``, ``node_list``, ``num_cpus``,
    ``min_memory_node`` (e.g. '100M'), ``time_limit`` ('00:05:00'),
    ``work_dir``, ``tres`` (e.g. 'cpu=1,mem=100M,node=1,billing=1'),
    ``tres_request`` (e.g. 'TresPerJob=gres:gpu:1' for ``--gpus=1``,
    'TresPerNode=gres:gpu:1' for ``--gres=gpu:1``; '' if none),
    ``gpus_requested`` (int), ``requests_gpu`` (bool), ``job_gres`` (GRES
    allocated to the job, e.g. 'gpu:1'), ``gpus_allocated`` (int),
    ``fields`` (all scontrol fields), ``env`` (the epilog's SLURM_* variables).
    """
    final = _jobcomp_entries(cluster)
    records = []
    for job_file in cluster.job_records_dir.glob("*.job"):
        records.append(_parse_record(job_file, final.get(job_file.stem)))
    records.sort(key=lambda r: (not isinstance(r["job_id"], int), str(r["job_id"]).zfill(12)))
    return records


def wait_for_completed_jobs(cluster: SlurmCluster, count: int, timeout: float = 30.0) -> list[dict]:
    """:func:`completed_jobs` once at least ``count`` jobs are recorded.

    The epilog runs asynchronously right after a job ends, so a record may
    appear a moment after ``squeue`` already reports the job as COMPLETED;
    this also waits until every record has its final (jobcomp) state.
    Raises TimeoutError (with the records found and the daemon logs).
    """
    deadline = time.monotonic() + timeout
    while True:
        jobs = completed_jobs(cluster)
        if len(jobs) >= count and all(j["final"] for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"expected {count} finished job records in "
                f"{cluster.job_records_dir}, found {len(jobs)}: "
                f"{[(j['job_id'], j['name'], j['state']) for j in jobs]}\n" + cluster.logs()
            )
        time.sleep(0.25)
