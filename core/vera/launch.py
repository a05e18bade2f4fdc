"""`vera-render run SHOT.json --devices N`, the parent: it starts N copies of the same `vera-render run` with
torch's elastic launcher (what torchrun runs, RANK / WORLD_SIZE / LOCAL_RANK set for each) and waits. What each
copy does is vera.workers.

This module holds only the launcher: the parent process imports torch's launcher, never the model's libraries
(the CLI dispatches to it before loading the renderer: vera.cli.launch_run). The rendezvous store listens on
127.0.0.1 only (`LoopbackRendezvous`), and gloo / NCCL are pointed at the loopback interface: a single-node run
opens nothing to the network. If any worker fails, the launcher stops the others and the task fails with that
worker's exit code (the farm's: 1 internal, 2 bad input, 3 transient).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import uuid

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.elastic.rendezvous import RendezvousParameters
from torch.distributed.elastic.rendezvous import rendezvous_handler_registry as rendezvous_handlers
from torch.distributed.elastic.rendezvous.static_tcp_rendezvous import StaticTCPRendezvous
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from vera.errors import EXIT_INTERNAL, EXIT_TRANSIENT, BadInput, VeraError

LOOPBACK = "127.0.0.1"
RENDEZVOUS = "vera-loopback"  # the rendezvous backend of a single-node --devices run (LoopbackRendezvous)


class WorkerFailed(VeraError):
    """A worker of a --devices run failed; the exit code is that worker's."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def is_worker() -> bool:
    """True inside a process started by torch's elastic launcher (`--devices N`, or torchrun)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


# ----------------------------------------------------------------------------------------------- parent


def launch_workers(devices: int, argv: list[str]) -> int:
    """Run `vera-render <argv>` on `devices` local worker processes; 0, or WorkerFailed with the failed
    worker's exit code."""
    if devices < 1:
        raise BadInput(f"--devices must be at least 1, got {devices}")
    if torch.cuda.is_available() and torch.cuda.device_count() < devices:
        raise BadInput(f"--devices {devices} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    # N processes share the CPU's cores (torchrun sets 1; we split them) unless the user chose
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    _use_loopback()
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=devices, run_id=f"vera-{uuid.uuid4().hex[:8]}",
                          rdzv_backend=RENDEZVOUS, rdzv_endpoint=f"{LOOPBACK}:0", rdzv_configs={"rank": 0},
                          max_restarts=0, monitor_interval=0.1, local_addr=LOOPBACK)
    try:
        elastic_launch(config, sys.executable)("-m", "vera.cli", *argv)
    except ChildFailedError as exc:
        rank, code = _first_failure(exc.failures)
        raise WorkerFailed(f"worker {rank} of {devices} failed with exit code {code} (its error is above)",
                           _farm_code(code)) from None
    return 0


class LoopbackRendezvous(StaticTCPRendezvous):
    """One node's rendezvous: the TCPStore the agent and its workers share listens on 127.0.0.1 only.

    torch's TCPStore binds every interface whatever host name it is given; only a socket handed to it
    (`master_listen_fd`) decides the address. So this rendezvous binds a loopback socket on a free port and
    gives it to the store; the workers find it through MASTER_ADDR / MASTER_PORT (the agent's store, shared)."""

    def __init__(self, run_id: str):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen()
        super().__init__(LOOPBACK, self.listener.getsockname()[1], rank=0, world_size=1, run_id=run_id, timeout=600)

    def get_backend(self) -> str:
        return RENDEZVOUS

    def next_rendezvous(self):
        if self._store is None:
            self._store = dist.TCPStore(LOOPBACK, self.master_port, 1, True, self.timeout, multi_tenant=True,
                                        master_listen_fd=self.listener.fileno())
        return super().next_rendezvous()


def _loopback_rendezvous(params: RendezvousParameters) -> LoopbackRendezvous:
    if params.max_nodes != 1:
        raise BadInput("a --devices run is one node; use torchrun on a private network for more")
    return LoopbackRendezvous(params.run_id)


rendezvous_handlers.register(RENDEZVOUS, _loopback_rendezvous)


def _use_loopback() -> None:
    """gloo and NCCL open their own sockets on the interface of the host name: keep them on the loopback
    interface too (unless the user chose one)."""
    names = [name for _, name in socket.if_nameindex()]
    loopback = next((name for name in ("lo", "lo0") if name in names), None)
    if loopback:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", loopback)


def _first_failure(failures: dict) -> tuple[int, int]:
    """The worker whose failure is the cause. When one worker fails, the launcher stops the others (SIGTERM),
    and those blocked in a collective with it may fail first with a broken connection (exit 1): so a worker's
    own error (bad input, out of memory, killed) comes before an internal error, which comes before being
    stopped; then the earliest (the launcher stamps failures without an error file at the same time)."""
    def cause(rank):
        code = failures[rank].exitcode
        return (2 if code in (-signal.SIGTERM, -signal.SIGINT) else 1 if code == EXIT_INTERNAL else 0,
                failures[rank].timestamp, rank)

    rank = min(failures, key=cause)
    return rank, failures[rank].exitcode


def _farm_code(code: int) -> int:
    if 1 <= code <= 4:
        return code
    return EXIT_TRANSIENT if code == -9 else EXIT_INTERNAL  # SIGKILL: most often the out-of-memory killer
