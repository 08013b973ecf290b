"""DerainNet and its presets: shapes, dtypes, memory formats, autograd, config handling and export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import sapnet
from sapnet import DerainNet, DerainNetConfig, create_model, list_models

# Small variants of every architecture family, so that each forward pass takes milliseconds.
SMALL = {"stages": 2, "channels": 8}
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "sapnet-lstm": ("sapnet", {}),
    "sapnet-gru": ("sapnet", {"recurrent": "gru"}),
    "sapnet-none": ("sapnet", {"recurrent": "none"}),
    "prenet-lstm": ("prenet", {}),
    "prenet-gru": ("prenet", {"recurrent": "gru"}),
    "prenet-none": ("prenet", {"recurrent": "none"}),
    # the topologies of PReNet's variants, ablations and real-rain models
    "prenet_r": ("prenet_r", {}),
    "prn_r": ("prn_r", {}),
    "prenet_lstm": ("prenet_lstm", {}),
    "prenet_gru": ("prenet_gru", {}),
    "prenet_x": ("prenet_x", {}),
    "prenet_real": ("prenet_real", {}),
}
# Odd sizes on purpose: the networks take any H and W (no padding multiple).
SHAPES = [(1, 3, 17, 23), (2, 3, 17, 23), (1, 3, 5, 4), (3, 3, 1, 1)]


def make_model(key: str, seed: int = 0) -> DerainNet:
    """A small randomly initialised model of variant ``key`` (see CONFIGS), in eval mode."""
    name, overrides = CONFIGS[key]
    torch.manual_seed(seed)
    return create_model(name, **SMALL, **overrides).eval()


def make_input(shape: tuple[int, ...] = (2, 3, 17, 23), seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g)


@pytest.fixture(params=sorted(CONFIGS))
def model(request: pytest.FixtureRequest) -> DerainNet:
    return make_model(request.param)


@pytest.fixture
def x() -> torch.Tensor:
    return make_input()


# --- forward ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_output_shape_and_dtype(model: DerainNet, shape: tuple[int, ...]) -> None:
    inp = make_input(shape)
    with torch.no_grad():
        out = model(inp)
    assert out.shape == inp.shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_config_is_applied(model: DerainNet) -> None:
    cfg = model.config
    assert cfg.stages == SMALL["stages"] and cfg.channels == SMALL["channels"]
    assert len(model.blocks) == (1 if cfg.shared_block else len(cfg.dilations))
    assert model.input_conv.out_channels == SMALL["channels"]
    assert model.input_conv.in_channels == (6 if cfg.stage_input == "concat" else 3)
    dilations = tuple(block.conv1.dilation[0] for block in model.blocks)
    assert dilations == (cfg.dilations[:1] if cfg.shared_block else cfg.dilations)
    assert model.source is None and model.metadata == {}


def test_presets() -> None:
    assert {"sapnet", "prenet", "prenet_r", "prn", "prn_r"} <= set(list_models())
    sap, pre = create_model("sapnet").config, create_model("prenet").config
    assert (sap.stages, sap.channels, sap.dilations, sap.attention, sap.recurrent) == (
        6,
        32,
        (1, 2, 4, 8, 16),
        True,
        "lstm",
    )
    assert (pre.stages, pre.channels, pre.dilations, pre.attention, pre.recurrent) == (
        6,
        32,
        (1, 1, 1, 1, 1),
        False,
        "lstm",
    )


def test_return_stages(model: DerainNet, x: torch.Tensor) -> None:
    with torch.no_grad():
        final, stages = model(x, return_stages=True)
        plain = model(x)
    assert isinstance(stages, list) and len(stages) == model.config.stages
    assert all(s.shape == x.shape for s in stages)
    assert stages[-1] is final
    torch.testing.assert_close(final, plain, rtol=0, atol=0)
    # Stages differ from each other (the recurrence does something).
    assert not torch.equal(stages[0], stages[-1])


def test_batch_equals_single_images(model: DerainNet, x: torch.Tensor) -> None:
    with torch.no_grad():
        batched = model(x)
        singles = torch.cat([model(x[i : i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)


def test_float64(model: DerainNet, x: torch.Tensor) -> None:
    with torch.no_grad():
        ref = model(x)
        out = model.double()(x.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), ref, rtol=1e-4, atol=1e-5)


def test_channels_last_equals_nchw(model: DerainNet, x: torch.Tensor) -> None:
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x)
        out_input_cl = model(x_cl)
        out_both_cl = model.to(memory_format=torch.channels_last)(x_cl)
    torch.testing.assert_close(out_input_cl, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_both_cl, ref, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_cpu(model: DerainNet, x: torch.Tensor) -> None:
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    # bfloat16 keeps ~3 significant digits; the small random nets stay within a few hundredths.
    assert (out.float() - ref).abs().max() < 0.1


@pytest.mark.parametrize("shape", [(3, 17, 23), (1, 4, 8, 8), (1, 1, 8, 8), (1, 1, 3, 8, 8)])
def test_invalid_input_shape(shape: tuple[int, ...]) -> None:
    net = make_model("sapnet-lstm")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(torch.rand(shape))


# --- autograd and in-place fast paths ----------------------------------------------------------------------


def test_gradients_reach_every_parameter(model: DerainNet, x: torch.Tensor) -> None:
    model.train()
    out = model(x.requires_grad_())
    loss = (out - 0.5).square().mean()
    loss.backward()
    norms = []
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
        norms.append(p.grad.norm())
    assert torch.stack(norms).norm() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inference_mode"])
def test_no_grad_forward_equals_autograd_forward(model: DerainNet, x: torch.Tensor, context: Any) -> None:
    """Without autograd the blocks update activations in place; the result must not change."""
    x_before = x.clone()
    final_grad, stages_grad = model(x, return_stages=True)
    with context():
        final_fast, stages_fast = model(x, return_stages=True)
    torch.testing.assert_close(final_fast, final_grad.detach())
    for fast, slow in zip(stages_fast, stages_grad, strict=True):
        torch.testing.assert_close(fast, slow.detach())
    # The in-place fast path must neither touch the input nor earlier stage outputs.
    torch.testing.assert_close(x, x_before, rtol=0, atol=0)


# --- the recurrent state in and out ------------------------------------------------------------------------

WITH_CELL = sorted(k for k in CONFIGS if make_model(k).cell is not None)


@pytest.mark.parametrize("key", WITH_CELL)
@pytest.mark.parametrize("context", [torch.no_grad, torch.enable_grad], ids=["no_grad", "grad"])
def test_forward_with_state_from_none_is_forward(key: str, context: Any, x: torch.Tensor) -> None:
    """No state given: the zero-state shortcut of the cell, the same values as ``forward`` bit for bit."""
    net = make_model(key)
    with context():
        out, state = net.forward_with_state(x)
        assert torch.equal(out, net(x))
    cells = 2 if net.config.recurrent == "lstm" else 1
    assert len(state) == cells
    for t in state:
        assert t.shape == (x.shape[0], net.config.channels, *x.shape[-2:]) and t.dtype == x.dtype


@pytest.mark.parametrize("key", ["sapnet-lstm", "prenet-gru", "prenet_real"])
def test_forward_with_state_starts_from_the_state_and_leaves_it_alone(key: str, x: torch.Tensor) -> None:
    net = make_model(key)
    with torch.no_grad():
        first, state = net.forward_with_state(x)
        kept = tuple(t.clone() for t in state)
        zeros = tuple(torch.zeros_like(t) for t in state)
        torch.testing.assert_close(net.forward_with_state(x, zeros)[0], first, rtol=1e-5, atol=1e-6)  # zero = none
        again, _ = net.forward_with_state(x, state)
        again_2, _ = net.forward_with_state(x, state)
    assert all(torch.equal(a, b) for a, b in zip(state, kept, strict=True))  # not updated in place
    assert torch.equal(again, again_2)
    assert not torch.allclose(again, first)  # the state matters


def test_forward_with_state_refuses_a_network_without_a_cell_and_bad_states(x: torch.Tensor) -> None:
    for key in sorted(set(CONFIGS) - set(WITH_CELL)):
        with pytest.raises(ValueError, match="no recurrent cell"):
            make_model(key).forward_with_state(x)
    lstm, gru = make_model("prenet-lstm"), make_model("prenet-gru")
    h = torch.zeros(x.shape[0], 8, *x.shape[-2:])
    with pytest.raises(ValueError, match=r"tuple \(h, c\)"):
        lstm.forward_with_state(x, (h,))
    with pytest.raises(ValueError, match=r"tuple \(h,\)"):
        gru.forward_with_state(x, (h, h))
    with pytest.raises(ValueError, match="float of shape"):
        gru.forward_with_state(x, (h[:, :, :-1],))


class _Stateful(torch.nn.Module):
    def __init__(self, net: DerainNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, (h, c) = self.net.forward_with_state(x, (h, c))
        return out, h, c


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace.*` is deprecated:FutureWarning")
def test_forward_with_state_traces() -> None:
    net = make_model("sapnet-lstm")
    x = make_input((1, 3, 17, 23))
    with torch.no_grad():
        _, (h, c) = net.forward_with_state(x)
        traced = torch.jit.trace(_Stateful(net), (x, h, c), check_trace=False)
        other = make_input((1, 3, 17, 23), seed=2)
        for got, want in zip(traced(other, h, c), _Stateful(net)(other, h, c), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# --- configuration ---------------------------------------------------------------------------------------


def test_create_model_unknown_name() -> None:
    with pytest.raises(KeyError) as excinfo:
        create_model("resnet")
    message = excinfo.value.args[0]
    assert "resnet" in message and "prenet" in message and "sapnet" in message


def _manual_forward(net: DerainNet, x0: torch.Tensor) -> torch.Tensor:
    """The stage computation written out for one topology at a time, from the module's own layers."""
    cfg = net.config
    x, state = x0, None
    for _ in range(cfg.stages):
        inp = torch.cat((x0, x), 1) if cfg.stage_input == "concat" else x
        z = torch.relu(net.input_conv(inp))
        if cfg.cell_position == "before" and net.cell is not None:
            z, state = net.cell(z, state)
        for k in range(len(cfg.dilations)):
            block = net.blocks[0 if cfg.shared_block else k]
            z = torch.relu(block(z) + z)
        if cfg.cell_position == "after" and net.cell is not None:
            z, state = net.cell(z, state)
        x = net.output_conv(z) + (x0 if cfg.input_skip else 0)
    return x


@pytest.mark.parametrize("key", ["prenet_r", "prn_r", "prenet_lstm", "prenet_gru", "prenet_x", "prenet_real"])
def test_topology_options(key: str, x: torch.Tensor) -> None:
    net = make_model(key)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _manual_forward(net, x))
    if net.config.shared_block:  # one block's weights for five uses
        unshared = create_model(key.replace("_r", ""), **SMALL)
        one_block = sum(p.numel() for p in unshared.blocks[0].parameters())
        assert sum(p.numel() for p in unshared.parameters()) - sum(p.numel() for p in net.parameters()) == 4 * one_block


@pytest.mark.parametrize(
    "overrides",
    [
        {"stages": 0},
        {"stages": -1},
        {"channels": 0},
        {"dilations": ()},
        {"dilations": (1, 0)},
        {"recurrent": "rnn"},
        {"cell_position": "middle"},
        {"stage_input": "both"},
        {"shared_block": True, "dilations": (1, 2)},
        {"keep_input": 0.0},
        {"keep_input": 1.0},
    ],
    ids=lambda o: ",".join(f"{k}={v!r}" for k, v in o.items()),
)
def test_config_validation(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(overrides))):
        DerainNetConfig(**overrides)
    with pytest.raises(ValueError, match=next(iter(overrides))):
        create_model("sapnet", **overrides)


def test_create_model_unknown_override() -> None:
    with pytest.raises(ValueError, match="unknown DerainNetConfig keys"):
        create_model("sapnet", layers=3)


@pytest.mark.parametrize(
    "config",
    [
        sapnet.models.ARCHITECTURES["sapnet"].config,
        sapnet.models.ARCHITECTURES["prenet"].config,
        sapnet.models.ARCHITECTURES["prenet_real"].config,
        DerainNetConfig(
            stages=3, channels=16, dilations=(1, 3), attention=True, recurrent="gru", attention_reduction=4
        ),
        DerainNetConfig(stages=2, keep_input=0.02),
    ],
    ids=["sapnet", "prenet", "prenet_real", "custom", "keep_input"],
)
def test_config_dict_round_trip(config: DerainNetConfig) -> None:
    d = config.to_dict()
    assert isinstance(d["dilations"], list)
    assert json.loads(json.dumps(d)) == d  # plain Python types only
    assert DerainNetConfig.from_dict(d) == config
    assert DerainNetConfig.from_dict(json.loads(json.dumps(d))) == config
    with pytest.raises(ValueError, match="unknown"):
        DerainNetConfig.from_dict({**d, "extra": 1})


def test_config_dilations_list_becomes_tuple() -> None:
    cfg = DerainNetConfig(dilations=[1, 2])  # type: ignore[arg-type]
    assert cfg.dilations == (1, 2)
    assert hash(cfg) == hash(DerainNetConfig(dilations=(1, 2)))


# --- tracing and export ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace.*` is deprecated:FutureWarning")  # the issue asks for trace
@pytest.mark.parametrize("key", ["sapnet-lstm", "prenet-gru", "prenet_real", "prn_r"])
def test_jit_trace_generalises_to_other_sizes(key: str) -> None:
    net = make_model(key)
    with torch.no_grad():
        traced = torch.jit.trace(net, (make_input((1, 3, 17, 23)),), check_trace=False)
        other = make_input((2, 3, 21, 30), seed=2)
        torch.testing.assert_close(traced(other), net(other), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace.*` is deprecated:FutureWarning")  # the README promises trace
@pytest.mark.parametrize(
    ("arch", "channels", "channels_last"),
    [("sapnet", 8, False), ("prenet", 8, False), ("sapnet", 32, True), ("prenet", 32, True)],
    ids=["sapnet", "prenet", "sapnet-channels_last", "prenet-channels_last"],
)
def test_jit_trace_with_default_arguments(arch: str, channels: int, channels_last: bool) -> None:
    """``torch.jit.trace(model, x)`` as a user calls it: eval mode, grad enabled, the default trace check on (its
    re-run under ``no_grad`` must record the same graph: no in-place fast path while tracing)."""
    assert torch.is_grad_enabled()
    torch.manual_seed(0)
    net = create_model(arch, stages=2, channels=channels).eval()
    x = make_input((1, 3, 17, 23))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    traced = torch.jit.trace(net, x)
    other = make_input((1, 3, 17, 23), seed=2)
    if channels_last:
        other = other.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(traced(other), net(other), rtol=1e-5, atol=1e-5)
    assert "PythonOp" not in str(traced.inlined_graph)  # plain convolutions, no Python autograd function


@pytest.mark.parametrize("quantile", [0.25, 0.75])
def test_keep_input_returns_the_input_where_the_network_changed_it_little(quantile: float) -> None:
    torch.manual_seed(0)
    plain = create_model("prenet", stages=2, channels=8).eval()
    x = torch.rand(2, 3, 12, 16)
    with torch.no_grad():
        raw, stages = plain(x, return_stages=True)
    change = (x - raw).abs().amax(dim=1, keepdim=True)
    threshold = float(change.quantile(quantile))  # a random network: some pixels changed little, some much
    keeping = create_model("prenet", stages=2, channels=8, keep_input=threshold).eval()
    keeping.load_state_dict(plain.state_dict())
    with torch.no_grad():
        out, kept_stages = keeping(x, return_stages=True)
    assert torch.equal(out, torch.where(change <= threshold, x, raw)) and torch.equal(kept_stages[-1], out)
    assert torch.equal(kept_stages[0], stages[0])  # only the final estimate is changed
    assert "keep_input=" in repr(keeping) and "keep_input" not in repr(plain)
    (grad,) = torch.autograd.grad(keeping(x).sum(), [keeping.output_conv.weight])  # trainable through it
    assert grad.abs().sum() > 0


def test_onnx_export_runs_in_onnxruntime(tmp_path: Path, ort: Any) -> None:
    net = make_model("sapnet-lstm")
    inp = make_input((1, 3, 17, 23))
    path = tmp_path / "derain.onnx"
    # The torch.export-based exporter (dynamo=True, the default since torch 2.9) handles this network,
    # including its in-place fast path, so the deprecated TorchScript exporter (dynamo=False) is not needed.
    # Static shapes keep the export at a few seconds; dynamic H / W is covered by the slow test below.
    program = torch.onnx.export(net, (inp,), dynamo=True, verbose=False)
    assert program is not None
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: inp.numpy()})
    with torch.no_grad():
        ref = net(inp)
    torch.testing.assert_close(torch.from_numpy(out), ref, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_onnx_export_dynamic_size(tmp_path: Path, ort: Any) -> None:
    net = make_model("prenet-lstm")
    dim = torch.export.Dim.DYNAMIC
    program = torch.onnx.export(
        net,
        (make_input((1, 3, 17, 23)),),
        dynamo=True,
        dynamic_shapes=({0: dim, 2: dim, 3: dim},),
        verbose=False,
    )
    path = tmp_path / "derain_dynamic.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = make_input((2, 3, 21, 30), seed=2)
    (out,) = session.run(None, {session.get_inputs()[0].name: other.numpy()})
    with torch.no_grad():
        ref = net(other)
    torch.testing.assert_close(torch.from_numpy(out), ref, rtol=0, atol=1e-4)


@pytest.mark.slow  # compiles C++ kernels on the CPU: about a minute
def test_torch_compile_matches_eager() -> None:
    net = make_model("sapnet-lstm")
    compiled = torch.compile(net, fullgraph=True)
    inp = make_input((1, 3, 17, 23))
    with torch.no_grad():
        torch.testing.assert_close(compiled(inp), net(inp), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("dilation", "used"), [(1, 32), (4, 32), (1, 16)])
def test_conv_same_on_the_first_channels_is_the_conv_of_zero_padded_input(dilation: int, used: int) -> None:
    """``conv_same(conv, x, k)`` (the first stage's recurrent input without its zeros) is ``conv(cat(x, 0))``,
    values and gradients."""
    from sapnet.models.blocks import conv_same

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(32, 8, 3, padding=dilation, dilation=dilation)
    x = torch.randn(2, used, 19, 23, requires_grad=True)
    full = torch.cat([x, torch.zeros(2, 32 - used, 19, 23)], 1)
    expected = conv(full)
    g = torch.randn_like(expected)
    ref = torch.autograd.grad(expected, (x, conv.weight, conv.bias), g)
    out = conv_same(conv, x, used)
    got = torch.autograd.grad(out, (x, conv.weight, conv.bias), g)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # float sums in another order
