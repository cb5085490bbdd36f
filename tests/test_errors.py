"""Every bad input a clear error, nothing silent (spec section 14): lrlc_numpy, its
checkpoints and the conformance command line.

`BAD` is the catalogue: each entry is one bad input and the error it must raise, with
fragments its message must contain (the argument or file, what was expected). The tests
after it pin the exact result where an input is unusual but valid: an empty batch, extreme
logits in every dtype, a NaN in one example, a dilation far larger than the input, and
checkpoints in every stored dtype. Hypothesis then throws wrong types and ranges at every
LRLCConfig field. The framework backends add their own cases in their test files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import conformance
import lrlc_numpy as L
from conformance import Case, case_data
from conformance.__main__ import main as conformance_main
from conformance.backends.numpy import Backend as NumpyBackend

CONFIG = L.LRLCConfig(3, 4, 3, rank=2, input_size=(7, 6))  # output grid (5, 4)
PARAMS = L.init_params(CONFIG)
X = np.zeros((2, 7, 6, 3))
DY = np.zeros((2, 5, 4, 4))
IDEP = L.LRLCConfig(3, 4, 3, 2, (7, 6), padding="same", combining="full", input_dependent=True)
MIXED = L.LRLCConfig(3, 4, [3, 5], 2, (7, 6), dilation=[1, 2], padding="same")
DICT = CONFIG.to_dict()  # the JSON form, the dict a user might pass for a config
FIELDS = {field.name: getattr(CONFIG, field.name) for field in dataclasses.fields(CONFIG)}


def _with(**changes):
    return {**PARAMS, **changes}


def _lc():
    return L.to_locally_connected(PARAMS, CONFIG)


# --- Files ------------------------------------------------------------------------------------

_CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def _raw_file(path, tensors, config_json=None):
    """A safetensors file written byte by byte: `tensors` maps name -> (safetensors dtype
    code, shape, raw bytes), so any stored dtype can be planted."""
    header, blobs, offset = {}, [], 0
    if config_json is not None:
        header["__metadata__"] = {"lrlc_config": config_json}
    for name, (code, shape, data) in tensors.items():
        header[name] = {
            "dtype": code,
            "shape": list(shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


def _checkpoint_with(tmp, name, code, itemsize, config=CONFIG):
    """A checkpoint of `config` whose tensor `name` is stored with dtype `code`."""
    tensors = {}
    for key, value in L.init_params(config).items():
        if key == name:
            tensors[key] = (code, value.shape, bytes(value.size * itemsize))
        else:
            tensors[key] = ("F64", value.shape, value.astype("<f8").tobytes())
    return _raw_file(tmp / "c.safetensors", tensors, config.to_json())


def _saved(tmp):
    path = tmp / "c.safetensors"
    L.save_params(path, PARAMS, CONFIG)
    return path


def _fifo(tmp):
    path = tmp / "pipe.safetensors"
    os.mkfifo(path)
    return path


def _ml_dtypes():
    return pytest.importorskip("ml_dtypes")


# --- The catalogue ----------------------------------------------------------------------------


class Bad(NamedTuple):
    id: str
    call: Callable  # call(tmp_path) must raise `error`
    error: type
    words: tuple[str, ...]


def _bad(id, call, error, *words):
    return Bad(id, call, error, words)


def _config(**changes):
    return lambda tmp: L.LRLCConfig(**{**FIELDS, **changes})


BAD = [
    # LRLCConfig fields: only ints, pairs (tuple or list) and the listed strings and bools.
    _bad("kernel_size-set", _config(kernel_size={3, 5}), TypeError, "kernel_size", "pair"),
    _bad("kernel_size-str", _config(kernel_size="33"), TypeError, "kernel_size", "'33'"),
    _bad("stride-dict", _config(stride={1: 1, 2: 2}), TypeError, "stride"),
    _bad("input_size-array", _config(input_size=np.array([7, 6])), TypeError, "input_size"),
    _bad("input_size-zero", _config(input_size=(0, 6)), ValueError, "input_size", "positive"),
    _bad("dilation-zero", _config(dilation=(1, 0)), ValueError, "dilation", "(1, 0)"),
    _bad("in_channels-nan", _config(in_channels=float("nan")), TypeError, "in_channels", "int"),
    _bad("rank-numpy-int", _config(rank=np.int64(2)), TypeError, "rank", "int"),
    _bad("out_channels-negative", _config(out_channels=-4), ValueError, "out_channels", ">= 1"),
    _bad("combining-array", _config(combining=np.array(["rowcol"])), ValueError, "combining"),
    _bad("combining-list", _config(combining=["rowcol"]), ValueError, "combining", "rowcol"),
    _bad("normalize-none", _config(normalize=None), ValueError, "normalize", "softmax"),
    _bad("normalize-case", _config(normalize="L2"), ValueError, "normalize", "'L2'"),
    _bad("padding-float", _config(padding=1.5), ValueError, "padding", "1.5"),
    _bad("padding-bool", _config(padding=True), ValueError, "padding", "True"),
    _bad("padding-triple", _config(padding=(1, 2, 3)), ValueError, "padding", "(1, 2, 3)"),
    _bad("padding-bytes", _config(padding=b"same"), ValueError, "padding", "b'same'"),
    _bad("channel_bias-str", _config(channel_bias="yes"), TypeError, "channel_bias", "bool"),
    _bad("input_dependent-none", _config(input_dependent=None), TypeError, "input_dependent"),
    _bad(
        "from_dict-int-key",
        lambda tmp: L.LRLCConfig.from_dict({**DICT, 1: 2}),
        ValueError,
        "unknown fields [1]",
    ),
    _bad("from_dict-list", lambda tmp: L.LRLCConfig.from_dict([1, 2]), TypeError, "mapping"),
    _bad("from_json-int", lambda tmp: L.LRLCConfig.from_json(42), TypeError, "from_json", "str"),
    _bad("from_json-deep", lambda tmp: L.LRLCConfig.from_json("[" * 10**5), ValueError, "deeply"),
    _bad("from_json-bytes", lambda tmp: L.LRLCConfig.from_json(b"\xff"), ValueError, "JSON"),
    _bad("from_json-empty", lambda tmp: L.LRLCConfig.from_json("{}"), ValueError, "missing"),
    # A config given as a dict (or anything else) names `config` and says how to build one.
    *[
        _bad(
            f"config-dict-{name}",
            call,
            TypeError,
            name,
            "config",
            "LRLCConfig(**config)",
            "from_dict",
        )
        for name, call in [
            ("forward", lambda tmp: L.forward(X, PARAMS, DICT)),
            ("vjp", lambda tmp: L.vjp(X, PARAMS, DICT, DY)),
            ("init_params", lambda tmp: L.init_params(DICT)),
            ("combining_weights", lambda tmp: L.combining_weights(PARAMS, DICT)),
            ("to_locally_connected", lambda tmp: L.to_locally_connected(PARAMS, DICT)),
            ("locally_connected", lambda tmp: L.locally_connected(X, *_lc(), DICT)),
            ("param_shapes", lambda tmp: L.param_shapes(DICT)),
            ("check_params", lambda tmp: L.check_params(PARAMS, DICT)),
            ("initial_value", lambda tmp: L.initial_value("basis", DICT)),
            ("save_params", lambda tmp: L.save_params(tmp / "c.safetensors", PARAMS, DICT)),
        ]
    ],
    _bad(
        "config-none-lc_shapes", lambda tmp: L.lc_shapes(None), TypeError, "lc_shapes", "NoneType"
    ),
    _bad("config-str-check_input", lambda tmp: L.check_input(X, "c"), TypeError, "config", "str"),
    # init_params: the seed is a non-negative int (None would silently draw fresh entropy).
    _bad("seed-negative", lambda tmp: L.init_params(CONFIG, seed=-1), ValueError, "seed", "-1"),
    _bad("seed-float", lambda tmp: L.init_params(CONFIG, seed=1.5), TypeError, "seed", "1.5"),
    _bad("seed-bool", lambda tmp: L.init_params(CONFIG, seed=True), TypeError, "seed", "True"),
    _bad("seed-str", lambda tmp: L.init_params(CONFIG, seed="0"), TypeError, "seed", "'0'"),
    _bad("seed-none", lambda tmp: L.init_params(CONFIG, seed=None), TypeError, "seed", "None"),
    _bad("dtype-int", lambda tmp: L.init_params(CONFIG, dtype=np.int32), TypeError, "dtype"),
    _bad(
        "dtype-bf16", lambda tmp: L.init_params(CONFIG, dtype="bfloat16"), TypeError, "'bfloat16'"
    ),
    _bad("dtype-none", lambda tmp: L.init_params(CONFIG, dtype=None), TypeError, "dtype", "None"),
    _bad(
        "init-too-large",
        lambda tmp: L.init_params(L.LRLCConfig(1, 1, 1, 4, 10**5, combining="full")),
        ValueError,
        "'logits'",
        "MAX_ELEMENTS",
    ),
    # Parameters: array-likes are converted; the tensor is named in every error.
    _bad(
        "param-int-list",
        lambda tmp: L.forward(X, _with(channel_bias=[0, 0, 0, 0]), CONFIG),
        TypeError,
        "params['channel_bias']",
        "int64",
        "list",
    ),
    _bad(
        "param-scalar",
        lambda tmp: L.forward(X, _with(channel_bias=0.0), CONFIG),
        ValueError,
        "params['channel_bias'] has shape ()",
        "expected (4,)",
    ),
    _bad(
        "param-none",
        lambda tmp: L.forward(X, _with(col_bias=None), CONFIG),
        TypeError,
        "'col_bias'",
    ),
    _bad(
        "param-ragged",
        lambda tmp: L.forward(X, _with(row_bias=[[0.0], [0.0, 1.0]]), CONFIG),
        ValueError,
        "params['row_bias'] is not an array",
    ),
    _bad(
        "param-complex",
        lambda tmp: L.forward(X, _with(basis=PARAMS["basis"] + 0j), CONFIG),
        TypeError,
        "'basis'",
        "complex128",
    ),
    _bad(
        "params-list", lambda tmp: L.forward(X, list(PARAMS.values()), CONFIG), TypeError, "mapping"
    ),
    _bad(
        "param-int-name",
        lambda tmp: L.forward(X, {**PARAMS, 0: X}, CONFIG),
        ValueError,
        "unexpected tensors [0]",
    ),
    _bad(
        "check_params-list",
        lambda tmp: L.check_params(_with(channel_bias=[0.0] * 4), CONFIG),
        TypeError,
        "params['channel_bias'] is a list",
    ),
    _bad(
        "combining_weights-int-logits",
        lambda tmp: L.combining_weights(_with(row_logits=np.zeros((5, 2), int)), CONFIG),
        TypeError,
        "'row_logits'",
        "int64",
    ),
    _bad(
        "to_lc-int-basis",
        lambda tmp: L.to_locally_connected(_with(basis=PARAMS["basis"].astype(int)), CONFIG),
        TypeError,
        "'basis'",
    ),
    # The input x and the cotangent dy.
    _bad(
        "x-dict", lambda tmp: L.forward(PARAMS, X, CONFIG), TypeError, "x must be an array", "dict"
    ),
    _bad(
        "x-ragged",
        lambda tmp: L.forward([[1.0], [1.0, 2.0]], PARAMS, CONFIG),
        ValueError,
        "x is not an array",
    ),
    _bad("x-none", lambda tmp: L.forward(None, PARAMS, CONFIG), TypeError, "x", "NoneType"),
    _bad("x-complex", lambda tmp: L.forward(X + 0j, PARAMS, CONFIG), TypeError, "x", "complex128"),
    _bad("x-bool", lambda tmp: L.forward(X > 0, PARAMS, CONFIG), TypeError, "x", "bool"),
    _bad(
        "x-nchw",
        lambda tmp: L.forward(X.transpose(0, 3, 1, 2), PARAMS, CONFIG),
        ValueError,
        "channels",
        "in_channels=3",
    ),
    _bad("dy-none", lambda tmp: L.vjp(X, PARAMS, CONFIG, None), TypeError, "dy"),
    _bad(
        "dy-batch",
        lambda tmp: L.vjp(X, PARAMS, CONFIG, DY[:1]),
        ValueError,
        "dy has shape (1, 5, 4, 4)",
        "(2, 5, 4, 4)",
    ),
    _bad("dy-int", lambda tmp: L.vjp(X, PARAMS, CONFIG, DY.astype(int)), TypeError, "dy", "int64"),
    _bad(
        "idep-without-x",
        lambda tmp: L.combining_weights(L.init_params(IDEP), IDEP),
        ValueError,
        "needs the input x",
    ),
    # The locally connected layer and conv2d.
    _bad(
        "lc-kernel-batch",
        lambda tmp: L.locally_connected(X, np.stack([_lc()[0]] * 3), _lc()[1], CONFIG),
        ValueError,
        "locally connected kernel has shape (3, 5, 4",
        "(2, 5, 4",
    ),
    _bad(
        "lc-bias-shape",
        lambda tmp: L.locally_connected(X, _lc()[0], _lc()[1][0], CONFIG),
        ValueError,
        "bias has shape (4, 4)",
    ),
    _bad(
        "lc-kernel-int",
        lambda tmp: L.locally_connected(X, _lc()[0].astype(int), _lc()[1], CONFIG),
        TypeError,
        "kernel",
        "int64",
    ),
    _bad(
        "conv2d-stride-zero",
        lambda tmp: L.conv2d(X, np.zeros((3, 3, 3, 1)), stride=0),
        ValueError,
        "conv2d.stride",
    ),
    _bad(
        "conv2d-dilation-float",
        lambda tmp: L.conv2d(X, np.zeros((3, 3, 3, 1)), dilation=1.5),
        TypeError,
        "conv2d.dilation",
    ),
    _bad(
        "conv2d-padding",
        lambda tmp: L.conv2d(X, np.zeros((3, 3, 3, 1)), padding="full"),
        ValueError,
        "conv2d.padding",
        "'full'",
    ),
    _bad(
        "conv2d-empty-window",
        lambda tmp: L.conv2d(X, np.zeros((0, 3, 3, 1))),
        ValueError,
        "empty window",
    ),
    _bad(
        "conv2d-channels",
        lambda tmp: L.conv2d(X, np.zeros((3, 3, 2, 1))),
        ValueError,
        "2 input channels",
        "x has 3",
    ),
    # Building blocks: never broadcast, every operand named.
    _bad(
        "normalize-unknown",
        lambda tmp: L.reference.normalize_weights(np.zeros((2, 3)), "L2"),
        ValueError,
        "normalize_weights",
        "'L2'",
    ),
    _bad(
        "normalize_vjp-unknown",
        lambda tmp: L.reference.normalize_weights_vjp(*[np.zeros((2, 3))] * 3, "softplus"),
        ValueError,
        "'softplus'",
    ),
    _bad(
        "combine-rank-mismatch",
        lambda tmp: L.combine(
            np.zeros((1, 5, 4, 2, 4)), np.zeros((1, 5, 4, 3)), np.zeros((5, 4, 4))
        ),
        ValueError,
        "combine",
        "axis 'k'",
    ),
    _bad(
        "combine-bias",
        lambda tmp: L.combine(np.zeros((1, 5, 4, 2, 4)), np.zeros((1, 5, 4, 2)), np.zeros(4)),
        ValueError,
        "combine: bias has shape (4,)",
    ),
    _bad(
        "basis_responses-rank",
        lambda tmp: L.basis_responses(np.zeros((1, 5, 4, 3, 3)), PARAMS["basis"]),
        ValueError,
        "basis_responses: patches",
    ),
    _bad(
        "position_banks-broadcast",
        lambda tmp: L.position_banks(np.zeros((5, 4, 1)), PARAMS["basis"]),
        ValueError,
        "position_banks",
        "axis 'k' has size",
    ),
    _bad(
        "stack_responses-count",
        lambda tmp: L.stack_responses([], MIXED),
        ValueError,
        "0 responses",
        "2",
    ),
    _bad(
        "bias_map-int-dtype",
        lambda tmp: L.bias_map(PARAMS, CONFIG, np.int64),
        TypeError,
        "bias_map",
        "dtype",
    ),
    _bad(
        "embedded_basis-missing",
        lambda tmp: L.embedded_basis({"basis.0": np.zeros((3, 3, 3, 4))}, MIXED),
        ValueError,
        "'basis.1'",
    ),
    _bad(
        "group_patches-x",
        lambda tmp: L.group_patches(np.zeros((1, 6, 6, 3)), CONFIG),
        ValueError,
        "spatial size",
    ),
    _bad("resize_matrix-zero", lambda tmp: L.resize_matrix(0, 3), ValueError, "n_in", ">= 1"),
    _bad("resize_matrix-float", lambda tmp: L.resize_matrix(3, 2.5), TypeError, "n_out", "2.5"),
    _bad(
        "resize_bilinear-rank",
        lambda tmp: L.resize_bilinear(np.zeros((4, 4, 1)), (2, 2)),
        ValueError,
        "rank 4",
    ),
    _bad(
        "resize_bilinear-size",
        lambda tmp: L.resize_bilinear(np.zeros((1, 4, 4, 1)), (0, 2)),
        ValueError,
        "size",
    ),
    _bad(
        "working_dtype_name-type",
        lambda tmp: L.working_dtype_name(np.float16),
        TypeError,
        "dtype name",
    ),
    _bad("glorot_fans-int", lambda tmp: L.glorot_fans(5), TypeError, "shape"),
    _bad(
        "initial_value-name",
        lambda tmp: L.initial_value("logits", CONFIG),
        ValueError,
        "'logits'",
        "basis",
    ),
    # Sizes the reference refuses up front, naming the array (never numpy's "array is too big").
    _bad(
        "patches-too-large",
        lambda tmp: L.forward(
            np.zeros((1, 300, 300, 1)),
            L.init_params(L.LRLCConfig(1, 1, 300, 1, 300, padding="same")),
            L.LRLCConfig(1, 1, 300, 1, 300, padding="same"),
        ),
        ValueError,
        "patches",
        "MAX_ELEMENTS",
    ),
    _bad(
        "lc-kernel-too-large",
        lambda tmp: L.to_locally_connected(
            L.init_params(L.LRLCConfig(1, 1, [3, 3], 2, 5, dilation=[1, 10**5], padding="same")),
            L.LRLCConfig(1, 1, [3, 3], 2, 5, dilation=[1, 10**5], padding="same"),
        ),
        ValueError,
        "embedded_basis",
        "MAX_ELEMENTS",
    ),
    # Checkpoints: reading. Errors name the requested path; nothing is unpickled.
    _bad(
        "load-directory",
        lambda tmp: L.load_params(tmp),
        IsADirectoryError,
        "directory",
        str(os.sep),
    ),
    _bad(
        "load-missing",
        lambda tmp: L.load_params(tmp / "none.safetensors"),
        FileNotFoundError,
        "none.safetensors",
    ),
    _bad(
        "load-fifo",
        lambda tmp: L.load_params(_fifo(tmp)),
        ValueError,
        "pipe.safetensors",
        "regular file",
    ),
    _bad(
        "load-empty-file",
        lambda tmp: L.load_params(
            (tmp / "e.safetensors", (tmp / "e.safetensors").write_bytes(b""))[0]
        ),
        ValueError,
        "e.safetensors",
        "not a readable safetensors file",
    ),
    _bad("load-path-int", lambda tmp: L.load_params(3), TypeError, "path", "int"),
    _bad("load-path-empty", lambda tmp: L.load_params(""), ValueError, "path is empty"),
    _bad(
        "load-float8",
        lambda tmp: L.load_params(_checkpoint_with(tmp, "basis", "F8_E4M3", 1)),
        ValueError,
        "'basis'",
        "float8_e4m3fn",
    ),
    _bad(
        "load-float8-e5m2",
        lambda tmp: L.load_params(_checkpoint_with(tmp, "row_logits", "F8_E5M2", 1)),
        ValueError,
        "'row_logits'",
        "float8_e5m2",
    ),
    _bad(
        "load-int32",
        lambda tmp: L.load_params(_checkpoint_with(tmp, "channel_bias", "I32", 4)),
        ValueError,
        "'channel_bias'",
        "int32",
    ),
    _bad(
        "load-bool",
        lambda tmp: L.load_params(_checkpoint_with(tmp, "col_bias", "BOOL", 1)),
        ValueError,
        "'col_bias'",
        "bool",
    ),
    _bad(
        "load-bfloat16-in-numpy",
        lambda tmp: L.load_params(_checkpoint_with(tmp, "basis", "BF16", 2)),
        ValueError,
        "'basis'",
        "bfloat16",
        "read_checkpoint",
        "lrlc_torch",
    ),
    _bad(
        "load-config-too-deep",
        lambda tmp: L.load_params(_raw_file(tmp / "d.safetensors", {}, "[" * 10**5)),
        ValueError,
        "d.safetensors",
        "deeply",
    ),
    _bad(
        "load-config-missing-field",
        lambda tmp: L.load_params(
            _raw_file(
                tmp / "m.safetensors",
                {},
                json.dumps({k: v for k, v in DICT.items() if k != "rank"}),
            )
        ),
        ValueError,
        "m.safetensors",
        "rank",
    ),
    # Checkpoints: writing. Atomic; errors name the requested path, never the temporary file.
    _bad(
        "save-missing-directory",
        lambda tmp: L.save_params(tmp / "no" / "c.safetensors", PARAMS, CONFIG),
        FileNotFoundError,
        "c.safetensors",
        "does not exist",
    ),
    _bad(
        "save-onto-directory",
        lambda tmp: L.save_params(tmp, PARAMS, CONFIG),
        IsADirectoryError,
        "directory",
    ),
    _bad(
        "save-under-a-file",
        lambda tmp: L.save_params(_saved(tmp) / "c.safetensors", PARAMS, CONFIG),
        NotADirectoryError,
        "c.safetensors",
    ),
    _bad(
        "save-path-none",
        lambda tmp: L.save_params(None, PARAMS, CONFIG),
        TypeError,
        "path",
        "NoneType",
    ),
    _bad(
        "save-int-tensor",
        lambda tmp: L.save_params(
            tmp / "c.safetensors", _with(channel_bias=np.zeros(4, int)), CONFIG
        ),
        TypeError,
        "'channel_bias'",
        "int64",
    ),
    _bad(
        "save-longdouble",
        lambda tmp: L.save_params(
            tmp / "c.safetensors", _with(col_bias=np.zeros(4, np.longdouble)), CONFIG
        ),
        TypeError,
        "'col_bias'",
        "float64",
    ),
    _bad(
        "save-float8",
        lambda tmp: L.save_params(
            tmp / "c.safetensors", _with(row_bias=np.zeros(5, _ml_dtypes().float8_e4m3fn)), CONFIG
        ),
        TypeError,
        "'row_bias'",
        "float8_e4m3fn",
    ),
    _bad(
        "save-inexact-bfloat16",
        lambda tmp: L.save_params(
            tmp / "c.safetensors", PARAMS, CONFIG, stored_dtypes={"basis": "bfloat16"}
        ),
        ValueError,
        "'basis'",
        "bfloat16 cannot represent exactly",
    ),
    _bad(
        "save-inexact-float16",
        lambda tmp: L.save_params(
            tmp / "c.safetensors",
            _with(channel_bias=np.full(4, 1e5)),
            CONFIG,
            stored_dtypes={"channel_bias": "float16"},
        ),
        ValueError,
        "'channel_bias'",
        "float16 cannot represent exactly",
    ),
    _bad(
        "save-stored-dtype-unknown",
        lambda tmp: L.save_params(
            tmp / "c.safetensors", PARAMS, CONFIG, stored_dtypes={"basis": "float8"}
        ),
        ValueError,
        "stored_dtypes['basis']",
        "'float8'",
    ),
    _bad(
        "save-stored-dtype-name",
        lambda tmp: L.save_params(
            tmp / "c.safetensors", PARAMS, CONFIG, stored_dtypes={"weights": "float32"}
        ),
        ValueError,
        "['weights']",
    ),
    _bad(
        "save-missing-tensor",
        lambda tmp: L.save_params(
            tmp / "c.safetensors", {k: v for k, v in PARAMS.items() if k != "basis"}, CONFIG
        ),
        ValueError,
        "missing tensors ['basis']",
    ),
    # The conformance package's Python API.
    _bad(
        "run-dtypes-str",
        lambda tmp: conformance.run(NumpyBackend(), dtypes="float32"),
        TypeError,
        "dtypes",
        "'float32'",
    ),
    _bad(
        "run-dtype-unknown",
        lambda tmp: conformance.run(NumpyBackend(), dtypes=["float8"]),
        ValueError,
        "'float8'",
    ),
    _bad(
        "run-seed-negative",
        lambda tmp: conformance.run(NumpyBackend(), seed=-1),
        ValueError,
        "seed",
        "-1",
    ),
    _bad(
        "run-checks-unknown",
        lambda tmp: conformance.run(NumpyBackend(), checks=["fwd"]),
        ValueError,
        "['fwd']",
    ),
    _bad(
        "tolerance-dtype",
        lambda tmp: conformance.tolerance("float8", CONFIG, 1),
        ValueError,
        "'float8'",
    ),
    _bad(
        "numpy-adapter-option",
        lambda tmp: conformance.backends.load("numpy", strategy="lc"),
        ValueError,
        "['strategy']",
    ),
]


def test_the_catalogue_is_large_and_its_ids_unique():
    ids = [bad.id for bad in BAD]
    assert len(set(ids)) == len(ids)
    assert len(BAD) + len(CLI_BAD) >= 80


@pytest.mark.parametrize("bad", BAD, ids=[bad.id for bad in BAD])
def test_bad_input_is_a_clear_error(bad, tmp_path):
    with pytest.raises(bad.error) as info:
        bad.call(tmp_path)
    message = str(info.value)
    for word in bad.words:
        assert word in message, message
    assert ".tmp" not in message  # a failed write never names its temporary file


# --- The command line: one line on stderr, exit 2 --------------------------------------------

CLI_BAD = [
    (["--seed", "-1"], "argument --seed: expected a non-negative integer, got '-1'"),
    (["--seed", "1.5"], "got '1.5'"),
    (["--option", "foo"], "expected KEY=VALUE, got 'foo'"),
    (["--option", "=lc"], "expected KEY=VALUE, got '=lc'"),
    (["--option", "strategy="], "expected KEY=VALUE"),
    (["--option", "strategy=lc"], "numpy adapter: unknown options ['strategy']"),
    (["--option", "a=1", "--option", "a=2"], "'a' given more than once"),
    (["--dtype", "float8"], "argument --dtype: invalid choice: 'float8'"),
    (["--dtype", "float32", "float32"], "float32 given more than once"),
    (["--device", "quantum"], "argument --device: invalid choice: 'quantum'"),
    (["--backend", "mxnet"], "argument --backend: invalid choice: 'mxnet'"),
    (["--json", ""], "argument --json: expected a file path"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
]


@pytest.mark.parametrize("argv, words", CLI_BAD, ids=[" ".join(a) for a, _ in CLI_BAD])
def test_bad_command_line_prints_one_line_and_exits_2(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        conformance_main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and words in err, err


def test_json_onto_a_directory_is_refused_before_running(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        conformance_main(["--json", str(tmp_path)])
    assert info.value.code == 2
    assert "expected a file path, got the directory" in capsys.readouterr().err


def test_nothing_ran_is_exit_3_not_a_failure(capsys, tmp_path):
    status = conformance_main(["--device", "gpu", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert status == 3
    assert "numpy: NOTHING RAN" in out and "nothing ran for numpy" in out and "FAILED" not in out
    assert json.loads((tmp_path / "r.json").read_text())[0]["ok"] is False


def test_command_line_exit_status_in_a_process():
    result = subprocess.run(
        [sys.executable, "-m", "conformance", "--seed", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "python -m conformance: error: argument --seed: expected a non-negative integer, got '-1'"
    ]


# --- Unusual but valid inputs: the exact result -----------------------------------------------

VALID_CONFIGS = {
    "fixed": CONFIG,
    "idep": IDEP,
    "mixed": MIXED,
    "l2-full": L.LRLCConfig(3, 4, 3, 3, (7, 6), combining="full", normalize="l2"),
}


@pytest.mark.parametrize("name", VALID_CONFIGS)
def test_an_empty_batch_gives_an_empty_output_and_zero_gradients(name):
    config = VALID_CONFIGS[name]
    x, params, _ = case_data(Case(name, config, batch=0), seed=0)
    out_shape = (0, *config.output_size, config.out_channels)
    assert L.forward(x, params, config).shape == out_shape
    dx, grads = L.vjp(x, params, config, np.zeros(out_shape))
    assert dx.shape == x.shape
    assert set(grads) == set(params)
    for name_, grad in grads.items():
        assert grad.shape == params[name_].shape and not grad.any(), name_
    x_arg = x if config.input_dependent else None
    kernel, bias = L.to_locally_connected(params, config, x_arg)
    assert L.locally_connected(x, kernel, bias, config).shape == out_shape
    assert L.combining_weights(params, config, x_arg).shape[-1] == config.rank


def test_an_empty_batch_through_conv2d():
    assert L.conv2d(np.zeros((0, 5, 5, 2)), np.ones((3, 3, 2, 4)), padding="same").shape == (
        0,
        5,
        5,
        4,
    )


# Logits near each dtype's largest finite value: sum_k w~^2 overflows, the weights must not.
EXTREMES = {"float16": 6.0e4, "float32": 1e20, "float64": 1e200}


@pytest.mark.parametrize("dtype", [*EXTREMES, "float32-max", "float64-max"])
@pytest.mark.parametrize("normalize", ["l2", "softmax"])
def test_extreme_logits_give_finite_unit_weights_and_gradients(dtype, normalize):
    dtype, _, at_max = dtype.partition("-")
    big = float(np.finfo(dtype).max) if at_max else EXTREMES[dtype]
    config = L.LRLCConfig(3, 4, 3, 3, (7, 6), combining="full", normalize=normalize)
    x, params, dy = case_data(Case("extreme", config), seed=0)
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=params["logits"].shape)
    params["logits"] = big * signs
    params = {name: value.astype(dtype) for name, value in params.items()}
    x, dy = x.astype(dtype), dy.astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # nothing overflows
        weights = L.combining_weights(params, config)
        y = L.forward(x, params, config)
        dx, grads = L.vjp(x, params, config, dy)
    assert weights.dtype == np.dtype(dtype)
    if normalize == "l2":  # every logit has magnitude `big`: w = sign / sqrt(K)
        np.testing.assert_array_equal(weights, (signs / np.sqrt(3)).astype(dtype))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert all(np.all(np.isfinite(grad)) for grad in grads.values())


def test_l2_keeps_the_floor_of_the_unscaled_sum_of_squares():
    """Below 1e-12 (sum of squares, taken as written) w = w~ / 1e-6 exactly; above, w~ / |w~|."""
    logits = np.array([[3e-7, 4e-7], [6e-7, 8e-7], [0.0, 0.0]])  # squares 2.5e-13, 1e-12, 0
    weights = L.reference.normalize_weights(logits, "l2")
    np.testing.assert_array_equal(weights[0], logits[0] / np.sqrt(1e-12))
    np.testing.assert_array_equal(weights[2], [0.0, 0.0])
    assert (logits[1] ** 2).sum() <= 1e-12 or np.allclose(weights[1], [0.6, 0.8])
    dlogits = L.reference.normalize_weights_vjp(np.ones_like(logits), logits, weights, "l2")
    np.testing.assert_array_equal(dlogits[0], np.ones(2) / np.sqrt(1e-12))


@pytest.mark.parametrize("name", VALID_CONFIGS)
def test_a_nan_stays_in_its_own_example(name):
    config = VALID_CONFIGS[name]
    x, params, dy = case_data(Case(name, config, batch=3), seed=0)
    x[1, 2, 3, 0] = np.nan
    y = L.forward(x, params, config)
    assert np.isnan(y[1]).any()
    clean = [0, 2]
    np.testing.assert_array_equal(y[clean], L.forward(x[clean], params, config))
    dx, _ = L.vjp(x, params, config, dy)
    want_dx, _ = L.vjp(x[clean], params, config, dy[clean])
    np.testing.assert_allclose(dx[clean], want_dx, rtol=0, atol=1e-13)
    assert np.all(np.isfinite(dx[clean]))


def test_a_dilation_far_beyond_the_input_reads_padding_only():
    """Dilation 10^9 with 'same' padding: only the centre tap meets the input (the others read
    padding), so the layer is a 1x1 convolution; the padding is never materialised."""
    config = L.LRLCConfig(2, 3, 3, 1, (5, 4), dilation=10**9, padding="same", spatial_bias=False)
    x, params, dy = case_data(Case("dilated", config, batch=2), seed=0)
    centre = params["basis"][0, 1:2, 1:2]
    want = L.conv2d(x, centre) + params["channel_bias"]
    np.testing.assert_allclose(L.forward(x, params, config), want, rtol=0, atol=1e-13)
    dx, _ = L.vjp(x, params, config, dy)
    np.testing.assert_allclose(dx, np.einsum("bijo,co->bijc", dy, centre[0, 0]), atol=1e-13)


# --- Checkpoints keep every tensor's stored dtype ---------------------------------------------


def test_each_tensor_keeps_its_dtype(tmp_path):
    """The issue's case: a float16 basis beside float64 and float32 tensors."""
    params = {name: value.astype(np.float64) for name, value in PARAMS.items()}
    params["basis"] = params["basis"].astype(np.float16)
    params["row_bias"] = params["row_bias"].astype(np.float32)
    path = tmp_path / "mixed.safetensors"
    L.save_params(path, params, CONFIG)
    loaded, config = L.load_params(path)
    assert config == CONFIG
    for name, value in params.items():
        assert loaded[name].dtype == value.dtype, name
        np.testing.assert_array_equal(loaded[name], value)


def test_bfloat16_round_trips_through_read_checkpoint(tmp_path):
    """NumPy has no bfloat16: read_checkpoint gives its exact values as float32 and says
    they were bfloat16; save_params writes them back as bfloat16, bit for bit."""
    rounded = {
        name: conformance.round_to(value, "bfloat16").astype(np.float32)
        for name, value in PARAMS.items()
    }
    stored = {name: "bfloat16" for name in ("basis", "row_logits")}
    path = tmp_path / "bf16.safetensors"
    L.save_params(path, rounded, CONFIG, stored_dtypes=stored)
    checkpoint = L.read_checkpoint(path)
    assert checkpoint.config == CONFIG
    assert checkpoint.stored_dtypes == {name: stored.get(name, "float32") for name in PARAMS}
    for name, value in rounded.items():
        assert checkpoint.params[name].dtype == np.float32
        np.testing.assert_array_equal(checkpoint.params[name], value)
    again = tmp_path / "again.safetensors"
    L.save_params(
        again, checkpoint.params, checkpoint.config, stored_dtypes=checkpoint.stored_dtypes
    )
    assert again.read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match="bfloat16"):
        L.load_params(path)


def test_bfloat16_arrays_of_ml_dtypes_are_written_as_bfloat16(tmp_path):
    ml_dtypes = _ml_dtypes()
    params = {**PARAMS, "basis": PARAMS["basis"].astype(ml_dtypes.bfloat16)}
    path = tmp_path / "c.safetensors"
    L.save_params(path, params, CONFIG)
    checkpoint = L.read_checkpoint(path)
    assert checkpoint.stored_dtypes["basis"] == "bfloat16"
    np.testing.assert_array_equal(checkpoint.params["basis"], params["basis"].astype(np.float32))


def test_files_of_other_writers_read_the_same(tmp_path):
    """A file from safetensors' own writer (as the framework backends write) and ours agree."""
    from safetensors.numpy import save_file

    theirs = tmp_path / "theirs.safetensors"
    save_file(
        {k: np.ascontiguousarray(v) for k, v in PARAMS.items()},
        str(theirs),
        {"lrlc_config": CONFIG.to_json()},
    )
    ours = _saved(tmp_path)
    for path in (theirs, ours):
        params, config = L.load_params(path)
        assert config == CONFIG
        for name, value in PARAMS.items():
            np.testing.assert_array_equal(params[name], value)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    before = path.read_bytes()

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(os, "replace", refuse)
    changed = {**PARAMS, "channel_bias": np.ones(4)}
    with pytest.raises(PermissionError) as info:
        L.save_params(path, changed, CONFIG)
    assert str(path) in str(info.value) and ".tmp" not in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_write_through_a_link_replaces_the_target(tmp_path):
    target = _saved(tmp_path)
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    L.save_params(link, {**PARAMS, "channel_bias": np.ones(4)}, CONFIG)
    assert link.is_symlink()
    np.testing.assert_array_equal(L.load_params(target)[0]["channel_bias"], np.ones(4))


# --- Hypothesis: wrong types and ranges in every LRLCConfig field -----------------------------

FIELD_NAMES = list(FIELDS)

# Values of many kinds: some valid for some fields, most valid for none.
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.integers(min_value=2**40, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(
        ["valid", "same", "SAME", "rowcol", "full", "row", "col", "softmax", "l2", "none"]
    ),
    st.binary(max_size=3),
    st.lists(st.integers(-2, 5), max_size=4),
    st.tuples(st.integers(-2, 5), st.integers(-2, 5)),
    st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
    st.tuples(
        st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
        st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
    ),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=3),
    st.lists(st.one_of(st.integers(0, 4), st.floats(), st.text(max_size=1)), max_size=3),
    st.dictionaries(st.integers(0, 3), st.integers(0, 3), max_size=2),
    st.frozensets(st.integers(1, 4), max_size=3),
    st.builds(np.int64, st.integers(-2, 5)),
    st.builds(np.array, st.lists(st.integers(1, 4), min_size=1, max_size=2)),
    st.just(np.bool_(True)),
)


@st.composite
def valid_fields(draw) -> dict:
    """The fields of a valid config on small shapes, plain or mixed, as keyword arguments."""
    rank = draw(st.integers(1, 4))
    mixed = draw(st.booleans())
    combining = draw(st.sampled_from(L.COMBINING_MODES))
    fields = dict(
        in_channels=draw(st.integers(1, 4)),
        out_channels=draw(st.integers(1, 4)),
        kernel_size=draw(
            st.lists(st.integers(1, 4), min_size=rank, max_size=rank)
            if mixed
            else st.integers(1, 3)
        ),
        rank=rank,
        input_size=draw(st.tuples(st.integers(3, 9), st.integers(3, 9))),
        stride=draw(st.integers(1, 2)),
        dilation=draw(st.integers(1, 2)),
        padding="same"
        if mixed
        else draw(st.sampled_from(["valid", "same", 1, (0, 2), ((1, 0), (2, 1))])),
        combining=combining,
        normalize=draw(st.sampled_from(L.NORMALIZATIONS)),
        spatial_bias=draw(st.booleans()),
        channel_bias=draw(st.booleans()),
        input_dependent=combining == "full" and draw(st.booleans()),
    )
    try:
        L.LRLCConfig(**fields)
    except ValueError:  # an empty output grid: valid fields, not a valid config
        assume(False)
    return fields


def _valid_or_clear(fields: dict, culprits) -> None:
    """LRLCConfig(**fields) is a config that serialises and has parameters, or raises
    TypeError/ValueError whose message names one of `culprits`; nothing else."""
    try:
        config = L.LRLCConfig(**fields)
    except (TypeError, ValueError) as err:
        assert any(name in str(err) for name in culprits), (str(err), culprits)
        return
    assert L.LRLCConfig.from_json(config.to_json()) == config
    assert min(config.output_size) >= 1
    assert set(L.param_shapes(config)) >= set(config.basis_names)


@settings(max_examples=300, deadline=None)
@given(valid_fields(), st.sampled_from(FIELD_NAMES), ANYTHING)
def test_one_wrong_field_is_named_in_the_error(fields, field, value):
    _valid_or_clear({**fields, field: value}, [field])


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({name: ANYTHING for name in FIELD_NAMES}))
def test_any_field_values_give_a_config_or_a_clear_error(fields):
    _valid_or_clear(fields, FIELD_NAMES)


@settings(max_examples=150, deadline=None)
@given(
    valid_fields(),
    st.dictionaries(
        st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=4)), ANYTHING, max_size=3
    ),
)
def test_from_dict_gives_a_config_or_a_clear_error(fields, changes):
    data = {**fields, **changes}
    try:
        config = L.LRLCConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        assert "LRLCConfig" in str(err) and any(
            name in str(err) for name in [*FIELD_NAMES, *map(repr, changes)]
        )
        return
    assert L.LRLCConfig.from_json(config.to_json()) == config
