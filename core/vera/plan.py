"""How a render or a training run is laid out on the hardware: the `Strategy` that the planner chooses and that
vera.parallel / the pipeline apply. (The planner itself, `plan(...)`, lives here too.)"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Where the weights live on one device while the model runs.
MEMORY_MODES = ("resident", "parts", "layers")
#   resident: everything on the GPU for the whole render;
#   parts:    text encoder and VAE on the GPU only while they run (the transformer resident);
#   layers:   also the transformer's joint blocks streamed from CPU memory, with prefetch.


@dataclass(frozen=True)
class Strategy:
    devices: int = 1              # worker processes (one GPU each)
    shard_weights: bool = False   # FSDP2: every joint block and the root sharded across the devices
    sequence_parallel: int = 1    # Ulysses degree of the joint attention (divides the head count)
    cfg_parallel: bool = False    # the two guidance branches on two device groups
    memory: str = "resident"      # one of MEMORY_MODES
    fp8_storage: bool = False     # weights stored as float8, computed in bf16 (layerwise casting)

    def __post_init__(self):
        if self.memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}, got {self.memory!r}")
        if self.devices < 1 or self.sequence_parallel < 1 or self.devices % self.sequence_parallel:
            raise ValueError(f"sequence_parallel {self.sequence_parallel} must divide devices {self.devices}")

    def to_dict(self) -> dict:
        return asdict(self)
