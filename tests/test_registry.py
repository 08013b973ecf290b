"""The model registry: names, the whole public zoo against its goldens, hash-checked download and cache, offline
mirrors, the Hugging Face Hub round trip and the ``sapnet models`` / ``sapnet weights`` commands."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import sapnet
from sapnet.cli import main
from sapnet.hub import file_sha256
from sapnet.models import WEIGHTS, CheckpointError, DerainNet, WeightsError, WeightsHashError, hub
from sapnet.models.registry import ARCHITECTURES, find_weights_by_sha256, get_weights, list_models, measured_scores

PUBLISHED = sorted(name for name, entry in WEIGHTS.items() if not entry.bundled)
"""The registry entries of the papers' authors (``sapnet.real`` is ours)."""

pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = 1e-4


@pytest.fixture
def cache(weights_cache: Path) -> Path:
    return weights_cache


@pytest.fixture(scope="module")
def zoo_index(compat_dir: Path) -> dict[str, dict[str, object]]:
    """sha256 -> the entry of ``shared/compat/prenet_zoo/index.json`` (plus the SAPNet file)."""
    path = compat_dir / "prenet_zoo" / "index.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    entries = json.loads(path.read_text())["checkpoints"]
    index = {e["sha256"]: e for e in entries}
    sapnet_file = compat_dir / "sapnet_official_rain100h.pth"
    index[file_sha256(sapnet_file)] = {"key": "sapnet", "file": sapnet_file.name, "bytes": 746987, "stages": 6}
    return index


@pytest.fixture(scope="module")
def goldens(compat_dir: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in ("zoo_golden.npz", "golden.npz"):
        path = compat_dir / name
        if not path.is_file():
            pytest.skip(f"{path} not found")
        with np.load(path) as data:
            out.update({k: data[k] for k in data.files})
    return out


def _golden_input(goldens: dict[str, np.ndarray]) -> torch.Tensor:
    return (torch.from_numpy(goldens["input_uint8"]).permute(0, 3, 1, 2).float() / 255).contiguous()


def small_entry(tmp_path: Path, compat_dir: Path, name: str = "prn_r.rain100h") -> sapnet.models.WeightsEntry:
    """``name``'s entry with its URL pointing at a ``file://`` copy of the published file."""
    entry = get_weights(name)
    source = hub.find_in_mirror(entry, compat_dir)
    assert source is not None
    copy = tmp_path / "server" / "net_latest.pth"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, copy)
    return dataclasses.replace(entry, url=copy.as_uri())


# --- names ------------------------------------------------------------------------------------------------


def test_names_and_listing() -> None:
    archs = list_models()
    assert {"sapnet", "prenet", "prenet_r", "prn", "prn_r", "prenet_lstm", "prenet_gru", "prenet_x"} <= set(archs)
    assert sapnet.list_models is list_models
    pretrained = list_models(pretrained=True)
    assert len(pretrained) == len(WEIGHTS) == 22 and len(PUBLISHED) == 21  # the published files and sapnet.real
    for name in ("sapnet.rain100h", "prenet.rain100h", "prenet.rain100l", "prenet.rain1400"):
        assert name in pretrained
    for arch in ("prenet_r", "prn", "prn_r"):
        assert {f"{arch}.rain100h", f"{arch}.rain100l", f"{arch}.rain1400"} <= set(pretrained)
    assert list_models("prn*") == ["prn", "prn_r"]
    assert list_models("prenet_real.*", pretrained=True) == ["prenet_real.real1", "prenet_real.real2"]
    assert sapnet.models.DEFAULT_MODEL in pretrained
    for entry in WEIGHTS.values():
        assert entry.network in ARCHITECTURES and len(entry.sha256) == 64 and entry.bytes > 0 and entry.license
        if entry.bundled:  # ours, shipped in checkpoints/ with a model card
            assert not entry.url and (hub.bundled_dir() / entry.filename).is_file()
            assert (hub.bundled_dir() / "README.md").read_text().count(entry.sha256) >= 1
        else:
            assert entry.arch in ARCHITECTURES and entry.url.startswith("https://github.com/") and "/raw/" in entry.url


def test_our_sapnet_real_loads_from_checkpoints(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SAPNET_WEIGHTS_DIR", raising=False)  # not a mirror: the repository's checkpoints/ folder
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nor the cache
    entry = WEIGHTS["sapnet.real"]
    model = sapnet.create_model("sapnet.real", pretrained=True)
    assert not model.training and model.config == entry.config and model.config.keep_input == 0.02
    assert model.config == dataclasses.replace(ARCHITECTURES["prenet"].config, keep_input=0.02)
    assert sum(p.numel() for p in model.parameters()) == entry.params
    assert file_sha256(hub.bundled_dir() / entry.filename) == entry.sha256
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert sapnet.load_model("sapnet.real").config.keep_input == 0.02


@pytest.mark.parametrize("name", ["prenet.rain100x", "prnet", "sapnet.rain100l"])
def test_unknown_names_raise_key_error_naming_close_ones(name: str) -> None:
    with pytest.raises(KeyError) as excinfo:
        sapnet.create_model(name, pretrained=True)
    message = excinfo.value.args[0]
    assert repr(name.split(".")[0] if name == "prnet" else name) in message
    assert "did you mean" in message
    with pytest.raises(KeyError, match="did you mean"):
        sapnet.load_model(name)


def test_architecture_and_tag_without_weights() -> None:
    fresh = sapnet.create_model("prenet_lstm.rain100h_t5")
    assert fresh.training and fresh.config.stages == 5 and not fresh.config.input_skip
    assert sapnet.create_model("prn_r").config == ARCHITECTURES["prn_r"].config
    real = sapnet.create_model("prenet_real", stages=2)
    assert real.config.cell_position == "after" and real.config.stages == 2


# --- the zoo ----------------------------------------------------------------------------------------------


def test_registry_hashes_and_sizes_equal_the_published_files(compat_dir: Path, zoo_index: dict) -> None:
    for entry in (WEIGHTS[n] for n in PUBLISHED):
        assert entry.sha256 in zoo_index, entry.name
        info = zoo_index[entry.sha256]
        assert entry.bytes == info["bytes"] and entry.stages == info["stages"], entry.name
        if "source_path" in info:
            assert (
                entry.url.endswith(str(info["source_path"])) and "6d908d1e3c7ff5c26fee624112297ad1c8603ca7" in entry.url
            )
            assert entry.params == info["params"]
        path = hub.find_in_mirror(entry, compat_dir)
        assert path is not None and path.stat().st_size == entry.bytes
        model = sapnet.create_model(entry.name)
        assert sum(p.numel() for p in model.parameters()) == entry.params, entry.name
    assert len({e.sha256 for e in WEIGHTS.values()}) == len(WEIGHTS)


@pytest.mark.parametrize("name", PUBLISHED)
def test_every_published_checkpoint_reproduces_its_golden(
    name: str, compat_dir: Path, zoo_index: dict, goldens: dict[str, np.ndarray]
) -> None:
    entry = WEIGHTS[name]
    key = zoo_index[entry.sha256]["key"]
    model = sapnet.create_model(name, pretrained=True, weights_dir=compat_dir)
    assert not model.training and model.config == entry.config
    x = _golden_input(goldens)
    with torch.no_grad():
        out, stages = model(x, return_stages=True)
    assert len(stages) == entry.stages
    assert float((out - torch.from_numpy(goldens[f"{key}_output"])).abs().max()) <= TOLERANCE
    if f"{key}_stages0" in goldens:  # the first checkpoint of each topology: every stage of crop 0
        expected = torch.from_numpy(goldens[f"{key}_stages0"])
        got = torch.stack([s[0] for s in stages])
        assert float((got - expected).abs().max()) <= TOLERANCE
    elif key == "sapnet":
        got = torch.stack(stages, dim=1)
        assert float((got - torch.from_numpy(goldens["sapnet_stages"])).abs().max()) <= TOLERANCE


def test_public_file_is_identified_by_its_hash(compat_dir: Path, tmp_path: Path) -> None:
    # PReNet, PReNet_LSTM and the real-rain network have the same keys: only the hash tells them apart.
    entry = get_weights("prenet_real.real1")
    source = hub.find_in_mirror(entry, compat_dir)
    assert source is not None
    renamed = tmp_path / "whatever.pth"
    shutil.copyfile(source, renamed)
    model = sapnet.load_model(renamed)
    assert model.config == entry.config and model.source == "prenet-reference"
    assert sapnet.load_model(renamed, stages=2).config.stages == 2
    assert find_weights_by_sha256(file_sha256(renamed)) == entry
    # An unknown file with the same keys is read as the published PReNet (what its keys show).
    sd = torch.load(renamed, weights_only=True, map_location="cpu")
    sd["conv.0.bias"] = sd["conv.0.bias"] + 1
    torch.save(sd, tmp_path / "finetuned.pth")
    other = sapnet.load_model(tmp_path / "finetuned.pth")
    assert other.config == ARCHITECTURES["prenet"].config


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("prenet_r.rain100h", {"shared_block": True, "recurrent": "lstm"}),
        ("prn.rain100h", {"recurrent": "none", "shared_block": False}),
        ("prn_r.rain100h", {"recurrent": "none", "shared_block": True}),
        ("prenet_gru.rain100h", {"recurrent": "gru", "input_skip": False}),
        ("prenet_x.rain100h", {"stage_input": "estimate", "input_skip": False}),
    ],
)
def test_topology_read_from_the_keys_of_a_modified_file(
    name: str, expected: dict[str, object], compat_dir: Path, tmp_path: Path
) -> None:
    source = hub.find_in_mirror(get_weights(name), compat_dir)
    assert source is not None
    sd = torch.load(source, weights_only=True, map_location="cpu")
    sd["conv.0.bias"] = sd["conv.0.bias"] * 0.5  # not the published file any more: no hash match
    torch.save(sd, tmp_path / "m.pth")
    cfg = sapnet.load_model(tmp_path / "m.pth").config
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert cfg == WEIGHTS[name].config


def test_wrong_architecture_for_published_weights(compat_dir: Path) -> None:
    path = hub.find_in_mirror(get_weights("prn.rain100h"), compat_dir)
    assert path is not None
    with pytest.raises(CheckpointError, match="different network"):
        sapnet.create_model("prenet", checkpoint_path=path)


# --- getting the files -------------------------------------------------------------------------------------


def test_download_through_a_file_url(tmp_path: Path, compat_dir: Path, cache: Path) -> None:
    entry = small_entry(tmp_path, compat_dir)
    path = sapnet.models.download_weights(entry, progress=False)
    assert path == cache / entry.filename and file_sha256(path) == entry.sha256
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert [p.name for p in cache.iterdir()] == [entry.filename]
    # cached: found without the URL
    assert hub.weights_file(dataclasses.replace(entry, url="file:///nonexistent"), download=False) == path


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("damage", ["wrong", "truncated"])
def test_download_with_a_wrong_hash_leaves_nothing(damage: str, tmp_path: Path, compat_dir: Path, cache: Path) -> None:
    entry = small_entry(tmp_path, compat_dir)
    served = Path(entry.url.removeprefix("file://"))
    data = served.read_bytes()
    served.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(WeightsHashError) as excinfo:
        sapnet.models.download_weights(entry, progress=False)
    message = str(excinfo.value)
    assert entry.url in message and entry.sha256 in message and file_sha256(served) in message
    assert not cache.exists() or not any(cache.iterdir())


def test_interrupted_download_leaves_nothing(
    tmp_path: Path, compat_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = small_entry(tmp_path, compat_dir)

    def cut(url: str, part: Path, timeout: float = 0, progress: bool = True) -> None:
        part.write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(hub, "fetch_url", cut)
    with pytest.raises(KeyboardInterrupt):
        hub.weights_file(entry)
    assert not any(cache.iterdir())


def test_corrupted_cache_is_reported_not_used(tmp_path: Path, compat_dir: Path, cache: Path) -> None:
    entry = small_entry(tmp_path, compat_dir)
    path = sapnet.models.download_weights(entry, progress=False)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsHashError, match="corrupted") as excinfo:
        hub.weights_file(entry)
    assert str(path) in str(excinfo.value) and f"sapnet weights download {entry.name}" in str(excinfo.value)
    # downloading again replaces it
    assert file_sha256(sapnet.models.download_weights(entry, progress=False)) == entry.sha256


def test_mirror_found_by_content_whatever_its_name(tmp_path: Path, compat_dir: Path, offline: Path) -> None:
    entry = get_weights("prn_r.rain1400")
    source = hub.find_in_mirror(entry, compat_dir)
    assert source is not None
    mirror = tmp_path / "mirror" / "a" / "b"
    mirror.mkdir(parents=True)
    shutil.copyfile(source, mirror / "renamed.bin")
    (mirror / "same-size-other-content.pth").write_bytes(b"\0" * entry.bytes)
    found = hub.weights_file(entry, weights_dir=tmp_path / "mirror")
    assert found == mirror / "renamed.bin"
    assert sapnet.load_model("prn_r.rain1400", weights_dir=tmp_path / "mirror").config == entry.config


def test_offline_error_says_what_was_tried(offline: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    entry = get_weights("prenet.rain100l")
    with pytest.raises(WeightsError) as excinfo:
        sapnet.create_model("prenet.rain100l", pretrained=True)
    message = str(excinfo.value)
    for text in (
        entry.url,
        str(offline / entry.filename),
        "SAPNET_WEIGHTS_DIR",
        "sapnet weights download prenet.rain100l",
    ):
        assert text in message
    monkeypatch.setenv("SAPNET_WEIGHTS_DIR", str(tmp_path / "empty-mirror"))
    with pytest.raises(WeightsError, match="empty-mirror"):
        sapnet.load_model("prenet.rain100l")
    assert not any(offline.iterdir())


# --- Hugging Face Hub ---------------------------------------------------------------------------------------


def test_hub_round_trip_through_a_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = sapnet.create_model("prenet_gru", stages=2, channels=8)
    model.save_pretrained(tmp_path / "shared-model")
    files = {p.name for p in (tmp_path / "shared-model").iterdir()}
    assert {"config.json", "model.safetensors"} <= files
    loaded = DerainNet.from_pretrained(tmp_path / "shared-model")
    assert loaded.config == model.config and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    assert sapnet.load_model(tmp_path / "shared-model").config == model.config
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"dilations": [1, 1]}, "weights do not fit"),
        ({"attention": True}, "weights do not fit"),
        ({"layers": 3}, "layers"),
    ],
)
def test_hub_folder_whose_config_does_not_match_its_weights(edit: dict, message: str, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    sapnet.create_model("prenet", stages=2, channels=8).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(edit)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        sapnet.load_model(folder)


# --- command line -----------------------------------------------------------------------------------------


def test_models_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ARCHITECTURES)
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    for name in WEIGHTS:
        assert f"| {name}" in out
        scores = measured_scores(name).get("rain100l")
        if scores:
            assert f"{scores['psnr']:.2f} / {scores['ssim']:.4f} (n={scores['n']})" in out
    assert "Rain100H 29.46 / 0.899" in out  # PReNet's published figure, cited as published
    assert main(["models", "nothing*"]) == 1


def test_weights_download_command(
    tmp_path: Path, compat_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = small_entry(tmp_path, compat_dir)
    monkeypatch.setitem(WEIGHTS, entry.name, entry)
    assert main(["weights", "download", entry.name, "--to", str(tmp_path / "carry")]) == 0
    carried = tmp_path / "carry" / entry.filename
    assert file_sha256(carried) == entry.sha256 and not cache.exists()
    assert main(["weights", "download", entry.name]) == 0
    assert (cache / entry.filename).is_file()
    assert main(["weights", "download", "prenet.rain100x"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["weights", "download"]) == 2


def test_hub_repository_unreachable_is_a_checkpoint_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="hf-hub:nobody/nothing"):
        sapnet.load_model("hf-hub:nobody/nothing")
