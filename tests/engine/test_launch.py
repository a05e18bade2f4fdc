"""`vera-render run SHOT.json --devices N` (vera.launch, vera.workers): N gloo worker processes render what one process renders,
rank 0 writes the files, and a failure on a worker fails the task with the farm's exit code."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vera.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_TRANSIENT, BadInput
from vera.launch import _farm_code, _first_failure
from vera.plan import Strategy
from vera.workers import default_strategy

ROOT = Path(__file__).resolve().parents[2]


def vera_render(*argv, cwd, path_first=()) -> subprocess.CompletedProcess:
    path = [*map(str, path_first), str(ROOT / "core"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(path))
    return subprocess.run([sys.executable, "-m", "vera.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, monkeypatch_module):
    """The demo shot (9 frames: two windows of 5) rendered by one process, as `vera-render demo` does."""
    from vera.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    monkeypatch_module.setenv("VERA_CACHE", str(out / "cache"))
    run_demo(out=out, frames=9, progress="none")
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def copy_shot(demo: Path, out_dir: str, **changes) -> Path:
    spec = json.loads((demo / "shot.json").read_text())
    spec["output"]["dir"] = out_dir
    spec.update(changes)
    path = demo / f"{out_dir}.json"
    path.write_text(json.dumps(spec))
    return path


def layers(folder: Path, pattern: str) -> dict:
    from vera.exr import read_layer

    return {p.name: read_layer(p, "rgba").pixels for p in sorted(folder.glob(pattern))}


@pytest.fixture(scope="module")
def two_devices(demo):
    """The demo shot rendered by `run --devices 2`, once for the tests below, with torch's object collectives
    (pickles) refused in every worker (tests/no_pickles)."""
    return vera_render("run", str(copy_shot(demo, "two")), "--devices", "2", "--progress", "none", cwd=demo,
                       path_first=[ROOT / "tests" / "no_pickles"])


@pytest.mark.slow
def test_two_devices_render_the_layers_of_one(demo, two_devices):
    result = two_devices
    assert result.returncode == 0, result.stderr
    assert "2 workers on cpu: Strategy(devices=2, shard_weights=True, sequence_parallel=2" in result.stderr
    assert "2 of 2 windows rendered, 9 frames written" in result.stderr  # rank 0 reports, once
    assert result.stderr.count("windows rendered") == 1
    # the float32 window caches: same model, same inputs; only summation orders inside matmuls of other shapes
    # (each rank's share of the tokens) may differ, ~1e-7 relative per operation over 12 steps -> 1e-4
    for window in ("w000", "w001"):
        one = layers(demo / "layers" / ".vera" / "cache" / window, "*.exr")
        two = layers(demo / "two" / ".vera" / "cache" / window, "*.exr")
        assert one.keys() == two.keys() and len(one) == 5
        assert max(float(np.abs(one[k] - two[k]).max()) for k in one) <= 1e-4
    one, two = layers(demo / "layers", "edit.*.exr"), layers(demo / "two", "edit.*.exr")
    assert len(one) == 9 and one.keys() == two.keys()
    assert max(float(np.abs(one[k] - two[k]).max()) for k in one) <= 1e-3  # half precision output: one step
    assert sum(float(v[..., 3].sum()) for v in one.values()) > 0  # the demo adds something
    # the step cache of the default `balanced` preset ran on every rank alike: the same layers were skipped
    status = json.loads(vera_render("status", str(demo / "two"), "--json", cwd=demo).stdout)
    single = json.loads(vera_render("status", str(demo / "layers"), "--json", cwd=demo).stdout)
    assert status["layer_evaluations"]["skipped"] > 0
    assert {k: status["layer_evaluations"][k] for k in ("full", "skipped")} == \
        {k: single["layer_evaluations"][k] for k in ("full", "skipped")}


@pytest.mark.slow
def test_a_failure_on_rank_0_fails_the_task_with_its_exit_code(demo):
    """Rank 0 refuses to mix settings (bad input, 2) while rank 1 waits for it: the launcher stops rank 1, and the
    task exits 2, not hanging and not 1."""
    shot = copy_shot(demo, "layers", seed=7)  # the one-process output folder, with other settings
    result = vera_render("run", str(shot), "--devices", "2", "--progress", "none", cwd=demo)
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "the outputs there were rendered differently" in result.stderr
    assert "worker 0 of 2 failed with exit code 2" in result.stderr


@pytest.mark.slow
def test_a_worker_out_of_memory_fails_the_task_as_transient(demo):
    """Rank 1 runs out of memory while rank 0 sends it work: the task exits 3 (retry elsewhere), it does not hang."""
    shot = copy_shot(demo, "oom")
    result = vera_render("run", str(shot), "--devices", "2", "--progress", "none", cwd=demo,
                         path_first=[ROOT / "tests" / "inject_rank1_oom"])
    assert result.returncode == EXIT_TRANSIENT, result.stderr
    assert "out of memory" in result.stderr and "CUDA out of memory (raised by the test on rank 1)" in result.stderr
    assert "worker 1 of 2 failed with exit code 3" in result.stderr
    assert not list((demo / "oom").glob("edit.*.exr"))


def test_memory_tier_from_the_command_line_renders_the_same_layers(demo, monkeypatch):
    """`--memory layers` in one process: the VAE in and out of the device, blocks streamed (onload = CPU here)."""
    from vera.cli import main
    from vera.workers import choose_strategy
    from vera.layout import load_shot

    shot = copy_shot(demo, "streamed")
    assert choose_strategy(load_shot(shot), 1) == Strategy()  # auto without a GPU: resident
    two = choose_strategy(load_shot(shot), 2, memory="layers")  # streamed blocks are whole: not sharded
    assert (two.sequence_parallel, two.shard_weights, two.memory) == (2, False, "layers")
    with pytest.raises(BadInput, match="memory must be one of"):
        choose_strategy(load_shot(shot), 1, memory="disk")
    monkeypatch.setenv("VERA_CACHE", str(demo / "cache"))
    assert main(["run", str(shot), "--memory", "layers", "--progress", "none"]) == 0
    one, streamed = layers(demo / "layers", "edit.*.exr"), layers(demo / "streamed", "edit.*.exr")
    assert one.keys() == streamed.keys() and all(np.array_equal(one[k], streamed[k]) for k in one)


def test_default_strategy_uses_every_device():
    assert default_strategy(12, 8, guidance=True).sequence_parallel == 4  # 8 does not divide 12 heads
    assert default_strategy(12, 8, guidance=True).cfg_parallel  # ... so the guidance branches take the other 2
    s = default_strategy(40, 8, guidance=True)
    assert (s.sequence_parallel, s.cfg_parallel, s.shard_weights) == (8, False, True)
    assert not default_strategy(6, 2, guidance=False, memory="layers").shard_weights
    assert default_strategy(12, 1, guidance=True) == default_strategy(12, 1, guidance=False)


def test_the_first_worker_error_decides_the_exit_code():
    from types import SimpleNamespace as Failure

    # rank 1 ran out of memory; at the same second rank 0 saw the connection close (internal error)
    failures = {0: Failure(timestamp=10, exitcode=EXIT_INTERNAL), 1: Failure(timestamp=10, exitcode=EXIT_TRANSIENT)}
    assert _first_failure(failures) == (1, EXIT_TRANSIENT)
    assert _first_failure({0: Failure(timestamp=9, exitcode=1), 1: Failure(timestamp=9, exitcode=-15)}) == (0, 1)
    # rank 0 stopped by the launcher (SIGTERM) because rank 1 failed: rank 1 is the cause
    assert _first_failure({0: Failure(timestamp=9, exitcode=-15), 1: Failure(timestamp=9, exitcode=3)}) == (1, 3)
    assert [_farm_code(c) for c in (2, 3, -9, -11, 7)] == [2, 3, EXIT_TRANSIENT, EXIT_INTERNAL, EXIT_INTERNAL]


@pytest.mark.slow
def test_two_devices_send_no_pickles(demo, two_devices):
    """The leader's control messages are tensors: with torch's object collectives (pickles) refused in every
    worker, the two-process render still writes the one-process frames."""
    result = two_devices
    assert result.returncode == 0, result.stderr
    one, two = layers(demo / "layers", "edit.*.exr"), layers(demo / "two", "edit.*.exr")
    assert len(one) == 9 and one.keys() == two.keys()
    assert max(float(np.abs(one[k] - two[k]).max()) for k in one) <= 1e-3  # as test_two_devices_render_the_layers_of_one


def _listening_sockets() -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets this process listens on (Linux: /proc/net/tcp{,6} and /proc/self/fd)."""
    ours = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.islink(f"/proc/self/fd/{fd}")}
    found = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and f"socket:[{fields[9]}]" in ours:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))  # little-endian words
                found.add((str(ipaddress.ip_address(words)), int(port, 16)))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket tables")
def test_a_single_node_rendezvous_listens_on_loopback_only(monkeypatch):
    """The store of `run --devices N` (the agent's, shared with its workers) listens on 127.0.0.1, not on every
    interface: the rendezvous torch's launcher would make from vera.launch's config, made here in the test."""
    import vera.launch
    from torch.distributed.elastic.rendezvous import RendezvousParameters
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry

    configs = []
    monkeypatch.setattr(vera.launch, "elastic_launch", lambda config, entry: configs.append(config) or (lambda *a: 0))
    for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):  # unset, and unset again after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    assert vera.launch.launch_workers(2, ["run", "shot.json"]) == 0
    config = configs[0]
    before = _listening_sockets()
    handler = rendezvous_handler_registry.create_handler(RendezvousParameters(
        backend=config.rdzv_backend, endpoint=config.rdzv_endpoint, run_id=config.run_id, min_nodes=config.min_nodes,
        max_nodes=config.max_nodes, local_addr=config.local_addr, **config.rdzv_configs))
    info = handler.next_rendezvous()
    opened = _listening_sockets() - before
    assert opened and {address for address, _ in opened} == {"127.0.0.1"}, opened
    assert info.bootstrap_store_info.master_addr == "127.0.0.1"  # where the workers find the store
    assert os.environ.get("GLOO_SOCKET_IFNAME") == "lo"  # gloo's own sockets on the loopback interface too
