"""A private one-node SLURM cluster on 127.0.0.1, for trying the sbatch templates on one machine.

    python slurm/local_cluster.py start DIR [--cpus N]   # then: export SLURM_CONF=DIR/slurm.conf
    python slurm/local_cluster.py stop DIR

Everything (munge key and socket, slurm.conf, state, spool, logs, pid files) lives under DIR, and
the daemons are stopped by the pids they wrote there. Needs Debian's ``slurm-wlm`` and ``munge``
packages and root (the daemons run as root: ``SlurmUser=root``). The tests use it too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order
PARTITION = "debug"


def ensure_installed() -> None:
    """Install slurm-wlm and munge with apt-get when a program is missing (root only)."""
    if all(shutil.which(p) for p in ("sbatch", "slurmctld", "slurmd", "munged")):
        return
    if os.geteuid() != 0:
        raise RuntimeError("slurm-wlm and munge are not installed, and only root can apt-get them")
    apt = ["apt-get", "install", "-y", "--no-install-recommends", "slurm-wlm", "munge"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(apt, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(apt, env=env, capture_output=True, check=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_conf(root: Path, cpus: int) -> Path:
    host = socket.gethostname()
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=oe-local
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={root}/munge/run/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=600
SchedulerParameters=sched_interval=1
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def environment(root: Path) -> dict[str, str]:
    """The environment in which ``sbatch``/``squeue``/``scontrol`` talk to this cluster."""
    return {**os.environ, "SLURM_CONF": str(Path(root).resolve() / "slurm.conf")}


def _start_munge(root: Path) -> None:
    key_dir, run_dir = root / "munge" / "etc", root / "munge" / "run"
    key_dir.mkdir(parents=True, mode=0o700)
    run_dir.mkdir(parents=True)
    run_dir.chmod(0o755)  # munged refuses a socket folder that others cannot search
    key = key_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    subprocess.run(
        ["munged", "--force", f"--key-file={key}", f"--socket={run_dir}/munge.socket",
         f"--pid-file={root}/munged.pid", f"--log-file={root}/log/munged.log",
         f"--seed-file={key_dir}/munged.seed"],
        check=True, capture_output=True,
    )


def start(root: Path, cpus: int | None = None, timeout: float = 30.0) -> dict[str, str]:
    """Start munged, slurmctld and slurmd under ``root``; return the clients' environment.

    ``cpus`` is the node's CPU count as SLURM sees it (default: this machine's); more than the
    machine has lets several small jobs share the cores.
    """
    ensure_installed()
    root = Path(root).resolve()
    if (root / "slurm.conf").exists():
        raise FileExistsError(f"{root} already holds a cluster; stop it and use a fresh folder")
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = _write_conf(root, cpus or os.cpu_count() or 1)
    env = environment(root)
    try:
        _start_munge(root)
        subprocess.run(["slurmctld", "-c", "-f", str(conf)], env=env, check=True,
                       capture_output=True)
        subprocess.run(["slurmd", "-c", "-f", str(conf)], env=env, check=True,
                       capture_output=True)
        _wait_idle(env, timeout)
    except BaseException:
        stop(root)
        raise
    return env


def _wait_idle(env: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        state = out.stdout.strip()
        if out.returncode == 0 and state in ("idle", "mixed", "allocated"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the SLURM node did not come up within {timeout:.0f} s (state {state!r})")


def stop(root: Path, timeout: float = 15.0) -> None:
    """Cancel this cluster's jobs, then stop its daemons by the pids in their pid files."""
    root = Path(root).resolve()
    if (root / "slurmctld.pid").exists():
        _cancel_jobs(environment(root), timeout)
    for name in DAEMONS:
        pid_file = root / f"{name}.pid"
        if not pid_file.exists():
            continue
        try:
            pid = int(pid_file.read_text().split()[0])
        except (ValueError, IndexError):
            continue
        _terminate(pid, timeout)


def _cancel_jobs(env: dict[str, str], timeout: float) -> None:
    """Cancel every job of this cluster and wait until slurmd has cleaned up their processes."""
    listed = subprocess.run(["squeue", "-h", "-o", "%A"], env=env, capture_output=True, text=True)
    jobs = listed.stdout.split() if listed.returncode == 0 else []
    if not jobs:
        return
    subprocess.run(["scancel", "--full", *jobs], env=env, capture_output=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = subprocess.run(["squeue", "-h", "-o", "%A"], env=env, capture_output=True, text=True)
        if left.returncode != 0 or not left.stdout.strip():
            return
        time.sleep(0.5)


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("dir", type=Path, help="private folder for this cluster's files")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs the node offers")
    args = parser.parse_args(argv)
    if args.action == "start":
        env = start(args.dir, args.cpus)
        print(f"export SLURM_CONF={env['SLURM_CONF']}")
    else:
        stop(args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
