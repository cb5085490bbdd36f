"""What one benchmark run measures: the layer's shape, the ranks, the timing budget.

`Settings` travels from the command line to every worker process as JSON, so a worker
measures exactly what the parent asked for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lrlc_numpy import LRLCConfig

# The layers timed, in table order. "conv" and "conv_k" are the framework's own
# convolution with C_out and K*C_out outputs (the latter is Algorithm 1's floor: LRLC runs
# exactly that convolution, then combines). "lrlc" is the fixed LRLC layer evaluated by
# Algorithm 1; "lrlc_lc" the same layer evaluated in its locally connected form (the second
# strategy of issue 7), timed only where a backend offers that strategy. "lc" is the
# locally connected layer converted from the fixed LRLC layer, timed for inference only.
OPS = ("conv", "conv_k", "lrlc", "lrlc_lc", "lrlc_input_dependent", "lc")
OP_LABELS = {
    "conv": "conv C_out",
    "conv_k": "conv K·C_out",
    "lrlc": "fixed LRLC, Alg. 1",
    "lrlc_lc": "fixed LRLC, LC strategy",
    "lrlc_input_dependent": "input-dep. LRLC",
    "lc": "converted LC",
}
# The evaluation strategy each fixed-LRLC op pins (backends' `strategy=` argument); the
# other LRLC layers are built with 'auto'.
OP_STRATEGIES = {"lrlc": "conv", "lrlc_lc": "lc"}
# "forward" is inference (no graph kept for autodiff); "train" is one forward and backward
# pass: the output y and the gradient of sum(y * dy), for a fixed random dy, with respect to
# the input and every parameter (no optimiser update).
MODES = ("forward", "train")
# The training steps whose peak memory is measured (target 5 compares the first two); the
# LC strategy only where a backend has it.
MEMORY_OPS = ("conv_k", "lrlc", "lrlc_lc")
OP_MODES = {op: ("forward",) if op == "lc" else MODES for op in OPS}
# The (op, mode) pairs the targets read (`report.evaluate_targets`), with the plain
# convolution's every mode (each figure's ratio is to it): what `targets_only` times, which
# halves the compiles of a compiled backend.
TARGET_MEASUREMENTS = frozenset(
    {
        ("conv", "forward"),
        ("conv", "train"),
        ("conv_k", "train"),
        ("lrlc", "train"),
        ("lrlc_lc", "train"),
        ("lrlc_input_dependent", "train"),
        ("lc", "forward"),
    }
)

DEVICES = ("cpu", "gpu")
DEFAULT_BATCH = {"cpu": 64, "gpu": 512}
# The ranks. On the project's shared 2-core CPU a run over all six takes well over
# the 10 minutes `nox -s bench` may take (K = 1, 4, 16 took 10-15 minutes at load 5-9), so
# the default is three: K = 1, exactly a convolution plus a spatial bias (softmax over one
# basis member is 1), which the backends evaluate by a rank-1 path of their own; K = 2, the
# smallest rank that runs the general Algorithm 1; K = 16, where target 2 is judged.
# `--full` runs all six.
ALL_RANKS = (1, 2, 4, 8, 16, 32)
DEFAULT_RANKS = (1, 2, 16)


@dataclass(frozen=True)
class Settings:
    """One benchmark configuration. The defaults are the paper's layer (Section 4.1 ablations):
    32x32 input, 64 -> 64 channels, 3x3 kernel, 'same' padding (TensorFlow's rule, which for
    a 3x3 kernel at stride 1 is one zero pixel on every side in every framework)."""

    device: str = "cpu"
    batch: int = 64
    ranks: tuple[int, ...] = DEFAULT_RANKS
    input_size: tuple[int, ...] = (32, 32)  # 1, 2 or 3 axes: a sequence, image or volume
    in_channels: int = 64
    out_channels: int = 64
    kernel_size: int = 3
    padding: str = "same"
    budget_s: float = 1.0  # stop adding timed runs once their total passes this...
    min_runs: int = 3  # ...but never time fewer runs than this
    warmup: int = 1  # untimed runs first (the first one compiles under jit / tf.function)
    tf_jit_compile: bool = False  # tf.function(jit_compile=...) for the TensorFlow backend
    targets_only: bool = False  # time only TARGET_MEASUREMENTS
    seed: int = 0

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r} is not one of {DEVICES}")
        for name in ("batch", "in_channels", "out_channels", "kernel_size", "min_runs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.ranks or any(not isinstance(k, int) or k < 1 for k in self.ranks):
            raise ValueError(f"ranks must be positive ints, got {self.ranks!r}")
        if self.budget_s < 0 or self.warmup < 0:
            raise ValueError(
                f"budget_s and warmup must be >= 0, got {self.budget_s!r}, {self.warmup!r}"
            )
        # The geometry is validated once, by the spec's own config class.
        self.lrlc_config(self.ranks[0])

    def lrlc_config(self, rank: int, *, input_dependent: bool = False) -> LRLCConfig:
        """The LRLC layer benchmarked at `rank`: the paper's default 'rowcol' combining with
        softmax, or 'full' combining predicted from the input (which eq. 6 requires). A 1-D
        layer has 'full' only (spec section 17.2)."""
        full = input_dependent or len(self.input_size) == 1
        return LRLCConfig(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            rank,
            self.input_size,
            padding=self.padding,
            combining="full" if full else "rowcol",
            input_dependent=input_dependent,
        )

    @property
    def spatial_dims(self) -> int:
        """1, 2 or 3: the layers are Conv1d/LRLC1d, Conv2d/LRLC2d or Conv3d/LRLC3d."""
        return len(self.input_size)

    def measured(self, op: str) -> tuple[str, ...]:
        """The modes in which `op` is timed."""
        modes = OP_MODES[op]
        if self.targets_only:
            modes = tuple(mode for mode in modes if (op, mode) in TARGET_MEASUREMENTS)
        return modes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Settings:
        data = dict(data)
        data["ranks"] = tuple(data["ranks"])
        data["input_size"] = tuple(data["input_size"])
        return cls(**data)


# `python -m lrlc_bench --preset NAME`: the options a preset stands for (explicit options
# given beside it win). 'gpu-targets' measures every target of issues 7 and 17 on a GPU,
# sized to take under 8 minutes with its compiles: four ranks, the target measurements
# only, and the three backends a GPU machine has (docs/performance.md, 'The one command
# for every target on a GPU').
PRESETS = {
    "gpu-targets": {
        "device": "gpu",
        "ranks": (1, 2, 4, 16),
        "targets_only": True,
        "budget": 0.5,
        "backends": ("torch", "torch_compile", "jax"),
    },
}
