"""vera.tensor_messages between two real gloo processes (a file store: no network): every dtype and shape the
leader sends arrives bit for bit, and a header of an unexpected kind is refused before anything is allocated."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vera.tensor_messages import Message, receive, send

_G = torch.Generator().manual_seed(0)  # the same values in the test and in each spawned process
SENT = [torch.randn(2, 3, 4, 5, 6, generator=_G), torch.tensor(0.5, dtype=torch.float64), torch.arange(7, dtype=torch.int64),
        torch.randn(3, 8, generator=_G).to(torch.bfloat16),
        torch.randn(4, generator=_G).half(), torch.tensor([True, False, True]),
        torch.zeros(0, 2), torch.tensor(2.5).expand(1), torch.tensor([1.5]).expand(3, 2)]  # expanded: stride 0


def _bits(t: torch.Tensor) -> tuple:
    """dtype, shape and bytes: what "bit for bit" compares (plain values, so the test's queue carries no tensor)."""
    dense = torch.empty(t.numel(), dtype=t.dtype).copy_(t.reshape(-1))
    return str(t.dtype), tuple(t.shape), dense.view(torch.uint8).numpy().tobytes()


def _exchange(rank, store_file, results):
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2)
    try:
        if rank == 0:
            for i in range(0, len(SENT), 3):
                send(Message(1, i, SENT[i:i + 3]))
            send(Message(9))  # a kind the receiver does not expect
        else:
            got = []
            for i in range(0, len(SENT), 3):
                message = receive((1,))
                assert (message.kind, message.flag) == (1, i)
                got += message.tensors
            try:
                receive((1,))
                refused = ""
            except RuntimeError as exc:
                refused = str(exc)
            results.put(([_bits(t) for t in got], refused))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_messages_arrive_bit_for_bit_and_unknown_kinds_are_refused(tmp_path):
    results = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_exchange, args=(str(tmp_path / "store"), results), nprocs=2, start_method="spawn")
    got, refused = results.get()
    assert got == [_bits(t) for t in SENT]
    assert "unknown kind 9" in refused
