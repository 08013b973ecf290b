"""Training: config files and CLI switches, patch data, the trainer's outputs, resume, NaN, atomic saves, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import sapnet
from sapnet.cli import main
from sapnet.cli.main import build_parser
from sapnet.cli.train import config_from_args
from sapnet.data import DatasetError
from sapnet.losses import SAPNetLoss
from sapnet.training import (
    ConfigError,
    DivergedError,
    LossConfig,
    PatchDataset,
    ResumableSampler,
    TrainConfig,
    Trainer,
    WeightEMA,
    get_rng_state,
    set_rng_state,
    truncate_csv,
)
from sapnet.training import config as training_config
from sapnet.training.setup import pick_device

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


def write_pairs(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """``root/rain`` + ``root/clean`` with ``n`` random PNG pairs of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    for sub in ("rain", "clean"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        clean = rng.integers(0, 200, (size[1], size[0], 3), dtype=np.uint8)
        rain = np.clip(clean.astype(int) + rng.integers(0, 56, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(clean).save(root / "clean" / f"{i:03d}.png")
        Image.fromarray(rain).save(root / "rain" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """6 training pairs of 32x32 (3 steps/epoch at batch 2) and 2 validation pairs of 24x20."""
    root = tmp_path_factory.mktemp("data")
    return write_pairs(root / "train", 6, (32, 32)), write_pairs(root / "val", 2, (24, 20), seed=1)


def tiny_config(out: Path, data: tuple[Path, Path], max_steps: int = 3) -> TrainConfig:
    cfg = TrainConfig()
    cfg.model.stages, cfg.model.channels = 2, 8
    cfg.data.train, cfg.data.val = str(data[0]), str(data[1])
    cfg.data.patch, cfg.data.batch_size, cfg.data.workers = 16, 2, 0
    cfg.loss.ubs = cfg.loss.contrastive = cfg.loss.lpips = 0.0
    cfg.loss.backbones, cfg.loss.seg_encoder = "random", "resnet18"
    cfg.optim.milestones = [1]  # decay after epoch 1: the resume test crosses it
    cfg.run.out, cfg.run.max_steps, cfg.run.progress, cfg.run.log_every = str(out), max_steps, False, 1
    return cfg


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def parse(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


# --- config ------------------------------------------------------------------------------------------------


def test_paper_config_and_ablations() -> None:
    full = TrainConfig.from_yaml(CONFIGS / "sapnet_rain100h.yaml")
    assert (full.data.batch_size, full.data.patch, full.optim.epochs, full.optim.lr) == (12, 100, 100, 1e-3)
    assert (full.optim.milestones, full.optim.gamma, full.optim.lr_decay) == ([30, 50, 80], 0.2, True)
    assert (full.loss.ssim, full.loss.ubs, full.loss.contrastive, full.loss.lpips) == (1.0, 0.1, 0.1, 0.1)
    assert full.network_config() == sapnet.create_model("sapnet").config
    rows = {}
    for name in ("m1", "m2", "m3", "m4", "m5"):
        c = TrainConfig.from_yaml(CONFIGS / f"ablation_{name}.yaml")
        net = c.network_config()
        rows[name] = (net.attention, max(net.dilations) > 1, c.optim.lr_decay, c.loss.ubs, c.loss.contrastive)
        assert c.loss.lpips == 0 and c.loss.ssim == 1 and c.data.batch_size == 12
    assert rows == {
        "m1": (True, False, False, 0.0, 0.0),
        "m2": (True, False, False, 0.1, 0.0),
        "m3": (True, False, False, 0.1, 0.1),
        "m4": (True, True, False, 0.1, 0.1),
        "m5": (True, True, True, 0.1, 0.1),
    }
    for path in CONFIGS.glob("*.yaml"):
        TrainConfig.from_yaml(path).validate()


def test_yaml_base_and_unknown_keys(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("optim: {lr: 0.002, epochs: 7}\nrun: {seed: 3}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\noptim: {epochs: 9}\n")
    cfg = TrainConfig.from_yaml(tmp_path / "child.yaml")
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.run.seed) == (0.002, 9, 3)
    (tmp_path / "bad.yaml").write_text("base: base.yaml\noptim: {lrr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'optim\.lrr'"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "bad2.yaml").write_text("optimizer: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"bad2\.yaml.*'optimizer'"):
        TrainConfig.from_yaml(tmp_path / "bad2.yaml")
    (tmp_path / "bad3.yaml").write_text("data: {batch_size: many}\n")
    with pytest.raises(ConfigError, match=r"bad3\.yaml.*data\.batch_size must be an integer"):
        TrainConfig.from_yaml(tmp_path / "bad3.yaml")
    (tmp_path / "bad4.yaml").write_text("loss: {weight_files: {vgg: /x.pth}}\n")
    with pytest.raises(ConfigError, match=r"loss: unknown weight_files keys \['vgg'\]; valid keys: vgg16, lpips"):
        TrainConfig.from_yaml(tmp_path / "bad4.yaml").validate()
    (tmp_path / "bad5.yaml").write_text("loss: {ubs_start_epoch: -1}\n")
    with pytest.raises(ConfigError, match=r"loss: ubs_start_epoch must be >= 0"):
        TrainConfig.from_yaml(tmp_path / "bad5.yaml").validate()


def test_cli_switches_switch_both_ways() -> None:
    m1 = str(CONFIGS / "ablation_m1.yaml")
    assert parse("--no-attention").network_config().attention is False
    assert parse("--config", m1, "--no-attention", "--attention").network_config().attention is True
    assert parse("--no-dilation").network_config().dilations == (1, 1, 1, 1, 1)
    assert parse("--config", m1, "--dilation").network_config().dilations == (1, 2, 4, 8, 16)
    assert parse("--no-lr-decay").optim.lr_decay is False
    assert parse("--config", m1, "--lr-decay").optim.lr_decay is True
    cfg = parse("--no-ubs", "--no-contrastive", "--no-lpips")
    assert (cfg.loss.ubs, cfg.loss.contrastive, cfg.loss.lpips, cfg.loss.ssim) == (0, 0, 0, 1)
    cfg = parse("--config", m1, "--ubs", "--lpips")
    assert (cfg.loss.ubs, cfg.loss.contrastive, cfg.loss.lpips) == (0.1, 0, 0.1)
    cfg = parse("--lr", "1e-4", "--batch-size", "3", "--patch", "64", "--max-steps", "5", "--grad-clip", "0.5")
    assert (cfg.optim.lr, cfg.data.batch_size, cfg.data.patch, cfg.run.max_steps) == (1e-4, 3, 64, 5)
    assert cfg.optim.grad_clip == 0.5 and parse("--grad-clip", "0").optim.grad_clip is None
    assert parse("--set", "optim.gamma=0.5", "--set", "model.recurrent=gru").network_config().recurrent == "gru"
    assert parse("--set", "optim.lr=1e-4").optim.lr == 1e-4  # YAML 1.1 reads 1e-4 as a string
    with pytest.raises(ConfigError, match=r"'optim\.gama'"):
        parse("--set", "optim.gama=0.5")


# --- data --------------------------------------------------------------------------------------------------


def test_patch_dataset_shapes_and_determinism(data: tuple[Path, Path]) -> None:
    ds = PatchDataset(data[0], 16, seed=5)
    rainy, clean = ds[2]
    assert rainy.shape == clean.shape == (3, 16, 16) and rainy.dtype == torch.float32
    assert 0 <= float(rainy.min()) and float(rainy.max()) <= 1
    again = PatchDataset(data[0], 16, seed=5)[2]
    assert torch.equal(again[0], rainy) and torch.equal(again[1], clean)
    ds.set_epoch(1)
    assert not torch.equal(ds[2][0], rainy)  # new crops each epoch
    # the clean crop comes from the same place as the rainy one
    full = sapnet.read_image(ds.pairs[2].clean)
    windows = full.unfold(1, 16, 1).unfold(2, 16, 1).permute(1, 2, 0, 3, 4)
    ds.set_epoch(0)
    c = ds[2][1]
    found = any(torch.equal(w, c) or torch.equal(w.flip(-1), c) for row in windows for w in row)
    assert found


def test_sampler_is_seeded_and_skips() -> None:
    s = ResumableSampler(range(10), seed=1)
    s.set_epoch(3)
    order = list(s)
    assert sorted(order) == list(range(10)) and list(s) == order
    s.set_epoch(3, skip=4)
    assert list(s) == order[4:] and len(s) == 6
    halves = [ResumableSampler(range(10), num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    assert sorted([*halves[0], *halves[1]]) == list(range(10))


def test_worker_processes_do_not_change_batches(data: tuple[Path, Path]) -> None:
    def batches(workers: int) -> list[torch.Tensor]:
        ds = PatchDataset(data[0], 16, vflip=True, seed=2)
        sampler = ResumableSampler(ds, seed=2)
        loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=workers, drop_last=True)
        out = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            ds.set_epoch(epoch)
            out += [torch.cat(pair) for pair in loader]
        return out

    a, b = batches(0), batches(2)
    assert len(a) == 6 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_too_small_image_is_named(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "d", 2, (32, 32))
    Image.new("RGB", (20, 40)).save(root / "clean" / "001.png")
    with pytest.raises(DatasetError, match=r"001\.png: image is 20x40.*smaller than the 24x24"):
        PatchDataset(root, 24)


def test_rng_state_round_trip() -> None:
    state = get_rng_state()
    a = (torch.rand(3), np.random.rand(3), __import__("random").random())  # noqa: NPY002
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), __import__("random").random())  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


# --- trainer -----------------------------------------------------------------------------------------------


def test_short_run_writes_everything(tmp_path: Path, data: tuple[Path, Path]) -> None:
    cfg = tiny_config(tmp_path / "run", data, max_steps=4)
    result = Trainer(cfg, log=lambda m: None).fit()
    out = tmp_path / "run"
    assert (result.step, result.epoch) == (4, 1)
    for name in ("last.pt", "best.pt", "log.csv", "val.csv", "curves.png"):
        assert (out / name).is_file(), name
    model = sapnet.load_model(out / "last.pt")
    assert model.config == cfg.network_config()
    assert model.metadata["step"] == 4 and model.metadata["train_config"]["data"]["patch"] == 16
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert set(ckpt["training"]) >= {"optimizer", "scheduler", "scaler", "rng", "epoch", "step"}
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    log = (out / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch,lr,loss,") and log[0].endswith("images_per_s") and len(log) == 5
    val = (out / "val.csv").read_text().splitlines()
    assert val[0] == "epoch,step,psnr,ssim" and len(val) == 3  # after epoch 1 and at the end (step 4)
    assert result.best_psnr == pytest.approx(max(float(line.split(",")[2]) for line in val[1:]), rel=1e-5)
    assert sapnet.load_model(out / "best.pt").metadata["best_psnr"] == result.best_psnr
    with Image.open(out / "curves.png") as im:
        assert im.format == "PNG" and im.size == (1000, 400)


def test_resume_continues_the_same_trajectory(tmp_path: Path, data: tuple[Path, Path]) -> None:
    straight = tiny_config(tmp_path / "a", data, max_steps=5)
    Trainer(straight, log=lambda m: None).fit()
    first = tiny_config(tmp_path / "b", data, max_steps=2)
    Trainer(first, log=lambda m: None).fit()
    more = tiny_config(tmp_path / "b", data, max_steps=5)
    Trainer(more, resume=tmp_path / "b" / "last.pt", log=lambda m: None).fit()  # crosses epoch end + LR decay
    a, b = weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "b" / "last.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    ta = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["training"]
    tb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["training"]
    assert (ta["step"], ta["epoch"], ta["batch_in_epoch"]) == (tb["step"], tb["epoch"], tb["batch_in_epoch"])
    assert ta["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.2)
    steps = [int(line.split(",")[0]) for line in (tmp_path / "b" / "log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4, 5]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path: Path, data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    Trainer(tiny_config(out, data, max_steps=2), log=lambda m: None).fit()
    good = (out / "last.pt").read_bytes()
    real = LossConfig.build

    def nan_at_second_call(config: LossConfig, seed: int = 0) -> SAPNetLoss:
        loss = real(config, seed)
        calls = {"n": 0}
        forward = loss.forward

        def patched(*args: object, **kwargs: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            total, terms = forward(*args, **kwargs)
            calls["n"] += 1
            return (total * float("nan"), terms) if calls["n"] == 2 else (total, terms)

        loss.forward = patched  # type: ignore[method-assign]
        return loss

    monkeypatch.setattr(LossConfig, "build", nan_at_second_call)
    # step 3 ends epoch 0 and saves last.pt (a good state); step 4 is NaN and must not be saved
    with pytest.raises(DivergedError, match=r"step 4 \(epoch 1\): loss=nan, ssim="):
        Trainer(tiny_config(out, data, max_steps=6), resume=out / "last.pt", log=lambda m: None).fit()
    assert (out / "last.pt").read_bytes() != good
    assert sapnet.load_model(out / "last.pt").metadata["step"] == 3
    good = (out / "last.pt").read_bytes()
    argv = ["train", "--data", str(data[0]), "--val", str(data[1]), "--out", str(out), "--resume", "--no-progress"]
    argv += ["--set", "model.stages=2", "--set", "model.channels=8", "--patch", "16", "--batch-size", "2"]
    argv += [
        "--workers",
        "0",
        "--max-steps",
        "6",
        "--no-ubs",
        "--no-contrastive",
        "--no-lpips",
        "--backbones",
        "random",
    ]
    argv += ["--set", "optim.milestones=[1]"]
    assert main(argv) == 3  # resumed at step 3: the second step (5) is NaN
    assert "non-finite loss at step 5" in capsys.readouterr().err
    assert (out / "last.pt").read_bytes() == good


def test_failed_save_leaves_previous_checkpoint(
    tmp_path: Path, data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(out, data, max_steps=1), log=lambda m: None)
    trainer.fit()
    good = (out / "last.pt").read_bytes()

    def broken_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        f.write(b"partial garbage")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    trainer.step += 1
    with pytest.raises(OSError, match="disk full"):
        trainer.save("last.pt")
    monkeypatch.undo()
    assert (out / "last.pt").read_bytes() == good
    assert sapnet.load_model(out / "last.pt").metadata["step"] == 1
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_amp_on_cpu_is_refused(tmp_path: Path, data: tuple[Path, Path]) -> None:
    cfg = tiny_config(tmp_path, data)
    cfg.run.amp, cfg.run.device = "bf16", "cpu"
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        Trainer(cfg, log=lambda m: None)


def test_all_loss_terms_one_step(tmp_path: Path, data: tuple[Path, Path]) -> None:
    cfg = tiny_config(tmp_path / "run", data, max_steps=1)
    cfg.data.patch = 32
    cfg.loss.ubs = cfg.loss.contrastive = cfg.loss.lpips = 0.1
    with pytest.warns(UserWarning):  # random backbones are announced
        result = Trainer(cfg, log=lambda m: None).fit()
    assert result.step == 1
    header = (tmp_path / "run" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"ssim", "ubs", "contrastive", "lpips"} <= set(header)
    info = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["metadata"]["backbones_info"]
    assert isinstance(info, dict)


# --- command line ------------------------------------------------------------------------------------------


def test_train_py_help() -> None:
    r = subprocess.run([sys.executable, str(REPO / "train.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for option in (
        "--config",
        "--resume",
        "--no-attention",
        "--no-dilation",
        "--no-lr-decay",
        "--backbones",
        "--overwrite",
        "--save-every",
        "--ema",
        "--tensorboard",
        "--workers",
    ):
        assert option in r.stdout


def test_imagenet_backbones_offline_fail_clearly(tmp_path: Path, data: tuple[Path, Path]) -> None:
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path)}
    argv = [sys.executable, str(REPO / "train.py"), "--backbones", "imagenet", "--data", str(data[0])]
    argv += ["--out", str(tmp_path / "run"), "--device", "cpu", "--patch", "16"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "--backbones random" in r.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


# --- multi-process (two torchrun processes, about 12 s) ---------------------------------------------------

_DDP_SCRIPT = """
import os, sys, torch
torch.set_num_threads(1)
from sapnet.training import TrainConfig, Trainer
cfg = TrainConfig.from_dict({
    "model": {"stages": 2, "channels": 8},
    "data": {"train": sys.argv[1], "val": sys.argv[2], "patch": 16, "batch_size": 1, "workers": 0},
    "loss": {"ubs": 0, "contrastive": 0, "lpips": 0, "backbones": "random", "seg_encoder": "resnet18"},
    "run": {"out": sys.argv[3], "max_steps": 3, "progress": False, "log_every": 1},
})
trainer = Trainer(cfg, log=print)
trainer.fit()
torch.save(trainer.net.state_dict(), os.path.join(sys.argv[3], f"rank{os.environ['RANK']}.pt"))
"""


def test_two_process_gloo_training_keeps_ranks_in_sync(tmp_path: Path, data: tuple[Path, Path]) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    r = subprocess.run([*cmd, str(data[0]), str(data[1]), str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    saved = weights(out / "last.pt")
    assert all(torch.equal(saved[k], a[k]) for k in a)
    assert sapnet.load_model(out / "last.pt").metadata["step"] == 3
    assert len((out / "log.csv").read_text().splitlines()) == 4  # rank 0 only


def test_model_from_published_weights(compat_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAPNET_WEIGHTS_DIR", str(compat_dir))
    cfg = TrainConfig()
    cfg.set("model.preset", "prn_r.rain100h")
    cfg.set("model.pretrained", True)
    net = cfg.model.build()
    published = sapnet.create_model("prn_r.rain100h", pretrained=True)
    assert net.training and net.config == published.config
    for a, b in zip(net.state_dict().values(), published.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    cfg.set("model.preset", "prn_r.rain100x")
    with pytest.raises(ConfigError, match="did you mean"):
        cfg.model.build()
    cfg.set("model.preset", "prn_r")
    cfg.set("model.dilations", [1, 2, 4])  # a shared block with several dilations cannot be built
    with pytest.raises(ConfigError, match="shared_block"):
        cfg.validate()


def test_cli_model_and_pretrained_options() -> None:
    args = build_parser().parse_args(["train", "--model", "prn_r.rain100h", "--pretrained"])
    cfg = config_from_args(args)
    assert (cfg.model.preset, cfg.model.pretrained) == ("prn_r.rain100h", True)
    assert config_from_args(build_parser().parse_args(["train"])).model.pretrained is False


# --- output folder, resume checks, logs, options (issue 15) ----------------------------------------------


def tiny_argv(data: tuple[Path, Path], out: Path, *more: str) -> list[str]:
    """CLI arguments of :func:`tiny_config`'s run."""
    argv = ["train", "--data", str(data[0]), "--val", str(data[1]), "--out", str(out), "--no-progress"]
    argv += ["--set", "model.stages=2", "--set", "model.channels=8", "--patch", "16", "--batch-size", "2"]
    argv += ["--workers", "0", "--no-ubs", "--no-contrastive", "--no-lpips", "--backbones", "random"]
    argv += ["--set", "loss.seg_encoder=resnet18", "--set", "optim.milestones=[1]", "--set", "run.log_every=1"]
    return [*argv, *more]


def log_steps(path: Path) -> list[int]:
    return [int(line.split(",")[1 if path.name == "val.csv" else 0]) for line in path.read_text().splitlines()[1:]]


def test_second_run_into_a_used_folder_is_refused(
    tmp_path: Path, data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(tiny_argv(data, out, "--max-steps", "6")) == 0
    best, last, log = ((out / n).read_bytes() for n in ("best.pt", "last.pt", "log.csv"))
    capsys.readouterr()
    assert main(tiny_argv(data, out, "--max-steps", "2")) == 2
    err = capsys.readouterr().err
    assert f"{out} is not empty" in err and "--resume" in err and "--overwrite" in err
    assert [(out / n).read_bytes() for n in ("best.pt", "last.pt", "log.csv")] == [best, last, log]
    with pytest.raises(ConfigError, match="is not empty"):
        Trainer(tiny_config(out, data), log=lambda m: None)
    (tmp_path / "empty").mkdir()
    Trainer(tiny_config(tmp_path / "empty", data), log=lambda m: None)  # an empty folder is fine
    assert main(tiny_argv(data, out, "--max-steps", "2", "--overwrite")) == 0
    err = capsys.readouterr().err
    assert "--overwrite: deleting the previous run's last.pt, best.pt, log.csv" in err and "val PSNR" in err
    assert log_steps(out / "log.csv") == [1, 2] and sapnet.load_model(out / "last.pt").metadata["step"] == 2
    assert main(tiny_argv(data, out, "--resume", "--overwrite")) == 2


def test_resume_refuses_other_settings_and_reads_them_back(
    tmp_path: Path, data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(tiny_argv(data, out, "--max-steps", "2")) == 0
    capsys.readouterr()
    last = out / "last.pt"
    for option, message in [
        (("--patch", "24"), "data.patch: checkpoint 16, now 24"),
        (("--batch-size", "3"), "data.batch_size: checkpoint 2, now 3"),
        (("--lr", "0.01"), "optim.lr: checkpoint 0.001, now 0.01"),
        (("--data", str(data[1])), f"data.train: checkpoint {str(data[0])!r}, now {str(data[1])!r}"),
    ]:
        assert main(tiny_argv(data, out, "--resume", *option)) == 2
        assert message in capsys.readouterr().err, option
    cfg = tiny_config(out, data, max_steps=4)
    cfg.optim.gamma, cfg.run.seed = 0.5, 1
    with pytest.raises(ConfigError, match=r"optim\.gamma: checkpoint 0\.2, now 0\.5; run\.seed: checkpoint 0, now 1"):
        Trainer(cfg, resume=last, log=lambda m: None)
    assert sapnet.load_model(last).metadata["step"] == 2  # nothing was written
    # limits, logging and output options may change; the rest comes from the checkpoint
    more = ["--max-steps", "4", "--save-every", "1", "--set", "run.log_every=2", "--workers", "1", "--epochs", "50"]
    assert main(["train", "--resume", str(last), *more]) == 0
    assert sapnet.load_model(last).metadata["step"] == 4
    saved = sapnet.load_model(last).metadata["train_config"]
    assert (saved["data"]["patch"], saved["model"]["channels"], saved["run"]["log_every"]) == (16, 8, 2)


def test_resume_drops_log_rows_written_after_the_checkpoint(tmp_path: Path, data: tuple[Path, Path]) -> None:
    out = tmp_path / "run"
    Trainer(tiny_config(out, data, max_steps=3), log=lambda m: None).fit()  # epoch 0 ends: validated, saved
    at_step_3 = (out / "last.pt").read_bytes()
    Trainer(tiny_config(out, data, max_steps=5), resume=out / "last.pt", log=lambda m: None).fit()
    assert log_steps(out / "log.csv") == [1, 2, 3, 4, 5] and log_steps(out / "val.csv") == [3, 5]
    (out / "last.pt").write_bytes(at_step_3)  # as if killed after step 5 was logged but before it was saved
    Trainer(tiny_config(out, data, max_steps=5), resume=out / "last.pt", log=lambda m: None).fit()
    assert log_steps(out / "log.csv") == [1, 2, 3, 4, 5] and log_steps(out / "val.csv") == [3, 5]


def test_save_every(tmp_path: Path, data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse("--save-every", "7").run.save_every == 7 and parse().run.save_every is None
    saved: list[tuple[str, int]] = []
    real = Trainer.save

    def recording(self: Trainer, name: str = "last.pt", **kwargs: bool) -> Path | None:
        saved.append((name, self.step))
        return real(self, name, **kwargs)

    monkeypatch.setattr(Trainer, "save", recording)
    cfg = tiny_config(tmp_path / "run", data, max_steps=5)
    cfg.data.val, cfg.run.save_every = None, 2
    Trainer(cfg, log=lambda m: None).fit()
    assert saved == [("last.pt", 2), ("last.pt", 3), ("last.pt", 4), ("last.pt", 5)]  # 3: epoch end, 5: the end


@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 1), (3, 2), (5, 4), (64, 4)])
def test_default_worker_count_fits_the_machine(
    monkeypatch: pytest.MonkeyPatch, cpus: int, workers: int, tmp_path: Path, data: tuple[Path, Path]
) -> None:
    monkeypatch.setattr(training_config, "available_cpus", lambda: cpus)
    assert TrainConfig().data.loader_workers() == workers
    assert parse("--workers", "3").data.loader_workers() == 3
    if cpus == 2:
        cfg = tiny_config(tmp_path / "run", data)
        cfg.data.workers = None
        assert Trainer(cfg, log=lambda m: None).loader.num_workers == 1


def test_available_cpus_follows_the_affinity_mask() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert training_config.available_cpus() == expected


def test_tensorboard_missing_package_is_explained(
    tmp_path: Path, data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    cfg = tiny_config(tmp_path / "run", data)
    cfg.run.tensorboard = True
    with pytest.raises(ConfigError, match=r"run\.tensorboard: .*pip install tensorboard"):
        Trainer(cfg, log=lambda m: None)
    assert main(tiny_argv(data, tmp_path / "cli", "--tensorboard")) == 2
    assert "pip install tensorboard" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_tensorboard_events_are_written(tmp_path: Path, data: tuple[Path, Path]) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tmp_path / "run", data, max_steps=3)
    cfg.run.tensorboard = True
    Trainer(cfg, log=lambda m: None).fit()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "val/psnr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]


@pytest.mark.parametrize("decay", [0.5, 0.9])
def test_weight_ema_update_and_state(decay: float) -> None:
    torch.manual_seed(0)
    net = sapnet.create_model("prenet", stages=2, channels=4)
    ema = WeightEMA(net, decay)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, decay * before[k] + (1 - decay) * net.state_dict()[k], rtol=0, atol=1e-6)
    again = WeightEMA(net, 0.1)
    again.load_state_dict(ema.state_dict())
    assert (again.decay, again.updates) == (decay, 1)
    mine, theirs = again.module.state_dict(), ema.module.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    with pytest.raises(ValueError, match="EMA decay"):
        WeightEMA(net, 1.0)


def test_ema_is_resumed_exactly_and_used_for_best(tmp_path: Path, data: tuple[Path, Path]) -> None:
    assert parse("--ema", "0.99").optim.ema == 0.99 and parse("--ema", "0").optim.ema is None
    with pytest.raises(ConfigError, match=r"optim\.ema must be in \(0, 1\)"):
        parse("--ema", "1.5")

    def config(out: Path, steps: int) -> TrainConfig:
        cfg = tiny_config(out, data, max_steps=steps)
        cfg.optim.ema = 0.8
        return cfg

    Trainer(config(tmp_path / "a", 5), log=lambda m: None).fit()
    Trainer(config(tmp_path / "b", 2), log=lambda m: None).fit()
    Trainer(config(tmp_path / "b", 5), resume=tmp_path / "b" / "last.pt", log=lambda m: None).fit()
    ta = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    tb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ta["training"]["ema"]["updates"] == tb["training"]["ema"]["updates"] == 5
    for k, v in ta["training"]["ema"]["state_dict"].items():
        torch.testing.assert_close(v, tb["training"]["ema"]["state_dict"][k], rtol=0, atol=1e-6, msg=k)
    assert ta["metadata"]["weights"] == "trained"
    assert any(not torch.equal(v, ta["training"]["ema"]["state_dict"][k]) for k, v in ta["state_dict"].items())
    best = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    assert best["metadata"]["weights"] == "ema"
    assert all(torch.equal(v, best["training"]["ema"]["state_dict"][k]) for k, v in best["state_dict"].items())
    assert set(best["training"]["state_dict"]) == set(best["state_dict"])  # the trained weights, for resuming
    with pytest.raises(ConfigError, match=r"optim\.ema: checkpoint 0\.8, now None"):
        Trainer(tiny_config(tmp_path / "b", data, max_steps=6), resume=tmp_path / "b" / "last.pt", log=print)
    # validation scores the average (not the trained weights): best.pt's recorded PSNR is that of its weights
    scorer = Trainer(config(tmp_path / "c", 1), log=lambda m: None)
    assert scorer.ema is not None
    scorer.ema.module.load_state_dict(best["state_dict"])
    assert scorer.validate()["psnr"] == pytest.approx(best["metadata"]["best_psnr"], rel=1e-6)  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "expected"), [("cpu", "cpu"), (None, "cuda:0" if torch.cuda.is_available() else "cpu"), ("bogus", None)]
)
def test_pick_device(name: str | None, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ConfigError, match=r"run\.device"):
            pick_device(name)
    else:
        assert str(pick_device(name)) == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_pick_device_without_cuda() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available; use --device cpu"):
        pick_device("cuda")


@pytest.mark.parametrize(("last", "kept"), [(0, ["x"]), (2, ["1", "2", "x"]), (9, ["1", "2", "3", "x"])])
def test_truncate_csv(tmp_path: Path, last: int, kept: list[str]) -> None:
    path = tmp_path / "log.csv"
    path.write_text("step,loss\n1,0.5\n2,0.4\n3,0.3\nx,0.2\n")
    assert truncate_csv(path, "step", last) == 4 - len(kept)
    assert [line.split(",")[0] for line in path.read_text().splitlines()[1:]] == kept
    assert truncate_csv(tmp_path / "missing.csv", "step", 0) == 0


def test_checkpoints_of_earlier_versions_resume(tmp_path: Path, data: tuple[Path, Path]) -> None:
    out = tmp_path / "run"
    Trainer(tiny_config(out, data, max_steps=2), log=lambda m: None).fit()
    payload = torch.load(out / "last.pt", weights_only=True)
    train_config = payload["metadata"]["train_config"]  # as written before optim.ema / run.tensorboard existed
    del train_config["optim"]["ema"], train_config["run"]["tensorboard"]
    train_config["data"]["workers"] = 4
    torch.save(payload, out / "last.pt")
    result = Trainer(tiny_config(out, data, max_steps=4), resume=out / "last.pt", log=lambda m: None).fit()
    assert result.step == 4 and log_steps(out / "log.csv") == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ssim": -1.0}, r"loss: loss weight ssim must be >= 0"),
        ({"ssim": 0.0}, r"loss: all loss weights are 0"),
        ({"ssim": 1.0, "backbones": "pretrained"}, r"loss: backbones must be"),
        ({"ssim": 1.0, "weight_files": {"vgg": "x.pth"}}, r"loss: unknown weight_files keys \['vgg'\]"),
        ({"ssim": 1.0, "ubs_start_epoch": -2}, r"loss: ubs_start_epoch must be >= 0, got -2"),
    ],
)
def test_loss_config_build_raises_config_errors(changes: dict[str, object], message: str) -> None:
    cfg = TrainConfig()
    cfg.loss.ubs = cfg.loss.contrastive = cfg.loss.lpips = 0.0
    for key, value in changes.items():
        setattr(cfg.loss, key, value)
    for call in (cfg.validate, cfg.loss.check, cfg.loss.build):
        with pytest.raises(ConfigError, match=message):
            call()


def test_loss_config_build() -> None:
    cfg = TrainConfig().loss
    cfg.ubs = cfg.lpips = 0.0
    cfg.backbones = "random"
    with pytest.warns(UserWarning):
        loss = cfg.build(seed=3)
    assert isinstance(loss, SAPNetLoss) and loss.seed == 3 and loss.backbones_info == {"vgg16": "random"}
    assert loss.weights.active() == ("ssim", "contrastive")
