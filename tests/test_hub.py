"""The weights plumbing shared by the registry, the loss backbones and the downstream models (``sapnet.hub``)."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
import torch

import sapnet.downstream
import sapnet.losses
import sapnet.models
from sapnet import hub
from sapnet.hub import WeightsUnavailableError


def test_one_error_and_one_warning_type() -> None:
    assert sapnet.losses.BackboneUnavailableError is WeightsUnavailableError
    assert sapnet.downstream.ModelUnavailableError is WeightsUnavailableError
    assert sapnet.losses.RandomBackboneWarning is hub.RandomWeightsWarning
    assert sapnet.downstream.RandomModelWarning is hub.RandomWeightsWarning
    assert issubclass(WeightsUnavailableError, RuntimeError) and issubclass(hub.RandomWeightsWarning, UserWarning)
    # registry weights: caught as "weights unavailable" and as what the model resolver raises
    assert issubclass(sapnet.models.WeightsError, WeightsUnavailableError)
    assert issubclass(sapnet.models.WeightsError, sapnet.models.CheckpointError)
    assert issubclass(sapnet.models.WeightsHashError, WeightsUnavailableError)


def test_imagenet_constants_are_shared() -> None:
    from sapnet.downstream import models as downstream_models
    from sapnet.losses import contrastive, segmentation

    assert hub.IMAGENET_MEAN == (0.485, 0.456, 0.406) and hub.IMAGENET_STD == (0.229, 0.224, 0.225)
    for module in (contrastive, segmentation, downstream_models):
        assert module.IMAGENET_MEAN is hub.IMAGENET_MEAN and module.IMAGENET_STD is hub.IMAGENET_STD


def test_seeded_is_deterministic_and_restores_the_generator() -> None:
    state = torch.random.get_rng_state()
    with hub.seeded(7):
        a = torch.rand(4)
    with hub.seeded(7):
        b = torch.rand(4)
    with hub.seeded(8):
        c = torch.rand(4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_offline_hint_names_both_ways_out() -> None:
    text = hub.offline_hint("--weights FILE", "--weights random", "plumbing tests only")
    assert text == (
        "Give a local state-dict file instead (--weights FILE), or random weights with --weights random "
        "(plumbing tests only)."
    )


def test_find_file_by_content(tmp_path: Path) -> None:
    data = b"some weights"
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "other.bin").write_bytes(b"x" * len(data))  # same size, other content
    target = tmp_path / "a" / "b" / "renamed.pth"
    target.write_bytes(data)
    assert hub.find_file(tmp_path, len(data), digest) == target
    assert hub.file_sha256(target) == digest
    assert hub.find_file(tmp_path, len(data) + 1, digest) is None
    assert hub.find_file(tmp_path, len(data), "0" * 64) is None
    assert hub.find_file(tmp_path / "missing", len(data), digest) is None


def test_file_sha256_follows_changes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one")
    first = hub.file_sha256(path)
    path.write_bytes(b"three")
    os.utime(path, ns=(1, 1))  # a new modification time, even on coarse clocks
    assert first == hashlib.sha256(b"one").hexdigest()
    assert hub.file_sha256(path) == hashlib.sha256(b"three").hexdigest()


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_load_state_dict_file_unwraps(tmp_path: Path, wrapper: str | None) -> None:
    state = {"w": torch.arange(3.0)}
    path = tmp_path / "w.pth"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)
    loaded = hub.load_state_dict_file(path)
    assert loaded.keys() == {"w"} and torch.equal(loaded["w"], state["w"])


def test_load_state_dict_file_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(2, 2)}, str(path))
    assert torch.equal(hub.load_state_dict_file(path)["w"], torch.ones(2, 2))


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"junk", "cannot read weight file"), ({"w": 1}, "does not hold a state dict")],
)
def test_load_state_dict_file_errors(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(WeightsUnavailableError, match=message) as info:
        hub.load_state_dict_file(path)
    assert str(path) in str(info.value)


def test_load_strict_names_the_network() -> None:
    net = torch.nn.Linear(2, 3)
    hub.load_strict(net, {"weight": torch.zeros(3, 2), "bias": torch.ones(3)}, "a linear layer")
    assert torch.equal(net.bias, torch.ones(3))
    with pytest.raises(WeightsUnavailableError, match=r"(?s)a linear layer \(from x.pth\) do not fit .*bias"):
        hub.load_strict(net, {"weight": torch.zeros(3, 2)}, "a linear layer (from x.pth)")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    url = f"http://127.0.0.1:{_closed_port()}/weights.pth"
    reason = hub.probe(url)
    assert reason is not None and "cannot reach 127.0.0.1" in reason
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    assert hub.probe(url) is None  # behind a proxy, direct connections say nothing


def test_torchvision_checkpoint_cache_and_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert hub.hub_checkpoint_dir() == tmp_path / "hub" / "checkpoints"
    monkeypatch.setattr(hub, "probe", lambda url: "offline (test)")
    url = "https://download.pytorch.org/models/tiny-0123abcd.pth"
    with pytest.raises(WeightsUnavailableError) as info:
        hub.torchvision_checkpoint(url, "the tiny net", "HINT.")
    message = str(info.value)
    target = tmp_path / "hub" / "checkpoints" / "tiny-0123abcd.pth"
    for part in ("the tiny net", str(target), url, "offline (test)", "TORCH_HOME", "HINT."):
        assert part in message
    target.parent.mkdir(parents=True)
    target.write_bytes(b"cached")
    assert hub.torchvision_checkpoint(url, "the tiny net", "HINT.") == target  # no probe, no download
