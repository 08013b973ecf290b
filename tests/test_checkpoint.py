"""Checkpoint I/O: our format, the public SAPNet / PReNet naming, wrappers, and every kind of bad file."""

from __future__ import annotations

import collections
import enum
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import sapnet
from sapnet import CheckpointError, DerainNet, create_model, load_model, save_model
from sapnet.models import load_checkpoint, load_training_state, save_training_state, unwrap_model

SMALL = {"stages": 2, "channels": 8}
METADATA: dict[str, Any] = {
    "epoch": 12,
    "lr": 1e-3,
    "dataset": "RainTrainH",
    "losses": [0.5, 0.25],
    "crop": (64, 64),
    "flags": {"amp": True, "note": None},
}


def make_model(name: str = "sapnet", seed: int = 0, **overrides: Any) -> DerainNet:
    torch.manual_seed(seed)
    return create_model(name, **{**SMALL, **overrides})


def make_input(shape: tuple[int, ...] = (1, 3, 13, 11), seed: int = 1) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


class Opaque:
    """A picklable object that ``weights_only`` loading must refuse."""

    def __init__(self) -> None:
        self.value = 3


# --- our format --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "overrides"), [("sapnet", {}), ("prenet", {}), ("sapnet", {"recurrent": "gru"})])
def test_save_load_round_trip(tmp_path: Path, name: str, overrides: dict[str, Any]) -> None:
    model = make_model(name, **overrides)
    path = save_model(model, tmp_path / "sub" / "model.pt", **METADATA)
    assert path == tmp_path / "sub" / "model.pt" and path.is_file()
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left behind

    loaded = load_model(path)
    assert isinstance(loaded, DerainNet)
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.metadata == METADATA
    assert loaded.source == "sapnet"
    assert_same_weights(loaded, model)
    x = make_input()
    torch.testing.assert_close(forward(loaded, x), forward(model.eval(), x), rtol=0, atol=0)

    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "sapnet" and raw["format_version"] == 1
    assert raw["config"] == model.config.to_dict()
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in raw["state_dict"])


def test_save_without_metadata_and_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_model(make_model(seed=0), path, epoch=1)
    second = make_model(seed=1)
    save_model(second, path)
    loaded = load_model(path)
    assert loaded.metadata == {}
    assert_same_weights(loaded, second)


def test_load_model_device_argument(tmp_path: Path) -> None:
    path = save_model(make_model(), tmp_path / "m.pt")
    loaded = load_model(path, device="cpu")
    assert all(p.device.type == "cpu" for p in loaded.parameters())


@pytest.mark.parametrize(
    "wrap",
    [torch.nn.DataParallel, torch.compile, lambda m: torch.compile(torch.nn.DataParallel(m))],
    ids=["DataParallel", "compile", "compile-DataParallel"],
)
def test_save_unwraps(tmp_path: Path, wrap: Callable[[torch.nn.Module], torch.nn.Module]) -> None:
    model = make_model()
    wrapped = wrap(model)
    assert unwrap_model(wrapped) is model
    path = save_model(wrapped, tmp_path / "wrapped.pt")  # type: ignore[arg-type]
    raw = torch.load(path, weights_only=True)
    assert set(raw["state_dict"]) == set(model.state_dict())
    assert_same_weights(load_model(path), model)


def test_save_rejects_other_modules(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="DerainNet"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x.pt")  # type: ignore[arg-type]
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize(
    "metadata",
    [
        {"obj": Opaque()},
        {"nested": {"deep": [1, Opaque()]}},
        {"where": Path("a")},
        {"d": {1: 2}},
        {"b": b"x"},
    ],
    ids=["object", "nested-object", "path", "int-key", "bytes"],
)
def test_save_rejects_non_plain_metadata(tmp_path: Path, metadata: dict[str, Any]) -> None:
    path = tmp_path / "m.pt"
    with pytest.raises(TypeError, match="metadata"):
        save_model(make_model(), path, **metadata)
    assert not path.exists()


class Level(enum.IntEnum):
    LOW = 1


class Tag(str):
    pass


Pair = collections.namedtuple("Pair", "a b")

# Values that *look* plain (subclasses of dict / tuple / float / int / str). Whatever save_model accepts,
# load_model must read back: otherwise training writes checkpoints that can never be loaded.
LOOKALIKES: dict[str, Any] = {
    "OrderedDict": collections.OrderedDict(a=1),
    "Counter": collections.Counter("abc"),
    "defaultdict": collections.defaultdict(int, a=1),
    "namedtuple": Pair(1, 2),
    "numpy-float64": np.float64(31.5),
    "IntEnum": Level.LOW,
    "str-subclass": Tag("rain"),
}


@pytest.mark.parametrize("kind", sorted(LOOKALIKES))
def test_accepted_metadata_is_loadable(tmp_path: Path, kind: str) -> None:
    value = LOOKALIKES[kind]
    path = tmp_path / "m.pt"
    try:
        save_model(make_model(), path, value=value)
    except TypeError:
        assert not path.exists()
        return  # refused when saving: fine
    loaded = load_model(path)  # accepted when saving: must load
    assert loaded.metadata == {"value": value}


def test_create_model_with_weights(tmp_path: Path) -> None:
    model = make_model("prenet", recurrent="gru")
    path = save_model(model, tmp_path / "m.pt", epoch=3)
    loaded = create_model("prenet", checkpoint_path=path, **SMALL, recurrent="gru")
    assert not loaded.training
    assert loaded.source == "sapnet" and loaded.metadata == {"epoch": 3}
    assert_same_weights(loaded, model)


def test_create_model_with_weights_of_another_network(tmp_path: Path) -> None:
    path = save_model(make_model("prenet"), tmp_path / "prenet.pt")
    with pytest.raises(CheckpointError, match="different network") as excinfo:
        create_model("sapnet", checkpoint_path=path, **SMALL)
    message = str(excinfo.value)
    assert str(path) in message
    assert "attention" in message and "dilations" in message


# --- bad files ---------------------------------------------------------------------------------------------


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nothing.pt"


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.pt"
    path.mkdir()
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.pt"
    path.touch()
    return path


def _truncated(tmp_path: Path) -> Path:
    path = save_model(make_model(), tmp_path / "truncated.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.pt"
    path.write_text("this is not a checkpoint\n")
    return path


def _binary(tmp_path: Path) -> Path:
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes(range(256)) * 4)
    return path


def _counter(tmp_path: Path) -> Path:
    path = tmp_path / "counter.pt"
    torch.save({"weights": torch.zeros(2), "counts": collections.Counter("abc")}, path)
    return path


def _custom_object(tmp_path: Path) -> Path:
    path = tmp_path / "object.pt"
    torch.save({"obj": Opaque()}, path)
    return path


def _foreign_state_dict(tmp_path: Path) -> Path:
    path = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), path)
    return path


def _tensor(tmp_path: Path) -> Path:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    return path


def _future_version(tmp_path: Path) -> Path:
    path = save_model(make_model(), tmp_path / "v99.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    return path


def _malformed_config(tmp_path: Path) -> Path:
    path = save_model(make_model(), tmp_path / "badconfig.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["layers"] = 3
    torch.save(payload, path)
    return path


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    # name: (writer, a phrase the message must contain)
    "missing": (_missing, "no such file"),
    "directory": (_directory, "directory"),
    "empty": (_empty, "cannot be read"),
    "truncated": (_truncated, "cannot be read"),
    "text": (_text, "not a PyTorch checkpoint file"),
    "binary": (_binary, "not a PyTorch checkpoint file"),
    "counter": (_counter, "not a derain checkpoint"),  # weights_only allows Counter
    "custom-object": (_custom_object, "weights_only"),
    "foreign-state-dict": (_foreign_state_dict, "not a SAPNet/PReNet checkpoint"),
    "tensor": (_tensor, "not a derain checkpoint"),
    "format-version-99": (_future_version, "version 99"),
    "malformed-config": (_malformed_config, "malformed"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file(tmp_path: Path, kind: str) -> None:
    writer, phrase = BAD_FILES[kind]
    path = writer(tmp_path)
    with pytest.raises(CheckpointError) as excinfo:
        load_model(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert phrase in message
    # create_model(weights=...) and derain(model=path) go through the same loader.
    with pytest.raises(CheckpointError, match="^" + re.escape(str(path))):
        create_model("sapnet", checkpoint_path=path, **SMALL)


def test_unsafe_pickle_is_not_called_foreign(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as unsafe:
        load_model(_custom_object(tmp_path))
    assert "weights_only" in str(unsafe.value) and "not a PyTorch checkpoint file" not in str(unsafe.value)
    with pytest.raises(CheckpointError) as text:
        load_model(_text(tmp_path))
    assert "weights_only" not in str(text.value)


def test_training_state_round_trip(tmp_path: Path) -> None:
    model = make_model()
    training = {"step": 3, "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}}, "rng": [1, 2]}
    path = save_training_state(model, tmp_path / "last.pt", training, epoch=1)
    checkpoint, loaded = load_training_state(path)
    assert checkpoint.config == model.config and checkpoint.metadata == {"epoch": 1} and checkpoint.path == path
    assert loaded["step"] == 3 and torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], torch.ones(2))
    assert_same_weights(load_model(path), model)  # still an ordinary model file
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["format_version"]) == ("sapnet", 1)
    with pytest.raises(CheckpointError, match="no 'training' state"):
        load_training_state(save_model(model, tmp_path / "plain.pt"))
    with pytest.raises(CheckpointError, match="version 99"):
        load_training_state(_future_version(tmp_path))
    with pytest.raises(TypeError, match="metadata"):
        save_training_state(model, tmp_path / "bad.pt", training, where=Path("a"))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("writer", ["save_model", "save_training_state", "write_image"])
def test_atomic_writes_honour_the_umask(tmp_path: Path, umask: int, writer: str) -> None:
    old = os.umask(umask)
    try:
        if writer == "write_image":
            path = sapnet.write_image(torch.zeros(3, 4, 4), tmp_path / "x.png")
        elif writer == "save_model":
            path = save_model(make_model(), tmp_path / "x.pt")
        else:
            path = save_training_state(make_model(), tmp_path / "x.pt", {"step": 0})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_checkpoint_error_is_runtime_error() -> None:
    assert issubclass(CheckpointError, RuntimeError)
    assert sapnet.CheckpointError is CheckpointError


# --- public reference naming -------------------------------------------------------------------------------


def to_reference_state_dict(model: DerainNet) -> dict[str, torch.Tensor]:
    """Our state dict renamed as in the public SAPNet (``module.`` prefix, CRA ``res_conv{k}.1`` / ``.4``) or
    PReNet (no prefix, second conv ``res_conv{k}.2``) checkpoints: the inverse of the loader's mapping,
    written from the description in shared/compat/README.md."""
    cfg = model.config
    names = {"input_conv": "conv0.0", "output_conv": "conv.0"}
    gates = {"input_gate": "conv_i", "forget_gate": "conv_f", "cell_gate": "conv_g", "output_gate": "conv_o"}
    names.update({f"cell.{ours}": f"{ref}.0" for ours, ref in gates.items()})
    cra = {"reduce": "conv_du.0", "expand": "conv_du.2", "skip": "conv_1_1"}
    for i in range(len(cfg.dilations)):
        k = i + 1
        names[f"blocks.{i}.conv1"] = f"res_conv{k}.0"
        if cfg.attention:
            names[f"blocks.{i}.conv2"] = f"res_conv{k}.3"
            for ours, ref in cra.items():
                names[f"blocks.{i}.attn1.{ours}"] = f"res_conv{k}.1.{ref}"
                names[f"blocks.{i}.attn2.{ours}"] = f"res_conv{k}.4.{ref}"
        else:
            names[f"blocks.{i}.conv2"] = f"res_conv{k}.2"
    prefix = "module." if cfg.attention else ""
    out = {}
    for key, value in model.state_dict().items():
        module, _, param = key.rpartition(".")
        out[f"{prefix}{names[module]}.{param}"] = value.clone()
    return out


@pytest.fixture(params=["sapnet", "prenet"])
def reference_model(request: pytest.FixtureRequest) -> DerainNet:
    """A full-size preset network (the reference files are 32 channels, 5 blocks, LSTM), random weights."""
    torch.manual_seed(3)
    return create_model(request.param).eval()


def test_reference_names_follow_the_published_layout(reference_model: DerainNet) -> None:
    sd = to_reference_state_dict(reference_model)
    if reference_model.config.attention:
        assert all(k.startswith("module.") for k in sd)
        assert sd["module.res_conv1.1.conv_du.0.weight"].shape == (2, 32, 1, 1)
        assert sd["module.res_conv5.4.conv_1_1.weight"].shape == (32, 32, 1, 1)
        assert sd["module.res_conv5.3.weight"].shape == (32, 32, 3, 3)
    else:
        assert not any(k.startswith("module.") for k in sd)
        assert sd["res_conv5.2.weight"].shape == (32, 32, 3, 3)
    key = "module.conv0.0.weight" if reference_model.config.attention else "conv0.0.weight"
    assert sd[key].shape == (32, 6, 3, 3)
    assert len(sd) == len(reference_model.state_dict())


def test_reference_round_trip(tmp_path: Path, reference_model: DerainNet) -> None:
    name = "sapnet" if reference_model.config.attention else "prenet"
    path = tmp_path / f"{name}_reference.pth"
    torch.save(to_reference_state_dict(reference_model), path)

    loaded = load_model(path)
    assert loaded.source == f"{name}-reference"
    assert loaded.config == reference_model.config
    assert loaded.metadata == {}
    assert not loaded.training
    assert_same_weights(loaded, reference_model)
    x = make_input((1, 3, 20, 18))
    torch.testing.assert_close(forward(loaded, x), forward(reference_model, x), rtol=0, atol=0)

    # The stage count is not stored in the reference files: it is a load argument.
    four = load_model(path, stages=4)
    assert four.config.stages == 4
    # ... and create_model loads them into the matching preset, refusing the other one.
    assert_same_weights(create_model(name, checkpoint_path=path), reference_model)
    other = "prenet" if name == "sapnet" else "sapnet"
    with pytest.raises(CheckpointError, match="different network"):
        create_model(other, checkpoint_path=path)


def test_reference_with_unexpected_key(tmp_path: Path, reference_model: DerainNet) -> None:
    sd = to_reference_state_dict(reference_model)
    prefix = "module." if reference_model.config.attention else ""
    sd[f"{prefix}extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as excinfo:
        load_model(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "unexpected" in message and "extra_head.weight" in message


@pytest.mark.parametrize("which", ["res_conv2.0.weight", "conv_g.0.bias", "conv0.0.weight"])
def test_reference_with_wrong_shape(tmp_path: Path, reference_model: DerainNet, which: str) -> None:
    sd = to_reference_state_dict(reference_model)
    key = ("module." if reference_model.config.attention else "") + which
    bad = sd[key]
    sd[key] = torch.zeros(bad.shape[0], *[s + 1 for s in bad.shape[1:]]) if bad.dim() > 1 else torch.zeros(7)
    path = tmp_path / "wrong_shape.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as excinfo:
        load_model(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "shape" in message


def test_reference_with_missing_key(tmp_path: Path, reference_model: DerainNet) -> None:
    sd = to_reference_state_dict(reference_model)
    key = ("module." if reference_model.config.attention else "") + "conv_o.0.bias"
    del sd[key]
    path = tmp_path / "missing_key.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="missing") as excinfo:
        load_model(path)
    assert str(path) in str(excinfo.value)


def test_load_checkpoint_reports_source_and_path(tmp_path: Path) -> None:
    path = tmp_path / "prenet.pth"
    torch.manual_seed(0)
    torch.save(to_reference_state_dict(create_model("prenet")), path)
    ckpt = load_checkpoint(path)
    assert ckpt.source == "prenet-reference"
    assert ckpt.path == path
    assert ckpt.metadata == {}
    assert not any(k.startswith("module.") for k in ckpt.state_dict)
