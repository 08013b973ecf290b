"""Real-rain adaptation: synthetic rain on the fly, the real branch of the trainer (pseudo-label updates, real
batches, held-out selection), its resume, bad real folders, ``sapnet adapt``, and bundled registry weights."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import sapnet
import sapnet.models.hub as model_hub
from sapnet.cli.main import main
from sapnet.data import DatasetError, DatasetNotFoundError, UnknownPresetError, fit_max_side, read_image, write_image
from sapnet.hub import RandomWeightsWarning, file_sha256
from sapnet.metrics import METRICS, ImageMetric, MetricSpec
from sapnet.models import keep_unchanged, load_training_state
from sapnet.models.hub import WeightsError, download_weights
from sapnet.models.registry import WEIGHTS, WeightsEntry
from sapnet.training import ConfigError, PseudoLabelWarning, TrainConfig, Trainer
from sapnet.training.adapt import RealAdaptation
from sapnet.training.data import SyntheticRainPatches

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN = ImageMetric(MetricSpec("mean", "Mean", 3, False), False, lambda x, _: float(x.double().mean()))
"""A toy no-reference metric with a known answer: darker is better."""


def _photo(seed: int, h: int, w: int) -> torch.Tensor:
    """A smooth random RGB photo on the 8-bit grid, with some texture (NIQE / BRISQUE can score it)."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear")[0]
    return (base + 0.05 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """``clean/`` (4 photos 96x112), ``real/`` (6 photos 150x210: r0-r3 to adapt on, r4-r5 held out) and the two
    name lists."""
    for i in range(4):
        write_image(_photo(i, 96, 112), tmp_path / "clean" / f"c{i}.png")
    for i in range(6):
        write_image(_photo(10 + i, 150, 210), tmp_path / "real" / f"r{i}.png")
    (tmp_path / "adapt.txt").write_text("r0.png\nr1.png\nr2.png\nr3.png\n")
    (tmp_path / "held.txt").write_text("# never trained on\nr4.png\nr5.png\n")
    return tmp_path


def _config(root: Path, out: str = "run", **real: Any) -> TrainConfig:
    cfg = TrainConfig.from_dict(
        {
            "model": {"preset": "prenet", "stages": 2, "channels": 8},
            "data": {"clean": str(root / "clean"), "samples_per_epoch": 4, "batch_size": 2, "patch": 48, "workers": 0},
            "optim": {"lr": 1e-3, "epochs": 2, "ema": 0.9},
            "loss": {"ssim": 1.0, "ubs": 0.0, "contrastive": 0.0, "lpips": 0.0, "backbones": "random"},
            "real": {
                "photos": str(root / "real"),
                "images": str(root / "adapt.txt"),
                "heldout": str(root / "held.txt"),
                "batch_size": 2,
                "update_every": 1,
                "max_side": 200,
                **real,
            },
            "run": {"out": str(root / out), "log_every": 1, "progress": False},
        }
    )
    cfg.validate()
    return cfg


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------- synthetic patches


def test_synthetic_rain_patches_are_a_function_of_seed_epoch_and_index(data: Path) -> None:
    ds = SyntheticRainPatches(data / "clean", 40, ["light", "heavy"], samples_per_epoch=10, seed=3)
    assert len(ds) == 10 and len(ds.photos) == 4
    rainy, clean = ds[5]
    assert rainy.shape == clean.shape == (3, 40, 40) and rainy.dtype == torch.float32
    assert 0 <= float(rainy.min()) and float(rainy.max()) <= 1 and not torch.equal(rainy, clean)
    again = SyntheticRainPatches(data / "clean", 40, ["light", "heavy"], samples_per_epoch=10, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(ds[5], again[5], strict=True))
    ds.set_epoch(1)
    assert not torch.equal(ds[5][0], rainy)  # a new crop and rain layer every epoch


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"presets": ["drizzle"]}, UnknownPresetError, "drizzle"),
        ({"patch": 100}, DatasetError, "smaller than the 100x100"),
    ],
)
def test_synthetic_rain_patches_refuse_bad_settings(
    data: Path, kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        SyntheticRainPatches(data / "clean", **kwargs)


def test_synthetic_rain_patches_refuse_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="not found"):
        SyntheticRainPatches(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        SyntheticRainPatches(tmp_path / "empty")


def test_fit_max_side_keeps_aspect_and_range() -> None:
    x = torch.rand(3, 300, 120)
    y = fit_max_side(x, 100)
    assert y.shape == (3, 100, 40) and 0 <= float(y.min()) and float(y.max()) <= 1
    assert fit_max_side(x, 300) is x and fit_max_side(x, None) is x
    assert fit_max_side(x[None], 100).shape == (1, 3, 100, 40)


# --------------------------------------------------------------------------------------------- the config


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("real.metrics", ["psnr"], "not a no-reference metric"),
        ("real.select_metrics", ["nope"], "not a no-reference metric"),
        ("real.metrics", "brisque", "a list of strings"),
        ("data.rain_presets", ["drizzle"], "unknown rain preset"),
        ("real.update_every", 0, "update_every must be >= 1"),
        ("real.max_side", 10, "max_side must be >= data.patch"),
        ("real.pseudo", -1.0, "weights must be >= 0"),
        ("real.keep", [0.0], "keep thresholds must be in"),
        ("real.keep", [1.5], "keep thresholds must be in"),
    ],
)
def test_config_refuses_bad_real_settings(key: str, value: Any, match: str) -> None:
    cfg = TrainConfig()
    with pytest.raises(ConfigError, match=match):
        cfg.set(key, value)
        cfg.validate()


def test_config_refuses_clean_with_paired_data() -> None:
    cfg = TrainConfig()
    cfg.data.clean, cfg.data.train = "a", "b"
    with pytest.raises(ConfigError, match="exclude each other"):
        cfg.validate()


def test_packaged_adapt_config_is_the_repository_one() -> None:
    from sapnet.cli.adapt import ADAPT_CONFIG

    repo = Path(__file__).resolve().parents[1] / "configs" / "adapt_real.yaml"
    assert TrainConfig.from_yaml(repo) == TrainConfig.from_yaml(ADAPT_CONFIG)
    cfg = TrainConfig.from_yaml(ADAPT_CONFIG)
    assert cfg.real.enabled and cfg.data.clean is not None and cfg.model.pretrained
    assert "rain100" not in cfg.data.clean.lower()  # never the Rain100L / Rain100H test backgrounds


def test_candidates_with_kept_input_variants(data: Path) -> None:
    cfg = _config(data, keep=[0.02, 0.04], student=True, flip=False)
    adaptation = RealAdaptation(cfg, data / "run", torch.device("cpu"), lambda _: None)
    student = sapnet.create_model("prenet", stages=2, channels=8)
    pool = adaptation.candidates(student)
    assert list(pool) == ["student", "student+keep0.02", "student+keep0.04"]
    x = _photo(3, 40, 48)
    assert torch.equal(pool["student+keep0.02"](x), keep_unchanged(x, pool["student"](x), 0.02))


# ------------------------------------------------------------------------------------------- the training run


def test_tiny_adaptation_run(data: Path) -> None:
    cfg = _config(data, ubs=0.1, contrastive=0.1)
    with pytest.warns(RandomWeightsWarning):
        trainer = Trainer(cfg)
    result = trainer.fit()
    out = data / "run"
    assert result.step == 4 and result.best is not None and result.best_real_score is not None
    log = _rows(out / "log.csv")
    assert list(log[0]) == [
        "step", "epoch", "lr", "loss", "ssim", "pseudo", "real_ubs", "real_contrastive", "images_per_s",
    ]  # fmt: skip
    assert all(float(r["pseudo"]) > 0 for r in log)
    val = _rows(out / "val.csv")
    assert [r["step"] for r in val] == ["0", "2", "4"]  # the initial weights are scored before training
    assert list(val[0]) == ["epoch", "step", "real_brisque", "real_niqe", "real_score"]
    scores = [float(r["real_score"]) for r in val]
    assert result.best_real_score == pytest.approx(min(scores), abs=1e-5)
    best, _ = load_training_state(out / "best.pt")
    assert best.metadata["best_real"] == pytest.approx(min(scores), abs=1e-5)
    _, state = load_training_state(out / "last.pt")
    bank = state["real"]["bank"]
    assert bank["updates"] == 2 and state["real"]["updated_epoch"] == 1
    assert sorted(bank["names"]) == ["r0", "r1", "r2", "r3"]  # the held-out photos are never in the bank
    for label in bank["labels"].values():
        if label["file"] is not None:
            assert (out / "pseudo_labels" / label["file"]).is_file()
    # the photos were downscaled to max_side for the adaptation
    assert read_image(out / "pseudo_labels" / "inputs" / "r0.png").shape == (3, 143, 200)
    assert (out / "curves.png").is_file()


def test_adaptation_resumes_exactly(data: Path) -> None:
    whole = Trainer(_config(data, out="whole"))
    whole.fit()
    first = Trainer(dataclasses.replace(_config(data, out="parts"), run=dataclasses.replace(
        _config(data, out="parts").run, max_steps=3)))  # fmt: skip
    first.fit()  # stops in epoch 1, after its pseudo-label update
    assert first.step == 3
    second = Trainer(_config(data, out="parts"), resume=data / "parts" / "last.pt")
    second.fit()
    a, sa = load_training_state(data / "whole" / "last.pt")
    b, sb = load_training_state(data / "parts" / "last.pt")
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert sa["real"]["bank"]["labels"] == sb["real"]["bank"]["labels"]
    assert [r["loss"] for r in _rows(data / "whole" / "log.csv")] == [
        r["loss"] for r in _rows(data / "parts" / "log.csv")
    ]


def test_resume_without_pseudo_label_state_is_refused(data: Path) -> None:
    cfg = _config(data)
    cfg.real.photos = None
    cfg.run.max_steps = 1
    Trainer(cfg).fit()
    with pytest.raises(ConfigError, match=r"real\.photos: checkpoint None"):
        Trainer(_config(data), resume=data / "run" / "last.pt")


def test_real_folder_with_bad_files_uses_the_rest(data: Path) -> None:
    (data / "real" / "broken.png").write_bytes(b"not an image")
    Image.fromarray(np.full((150, 210), 90, np.uint8), "L").save(data / "real" / "gray.png")
    cfg = _config(data, images=None)  # all photos but the held-out ones
    with pytest.warns(PseudoLabelWarning, match=r"skipped 2 file\(s\): .*broken.png.*gray.png"):
        adapt = RealAdaptation(cfg, data / "run", torch.device("cpu"), lambda m: None)
    assert adapt.bank.names == ["r0", "r1", "r2", "r3"] and len(adapt.heldout) == 2


def test_empty_real_folder_is_a_clear_error(data: Path) -> None:
    (data / "none").mkdir()
    cfg = _config(data, photos=str(data / "none"), images=None, heldout=None)
    with pytest.raises(DatasetError, match="no image files"):
        RealAdaptation(cfg, data / "run", torch.device("cpu"), lambda m: None)
    cfg = _config(data, photos=str(data / "missing"))
    with pytest.raises(DatasetNotFoundError, match="not found"):
        RealAdaptation(cfg, data / "run", torch.device("cpu"), lambda m: None)


def test_lists_must_match_the_folder_and_never_overlap(data: Path) -> None:
    (data / "bad.txt").write_text("r0.png\nzz.png\n")
    with pytest.raises(DatasetError, match=r"not in .*zz\.png"):
        RealAdaptation(_config(data, images=str(data / "bad.txt")), data / "run", torch.device("cpu"), print)
    (data / "overlap.txt").write_text("r0.png\nr4.png\n")
    with pytest.raises(ConfigError, match="never see the held-out"):
        RealAdaptation(_config(data, images=str(data / "overlap.txt")), data / "run", torch.device("cpu"), print)


def test_real_batches_are_a_function_of_the_step(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METRICS, "mean", MEAN)
    cfg = _config(data, batch_size=3, metrics=["mean"])
    adapt = RealAdaptation(cfg, data / "run", torch.device("cpu"), lambda m: None)
    assert adapt.batch(0) is None  # no labels before the first update
    adapt.update(torch.nn.Identity(), 0)  # the identity ties the inputs: no label replaced
    assert adapt.pairs is None
    adapt.update(lambda_model(lambda x: x * 0.9), 1)  # darker: a better "mean"
    rainy, label = adapt.batch(7)  # type: ignore[misc]
    assert rainy.shape == label.shape == (3, 3, 48, 48)
    again = adapt.batch(7)
    assert again is not None and torch.equal(again[0], rainy) and not torch.equal(adapt.batch(8)[0], rainy)  # type: ignore[index]


class lambda_model(torch.nn.Module):
    """A module applying ``fn`` (a stand-in student)."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def test_sapnet_adapt_cli(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["adapt", "--photos", str(data / "real"), "--images", str(data / "adapt.txt"), "--heldout",
            str(data / "held.txt"), "--clean", str(data / "clean"), "--model", "prenet", "--set",
            "model.pretrained=false", "--set", "model.stages=2", "--set", "model.channels=8", "--set",
            "data.samples_per_epoch=2", "--set", "real.teachers=[]", "--set", "real.max_side=200", "--batch-size",
            "2", "--patch", "48", "--epochs", "1", "--workers", "0", "--out", str(data / "cli"),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "best held-out score" in capsys.readouterr().out
    assert (data / "cli" / "best.pt").is_file()


# ------------------------------------------------------------------------------------------ bundled weights


def test_bundled_weights_are_found_in_checkpoints(
    tmp_path: Path, weights_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = sapnet.create_model("prenet", stages=2)
    path = sapnet.save_model(net, tmp_path / "net.pt")
    digest = file_sha256(path)
    entry = WeightsEntry("sapnet.tiny", "", digest, path.stat().st_size, "MIT", "us", "tests", 2, 0,
                         architecture="prenet", bundled=True)  # fmt: skip
    monkeypatch.setitem(WEIGHTS, entry.name, entry)
    monkeypatch.setattr(model_hub, "bundled_dir", lambda: tmp_path / "checkpoints")
    assert entry.config == dataclasses.replace(sapnet.create_model("prenet").config, stages=2)
    for fetch in (lambda: sapnet.create_model("sapnet.tiny", pretrained=True), lambda: download_weights(entry)):
        with pytest.raises(WeightsError, match="shipped in the repository's checkpoints/ folder"):
            fetch()
    (tmp_path / "checkpoints").mkdir()
    path.rename(tmp_path / "checkpoints" / entry.filename)
    loaded = sapnet.create_model("sapnet.tiny", pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=True))
    copied = download_weights(entry, tmp_path / "offline")  # `sapnet weights download --to`: a copy, no download
    assert copied == tmp_path / "offline" / entry.filename and file_sha256(copied) == digest
