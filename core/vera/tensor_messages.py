"""Messages between the processes of one job as fixed-schema tensors, never pickles (docs/security.md).

`torch.distributed.broadcast_object_list` unpickles what the sender wrote, so whoever can speak on the process
group's network could run code in every worker. Here a message is one int64 header of a fixed length, then the
raw bytes of each tensor it announced:

    header  [kind, flag, count, (dtype code, ndim, size 0 .. size 7) x MAX_TENSORS]
    payload one uint8 tensor per announced tensor (its bytes; the receiver views them as the announced dtype)

The receiver checks the header (known kind, known dtype codes, at most MAX_DIMS sizes, none negative) before it
allocates anything. What a kind means (which tensors, what the flag says) is the caller's schema (vera.workers).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

MAX_TENSORS = 3
MAX_DIMS = 8
_SLOT = 2 + MAX_DIMS
HEADER_LENGTH = 3 + MAX_TENSORS * _SLOT
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.uint8,
          torch.bool)


class Message:
    """A received (or to be sent) message: its kind, one integer flag and up to MAX_TENSORS tensors."""

    def __init__(self, kind: int, flag: int = 0, tensors=()):
        self.kind, self.flag, self.tensors = int(kind), int(flag), list(tensors)


def send(message: Message, group=None, device=torch.device("cpu")) -> None:
    """Broadcast `message` from rank 0 of `group` (the caller is that rank)."""
    if len(message.tensors) > MAX_TENSORS:
        raise ValueError(f"a message carries at most {MAX_TENSORS} tensors, got {len(message.tensors)}")
    header = torch.zeros(HEADER_LENGTH, dtype=torch.int64)
    header[:3] = torch.tensor([message.kind, message.flag, len(message.tensors)])
    for i, tensor in enumerate(message.tensors):
        if tensor.dtype not in DTYPES or tensor.dim() > MAX_DIMS:
            raise ValueError(f"cannot send a {tensor.dtype} tensor of {tensor.dim()} dimensions")
        at = 3 + i * _SLOT
        header[at:at + 2 + tensor.dim()] = torch.tensor([DTYPES.index(tensor.dtype), tensor.dim(), *tensor.shape])
    dist.broadcast(header.to(device), src=_source(group), group=group)
    for tensor in message.tensors:
        # a fresh dense copy: an expanded tensor (stride 0) cannot be viewed as bytes
        data = torch.empty(tensor.numel(), dtype=torch.uint8 if tensor.dtype == torch.bool else tensor.dtype)
        data.copy_(tensor.detach().reshape(-1))
        if data.numel():  # the receiver knows the size from the header
            dist.broadcast(data.view(torch.uint8).to(device), src=_source(group), group=group)


def receive(kinds, group=None, device=torch.device("cpu")) -> Message:
    """The next message rank 0 of `group` sends; its kind must be one of `kinds` (RuntimeError otherwise)."""
    header = torch.empty(HEADER_LENGTH, dtype=torch.int64, device=device)
    dist.broadcast(header, src=_source(group), group=group)
    kind, flag, count, *slots = header.cpu().tolist()
    if kind not in kinds or not 0 <= count <= MAX_TENSORS:
        raise RuntimeError(f"control message of unknown kind {kind} with {count} tensors")
    tensors = []
    for i in range(count):
        code, ndim, *sizes = slots[i * _SLOT:(i + 1) * _SLOT]
        if not (0 <= code < len(DTYPES) and 0 <= ndim <= MAX_DIMS and all(s >= 0 for s in sizes[:ndim])):
            raise RuntimeError(f"control message with a bad tensor header {slots[i * _SLOT:(i + 1) * _SLOT]}")
        dtype, shape = DTYPES[code], sizes[:ndim]
        stored = torch.uint8 if dtype == torch.bool else dtype
        count_bytes = torch.Size(shape).numel() * torch.empty(0, dtype=stored).element_size()
        data = torch.empty(count_bytes, dtype=torch.uint8, device=device)
        if count_bytes:
            dist.broadcast(data, src=_source(group), group=group)
        tensor = data.cpu().view(stored).reshape(shape)
        tensors.append(tensor.to(torch.bool) if dtype == torch.bool else tensor)
    return Message(kind, flag, tensors)


def _source(group) -> int:
    """Global rank of the group's rank 0 (dist.broadcast takes global ranks)."""
    return 0 if group is None else dist.get_global_rank(group, 0)
