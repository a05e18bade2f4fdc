"""Parallel benchmark: one sampling step (both guidance branches, batch 2) of a small VeraMoT on 1 vs 2 vs 4
CPU processes (gloo), with each strategy of vera.parallel, and the bytes each rank receives per step.

    python benchmarks/parallel_bench.py             # launches torchrun for 2 and 4 processes, prints the table
    python benchmarks/parallel_bench.py --json FILE # also the numbers as JSON

Each launch measures its own one-process reference first (rank 0 alone, the others waiting), then every strategy
on all ranks, taking turns, best of N after a warm-up: the ratio is against that reference, in the same run.
Every process uses one thread (OMP_NUM_THREADS=1). This machine has 2 cores, so 4 processes share 2 cores: the
4-process ratios show the cost of the extra work and communication, not the speed of 4 GPUs.

Bytes are counted by wrapping the collectives each strategy calls (FSDP2's `all_gather_single`, vera.parallel's
all-to-all and all-gather), as bytes received per rank per step, and the Ulysses and CFG counts are checked
against their closed forms from the shapes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))

from vera.model.configs import STREAMS, VeraConfig  # noqa: E402
from vera.model.dit import VeraMoT  # noqa: E402

BENCH = VeraConfig(dim=256, ffn_dim=1024, num_heads=4, num_layers=4, text_dim=256, freq_dim=256, text_len=64)
BENCH_LATENT = (4, 16, 24)  # latent frames, height, width -> 4 x 8 x 12 = 384 tokens per stream
BATCH = 2                   # [prompt, negative prompt]: one sampling step with guidance
FLOAT = 4


def strategies(world: int) -> dict:
    from vera.plan import Strategy

    found = {f"sp{world}": Strategy(devices=world, sequence_parallel=world),
             f"fsdp{world}": Strategy(devices=world, shard_weights=True),
             f"sp{world}+fsdp": Strategy(devices=world, sequence_parallel=world, shard_weights=True),
             f"cfg2+sp{world // 2}": Strategy(devices=world, cfg_parallel=True, sequence_parallel=world // 2)}
    return found


class Counter:
    """Bytes received by this rank, by wrapping the collectives (module attributes looked up at call time)."""

    def __init__(self):
        import torch.distributed as dist

        import vera.parallel as parallel

        self.bytes = {"fsdp all-gather": 0, "ulysses all-to-all": 0, "token/batch all-gather": 0}
        self.on = False
        gather_single, all_to_all, all_gather = dist.all_gather_single, parallel._all_to_all, parallel._all_gather

        def counted_gather_single(output, input, group=None, async_op=False):
            self._add("fsdp all-gather", output.numel() * output.element_size()
                      - input.numel() * input.element_size())
            return gather_single(output, input, group=group, async_op=async_op)

        def counted_all_to_all(x, group):
            size = dist.get_world_size(group)
            self._add("ulysses all-to-all", x.numel() * x.element_size() * (size - 1) // size)
            return all_to_all(x, group)

        def counted_all_gather(x, dim, group):
            self._add("token/batch all-gather", x.numel() * x.element_size() * (dist.get_world_size(group) - 1))
            return all_gather(x, dim, group)

        dist.all_gather_single = counted_gather_single
        parallel._all_to_all, parallel._all_gather = counted_all_to_all, counted_all_gather

    def _add(self, key, n):
        if self.on:
            self.bytes[key] += n

    def count(self, fn) -> dict:
        self.bytes = dict.fromkeys(self.bytes, 0)
        self.on = True
        fn()
        self.on = False
        return dict(self.bytes)


def expected_bytes(strategy, world: int) -> dict:
    """Closed forms of the Ulysses and CFG traffic per rank per step (float32)."""
    tokens = BENCH_LATENT[0] * (BENCH_LATENT[1] // 2) * (BENCH_LATENT[2] // 2)
    cfg = 2 if strategy.cfg_parallel else 1
    batch, sp, streams = BATCH // cfg, strategy.sequence_parallel, len(STREAMS)
    share = batch * tokens // sp * BENCH.dim * FLOAT  # one stream's q (or k, v, output) on one rank
    ulysses = BENCH.num_layers * (3 * streams + streams) * share * (sp - 1) // sp  # q,k,v in; outputs back
    heads = streams * share * (sp - 1)  # tokens gathered before the heads
    out = batch * streams * BENCH.z_dim * BENCH_LATENT[0] * BENCH_LATENT[1] * BENCH_LATENT[2] * FLOAT
    return {"ulysses all-to-all": ulysses if sp > 1 else 0,
            "token/batch all-gather": (heads if sp > 1 else 0) + (out * (cfg - 1))}


def worker(out_path: str, repeats: int) -> None:
    import torch.distributed as dist

    from vera.parallel import build_mesh, parallelize

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    counter = Counter()
    torch.manual_seed(0)
    model = VeraMoT(BENCH).eval().requires_grad_(False)
    x = torch.randn(BATCH, len(STREAMS), BENCH.in_dim, *BENCH_LATENT)
    t = torch.full((BATCH,), 700.0)
    context = torch.randn(BATCH, BENCH.text_len, BENCH.text_dim)

    def timed(fn) -> float:
        fn()  # warm-up (and FSDP's lazy init)
        best = float("inf")
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            fn()
            elapsed = torch.tensor([time.perf_counter() - start])
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # a step ends when its slowest rank ends
            best = min(best, float(elapsed))
        return best

    with torch.no_grad():
        single = float("nan")
        if rank == 0:
            one = lambda: model(x, t, context)  # noqa: E731
            one()
            single = min(_seconds(one) for _ in range(repeats))
        dist.barrier()
        results = {"processes": world, "one_process_s": single, "strategies": {}}
        for name, strategy in strategies(world).items():
            parallel = parallelize(copy.deepcopy(model), build_mesh(strategy), strategy)
            step = lambda: parallel(x, t, context)  # noqa: E731
            seconds = timed(step)
            counted = counter.count(step)
            expected = expected_bytes(strategy, world)
            mismatch = {k: (counted[k], v) for k, v in expected.items() if counted[k] != v}
            if mismatch:
                raise AssertionError(f"{name}: counted bytes differ from the closed form: {mismatch}")
            results["strategies"][name] = {"seconds": seconds, "ratio": seconds / single if rank == 0 else None,
                                           "bytes_per_rank": counted, "strategy": strategy.to_dict()}
    if rank == 0:
        Path(out_path).write_text(json.dumps(results))
    dist.destroy_process_group()


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def launch(nproc: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT / "core"), os.environ.get("PYTHONPATH", "")]))
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                        __file__, "--worker", str(out), "--repeats", str(repeats)], env=env, check=True)
        return json.loads(out.read_text())


def table(runs: list[dict]) -> str:
    lines = ["| processes | strategy | step (s) | 1 process (s) | ratio | received per rank per step |",
             "|---|---|---|---|---|---|"]
    for run in runs:
        for name, r in run["strategies"].items():
            traffic = ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in r["bytes_per_rank"].items() if v)
            lines.append(f"| {run['processes']} | {name} | {r['seconds']:.3f} | {run['one_process_s']:.3f} | "
                         f"{r['ratio']:.2f} | {traffic} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the numbers as JSON here")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.repeats)
        return
    load = os.getloadavg()[0]
    runs = [launch(n, args.repeats) for n in (2, 4)]
    params = sum(p.numel() for p in VeraMoT(BENCH).parameters())
    tokens = BENCH_LATENT[0] * (BENCH_LATENT[1] // 2) * (BENCH_LATENT[2] // 2)
    header = (f"config: dim {BENCH.dim}, {BENCH.num_heads} heads, {BENCH.num_layers} layers, {params / 1e6:.1f}M "
              f"parameters ({params * FLOAT / 2**20:.1f} MiB float32); {tokens} tokens per stream; batch {BATCH}; "
              f"torch {torch.__version__}, {os.cpu_count()} CPU cores, 1 thread per process, load average "
              f"{load:.1f} at the start")
    result = {"header": header, "runs": runs, "parameters": params}
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def markdown(result: dict) -> str:
    """The header, the table and what it shows in numbers (printed by main; the docs' block)."""
    split = [r["ratio"] for run in result["runs"] if run["processes"] == 2
             for name, r in run["strategies"].items() if name.startswith(("sp", "cfg")) and "fsdp" not in name]
    fsdp = [r["ratio"] for run in result["runs"] for name, r in run["strategies"].items() if name.startswith("fsdp")]
    return (f"{result['header'][0].upper()}{result['header'][1:]}; ratio = step time / one-process step time of the "
            f"same launch.\n\n{table(result['runs'])}\n\nOn 2 processes the strategies that split the work "
            f"(Ulysses, CFG parallel) take {min(split):.2f}-{max(split):.2f}x the one-process step; sharding alone "
            f"(FSDP, on 2 and 4 processes) {min(fsdp):.2f}-{max(fsdp):.2f}x.")


if __name__ == "__main__":
    main()
