"""Adapter for lrlc_torch: float64 and float32 on CPU, plus CUDA (with bfloat16) when present.

It goes through lrlc_torch's public API only: a layer built with `from_lrlc_config`, neutral
parameters loaded with `load_neutral_params`, torch autograd for the vjp (gradients read
back by neutral name with `lrlc_torch.to_neutral`), `LocallyConnected2d` for `lc_forward`,
the layer's `save_checkpoint`/`from_checkpoint` for checkpoints. 1-D and 3-D configs (spec
section 17) take `LRLC1d`/`LRLC3d` and `LocallyConnected1d`/`LocallyConnected3d`, with the
canonical NLC/NDHWC arrays moved to NCL/NCDHW and back, as NHWC to NCHW in 2-D.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch

import lrlc_torch

from . import flag, strategy_adapter_name

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


@contextlib.contextmanager
def _ieee_float32():
    """Spec section 15.4: float32 at full precision. PyTorch lets cuDNN convolutions use
    TensorFloat-32 (10-bit mantissa) by default on recent GPUs; turn that off for the call."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _full_precision(method):
    """IEEE float32, on the path the adapter was built for: eager by default, because the
    compiled path (lrlc_torch.compiled, CUDA's default) would compile once per catalogue
    case; tests/test_torch_compile.py runs the catalogue through it with `compiled=True`."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with _ieee_float32(), lrlc_torch.compiled.use_compiled(self.compiled):
            return method(self, *args, **kwargs)

    return wrapped


# The layer classes of each spatial rank.
_LRLC = {1: lrlc_torch.LRLC1d, 2: lrlc_torch.LRLC2d, 3: lrlc_torch.LRLC3d}
_LOCALLY_CONNECTED = {
    1: lrlc_torch.LocallyConnected1d,
    2: lrlc_torch.LocallyConnected2d,
    3: lrlc_torch.LocallyConnected3d,
}


def _nchw(x_nhwc, dtype, device) -> torch.Tensor:
    """Canonical channels-last data (NLC, NHWC, NDHWC) as torch's channels-first."""
    return torch.from_numpy(np.asarray(x_nhwc)).to(device=device, dtype=dtype).movedim(-1, 1)


def _nhwc(y_nchw: torch.Tensor) -> np.ndarray:
    """Channels-first torch data (NCL, NCHW, NCDHW) as canonical channels-last float64."""
    return y_nchw.detach().movedim(1, -1).to("cpu", torch.float64).numpy()


class Backend:
    """`strategy` is `LRLC2d`'s evaluation strategy ('auto', 'conv' or 'lc'). 'lc' applies to
    fixed layers only; the catalogue's input-dependent cases then run Algorithm 1, which is
    what 'auto' picks for them (the layer refuses strategy='lc' with input_dependent=True).
    `compiled` selects lrlc_torch's compiled path on every device (True) or the eager path
    (False, the default)."""

    # lrlc_torch has the mixed basis of spec section 16 (Algorithm 1 by groups, 'lc' and
    # conversion on the union window).
    supports_mixed_basis = True
    # Sequences, images and volumes (spec section 17): LRLC1d, LRLC2d, LRLC3d.
    spatial_dims = (1, 2, 3)

    def __init__(self, strategy: str = "auto", *, compiled: bool = False, **unknown):
        self.name = strategy_adapter_name("torch", strategy, unknown, ("strategy", "compiled"))
        self.compiled = flag("torch", "compiled", compiled)
        if self.compiled:
            self.name += "[compiled]"
        self.strategy = strategy
        has_cuda = torch.cuda.is_available()
        self.devices = ("cpu", "gpu") if has_cuda else ("cpu",)
        self.dtypes = ("float64", "float32", "bfloat16") if has_cuda else ("float64", "float32")

    def _resolve(self, dtype, device):
        if device not in self.devices:
            raise ValueError(f"device {device!r} not available; expected one of {self.devices}")
        if dtype not in self.dtypes:
            raise ValueError(f"dtype {dtype!r} not supported; expected one of {self.dtypes}")
        return _DTYPES[dtype], torch.device("cuda" if device == "gpu" else "cpu")

    def _layer(self, config, params, dtype, device):
        strategy = "auto" if config.input_dependent else self.strategy
        layer = _LRLC[config.spatial_dims].from_lrlc_config(
            config, strategy=strategy, device=device, dtype=dtype
        )
        layer.load_neutral_params(params)
        return layer

    @_full_precision
    def forward(self, config, params, x, *, dtype="float64", device="cpu"):
        dtype, device = self._resolve(dtype, device)
        layer = self._layer(config, params, dtype, device)
        with torch.no_grad():
            return _nhwc(layer(_nchw(x, dtype, device)))

    @_full_precision
    def vjp(self, config, params, x, dy, *, dtype="float64", device="cpu"):
        dtype, device = self._resolve(dtype, device)
        layer = self._layer(config, params, dtype, device)
        x = _nchw(x, dtype, device).requires_grad_(True)
        names, tensors = zip(*layer.named_parameters())
        y = layer(x)
        grads = torch.autograd.grad(y, (x, *tensors), _nchw(dy, dtype, device))
        return _nhwc(grads[0]), lrlc_torch.to_neutral(dict(zip(names, grads[1:])), config)

    @_full_precision
    def to_locally_connected(self, config, params, x=None, *, dtype="float64", device="cpu"):
        dtype, device = self._resolve(dtype, device)
        layer = self._layer(config, params, dtype, device)
        with torch.no_grad():
            if config.input_dependent:
                weight, bias = layer.locally_connected_kernel(_nchw(x, dtype, device))
                return lrlc_torch.lc_to_neutral(weight, bias)
            neutral = layer.to_locally_connected().neutral_params()
        return neutral["kernel"], neutral["bias"]

    @_full_precision
    def lc_forward(self, kernel, bias, x, config, *, dtype="float64", device="cpu"):
        dtype, device = self._resolve(dtype, device)
        x = _nchw(x, dtype, device)
        with torch.no_grad():
            # (B, *out, *window, C_in, C_out): one kernel per example, for the functional form
            if np.ndim(kernel) == 2 * config.spatial_dims + 3:
                weight, bias = lrlc_torch.lc_from_neutral(kernel, bias, dtype=dtype, device=device)
                return _nhwc(lrlc_torch.functional.locally_connected(x, weight, bias, config))
            layer = _LOCALLY_CONNECTED[config.spatial_dims].from_lrlc_config(
                config, device=device, dtype=dtype
            )
            layer.load_neutral_params({"kernel": kernel, "bias": bias})
            return _nhwc(layer(x))

    def init_params(self, config, *, seed=0):
        """A fresh layer's default initialisation (`torch.manual_seed(seed)` first, without
        touching the caller's generator state), as float64 neutral arrays."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layer = _LRLC[config.spatial_dims].from_lrlc_config(config, dtype=torch.float64)
        return {name: value.astype(np.float64) for name, value in layer.neutral_params().items()}

    def save_checkpoint(self, path, config, params):
        layer = self._layer(config, params, torch.float64, torch.device("cpu"))
        layer.save_checkpoint(path)

    def load_checkpoint(self, path):
        config = lrlc_torch.load_checkpoint(path)[1]  # its rank picks the layer class
        layer = _LRLC[config.spatial_dims].from_checkpoint(path)
        return layer.neutral_params(), layer.config
