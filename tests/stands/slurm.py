"""A real single-node Slurm cluster for integration tests (stdlib only; needs root).

Follows the tested recipe in test-infra.md §5 (``ci/slurm.sh``): munged, slurmctld and slurmd
in the foreground, ``proctrack/linuxproc`` + ``task/none`` (no cgroups), two fake GPUs through
gres (character devices made with mknod), no accounting (so no ``sacct``; runctl reads job
states with ``scontrol show job``)::

    stand = start_slurm(tmp_path / "slurm")
    os.environ["SLURM_CONF"] = str(stand.conf)    # what sbatch/squeue/scontrol read
    stand.stop()

Everything lives in ``workdir`` (state, spool, logs, the munge socket); the daemons' ports are
picked free up front so a second stand (or another user of the machine) does not collide.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT_S = 20.0
_BINARIES = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged")


def slurm_available() -> str | None:
    """None when a Slurm stand can start here, else why not (for ``need``)."""
    if os.geteuid() != 0:
        return "the Slurm stand needs root (slurmd runs jobs as their user)"
    missing = [b for b in _BINARIES if not os.path.exists(b)]
    if missing or not shutil.which("sbatch"):
        return "slurm-wlm / munge not installed (scripts/install-test-deps.sh)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SlurmStand:
    workdir: Path
    conf: Path
    node: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands (and for runctl, which runs them)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str) -> str:
        done = subprocess.run(
            list(argv), env=self.env(), capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Jobs slurmd started run in their own sessions; end any still there.
        _kill_spooled(self.workdir)


def _kill_spooled(workdir: Path) -> None:
    marker = str(workdir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            environ = (entry / "environ").read_bytes()
            if b"SLURM_CONF=" + str(workdir / "slurm.conf").encode() in environ or (
                b"SLURM_JOB_ID=" in environ and marker in (entry / "cmdline").read_bytes()
            ):
                os.kill(int(entry.name), signal.SIGKILL)


def _conf(sd: Path, node: str, ports: tuple[int, int, int]) -> str:
    cpus = os.cpu_count() or 2
    node_opts = "RealMemory=4000 Gres=gpu:2 State=UNKNOWN"
    return f"""ClusterName=runctltest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sd}/munge.socket
CredType=cred/munge
StateSaveLocation={sd}/state
SlurmdSpoolDir={sd}/spool/%n
SlurmctldPidFile={sd}/slurmctld.pid
SlurmdPidFile={sd}/slurmd-%n.pid
SlurmctldPort={ports[0]}
SlurmctldLogFile={sd}/log/slurmctld.log
SlurmdLogFile={sd}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
KillWait=5
MinJobAge=600
JobRequeue=1
NodeName={node} NodeAddr=127.0.0.1 Port={ports[1]} CPUs={cpus} {node_opts}
NodeName={node}-2 NodeAddr=127.0.0.1 Port={ports[2]} CPUs={cpus} {node_opts}
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
PartitionName=multi Nodes={node},{node}-2 MaxTime=INFINITE State=UP
"""


def start_slurm(workdir: Path) -> SlurmStand:
    sd = workdir
    for sub in ("state", "spool", "log"):
        (sd / sub).mkdir(parents=True, exist_ok=True)
    sd.chmod(0o755)
    node = socket.gethostname().split(".")[0]
    stand = SlurmStand(workdir=sd, conf=sd / "slurm.conf", node=node)
    try:
        # munged with its own socket, key and pid file; as root (--force) in the test dir.
        key = sd / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        with open(sd / "log" / "munged.stderr", "ab") as log:
            stand.procs.append(
                subprocess.Popen(
                    ["/usr/sbin/munged", "-F", "--force", f"--socket={sd}/munge.socket",
                     f"--key-file={key}", f"--pid-file={sd}/munged.pid",
                     f"--seed-file={sd}/munge.seed", f"--log-file={sd}/log/munged.log"],
                    stdout=log, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        _until(lambda: (sd / "munge.socket").exists(), "munged")
        for index in (0, 1):
            dev = sd / f"nvidia{index}"
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(195, index))
        (sd / "gres.conf").write_text(f"Name=gpu File={sd}/nvidia[0-1]\n")
        stand.conf.write_text(_conf(sd, node, (_free_port(), _free_port(), _free_port())))
        env = stand.env()
        # Two slurmd (slurmd -N) on this machine: nodes NODE and NODE-2, for --nodes 2 jobs
        # in the "multi" partition; the default partition "debug" has NODE only.
        daemons = [("slurmctld", ["/usr/sbin/slurmctld"])]
        for name in (node, f"{node}-2"):
            (sd / "spool" / name).mkdir(exist_ok=True)
            daemons.append((f"slurmd-{name}", ["/usr/sbin/slurmd", "-N", name]))
        for label, argv in daemons:
            with open(sd / "log" / f"{label}.stderr", "ab") as err:
                stand.procs.append(
                    subprocess.Popen(
                        [*argv, "-D", "-f", str(stand.conf)],
                        env=env,
                        stdout=err,
                        stderr=subprocess.STDOUT,
                    )  # fmt: skip
                )

        def idle() -> bool:
            done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env,
                                  capture_output=True, text=True, check=False)  # fmt: skip
            states = done.stdout.split()  # one line per node and partition
            return len(states) >= 2 and set(states) == {"idle"}

        _until(idle, "slurmd to register as idle", stand)
    except BaseException:
        stand.stop()
        raise
    return stand


def _until(check: object, what: str, stand: SlurmStand | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        if stand is not None and any(p.poll() is not None for p in stand.procs):
            break
        time.sleep(0.1)
    logs = ""
    if stand is not None:
        for path in sorted((stand.workdir / "log").glob("*")):
            logs += f"\n--- {path.name}\n" + path.read_text(errors="replace")[-1500:]
    raise RuntimeError(f"Slurm stand: gave up waiting for {what}{logs}")
