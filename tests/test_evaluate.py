"""``evaluate`` / ``python evaluate.py``: the published protocol, tables, outputs, and every bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sapnet
from sapnet.cli import main
from sapnet.data import ImageReadError
from sapnet.data.image import quantize_8bit
from sapnet.evaluation import (
    Method,
    MethodRunner,
    PerImageWriter,
    Record,
    evaluate,
    format_value,
    markdown_table,
    records_table,
    scores_table,
    write_tables,
)
from sapnet.metrics import METRICS, brisque, psnr, ssim

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZE = (40, 32)  # PIL (width, height); BRISQUE needs >= 14 pixels a side


pytestmark = pytest.mark.usefixtures("one_thread")


def _write(path: Path, seed: int, size: tuple[int, int] = SIZE, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    a = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a[:, :, 0] if mode == "L" else a, mode=mode).save(path)
    return path


def _paired(root: Path, n: int = 3) -> Path:
    """``rain/NNN.png`` + ``clean/NNN.png``: the clean image plus noise as the rainy one."""
    (root / "rain").mkdir(parents=True, exist_ok=True)
    for k in range(1, n + 1):
        clean = _write(root / "clean" / f"{k:03d}.png", k)
        a = np.asarray(Image.open(clean)).astype(np.int16)
        noise = np.random.default_rng(100 + k).integers(-30, 31, a.shape)
        Image.fromarray(np.clip(a + noise, 0, 255).astype(np.uint8)).save(root / "rain" / f"{k:03d}.png")
    return root


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return _paired(tmp_path / "set")


@pytest.fixture
def ckpt(tmp_path: Path, model: sapnet.DerainNet) -> Path:
    return sapnet.save_model(model, tmp_path / "tiny.pt")


def _pairs(root: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (sapnet.read_image(r), sapnet.read_image(root / "clean" / r.name)) for r in sorted((root / "rain").iterdir())
    ]


def _by(records, method: str, dataset: str = "set"):
    (rec,) = [r for r in records if r.method == method and r.dataset == dataset]
    return rec


def test_scores_follow_the_protocol(data: Path, ckpt: Path, model: sapnet.DerainNet, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = evaluate([str(ckpt)], [f"set={data}"], ["psnr", "ssim", "brisque"], out, progress=False)
    pairs = _pairs(data)
    rainy, tiny = _by(result.records, "Rainy"), _by(result.records, "tiny")
    assert rainy.n == tiny.n == 3 and not rainy.skipped and not tiny.skipped
    expected_rainy = {
        "psnr": np.mean([psnr(r, c).item() for r, c in pairs]),
        "ssim": np.mean([ssim(r, c).item() for r, c in pairs]),
        "brisque": np.mean([brisque(r).item() for r, _ in pairs]),
    }
    outputs = [quantize_8bit(sapnet.derain(r, model), "floor") for r, _ in pairs]
    expected_model = {
        "psnr": np.mean([psnr(o, c).item() for o, (_, c) in zip(outputs, pairs, strict=True)]),
        "ssim": np.mean([ssim(o, c).item() for o, (_, c) in zip(outputs, pairs, strict=True)]),
    }
    for key, value in expected_rainy.items():
        assert rainy.values[key] == pytest.approx(value, abs=1e-9)
    for key, value in expected_model.items():
        assert tiny.values[key] == pytest.approx(value, abs=1e-9)
    assert result.model_seconds > 0 and result.metric_seconds > 0


def test_writes_tables_per_image_scores_and_grid(data: Path, ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = evaluate([f"mine={ckpt}"], [f"set={data}"], ["psnr", "ssim"], out, progress=False)
    md = (out / "table.md").read_text()
    assert "| method | set PSNR ↑ | set SSIM ↑ |" in md and "| Rainy |" in md and "| mine |" in md
    assert "rgb2ycbcr" in md  # the protocol is stated with the figures
    records = json.loads((out / "table.json").read_text())
    assert [r["method"] for r in records] == ["Rainy", "mine"]
    assert set(records[0]) >= {"method", "dataset", "n", "psnr", "ssim"}
    with (out / "table.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert float(rows[1]["psnr"]) == pytest.approx(_by(result.records, "mine").values["psnr"])
    with (out / "per_image.csv").open() as f:
        per_image = list(csv.DictReader(f))
    assert len(per_image) == 6 and {r["image"] for r in per_image} == {"001", "002", "003"}
    grid = Image.open(out / "grid_set.png")
    assert grid.width > 3 * SIZE[0] and grid.height > 3 * SIZE[1]  # rainy | mine | clean, 3 rows


def test_saved_outputs_score_the_same_as_a_folder_method(data: Path, ckpt: Path, tmp_path: Path) -> None:
    first = evaluate([f"net={ckpt}"], [f"set={data}"], out=tmp_path / "a", save_outputs=True, progress=False)
    saved = tmp_path / "a" / "outputs" / "net"
    assert sorted(p.name for p in (saved / "set").iterdir()) == ["001.png", "002.png", "003.png"]
    second = evaluate([f"again={saved}"], [f"set={data}"], out=tmp_path / "b", progress=False)
    assert _by(second.records, "again").values == pytest.approx(_by(first.records, "net").values, abs=1e-12)
    assert second.model_seconds == 0


def test_unpaired_folder_gets_no_reference_metrics(tmp_path: Path) -> None:
    for k in range(2):
        _write(tmp_path / "real" / f"{k}.jpg", k)
    result = evaluate([], [f"real={tmp_path / 'real'}"], ["psnr", "brisque"], tmp_path / "out", progress=False)
    (rec,) = result.records
    assert rec.n == 2 and set(rec.values) == {"brisque"}
    messages: list[str] = []
    result = evaluate([], [f"real={tmp_path / 'real'}"], ["psnr"], None, progress=False, log=messages.append)
    assert result.records == [] and "no-reference" in messages[0]


def _bad_set(root: Path) -> Path:
    _paired(root, 2)
    _write(root / "clean" / "003.png", 3)
    _write(root / "rain" / "003.png", 3, size=(SIZE[0] + 2, SIZE[1]))  # sizes differ
    _write(root / "clean" / "004.png", 4, mode="L")  # grayscale ground truth
    _write(root / "rain" / "004.png", 4)
    _write(root / "clean" / "005.png", 5)
    (root / "rain" / "005.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # corrupt PNG
    return root


def test_bad_pairs_are_skipped_and_listed(tmp_path: Path, ckpt: Path) -> None:
    root = _bad_set(tmp_path / "bad")
    messages: list[str] = []
    result = evaluate([str(ckpt)], [f"bad={root}"], out=tmp_path / "out", progress=False, log=messages.append)
    rainy = _by(result.records, "Rainy", "bad")
    assert rainy.n == 2
    reasons = dict(rainy.skipped)
    assert set(reasons) == {"003", "004", "005"}
    assert "003.png" in reasons["003"] and "42x32" in reasons["003"]
    assert "grayscale" in reasons["004"] and "004.png" in reasons["004"]
    assert "replicated" not in reasons["004"]  # the pair is skipped, not converted: one wording, no contradiction
    assert "005.png" in reasons["005"]
    assert len(messages) == 3 and all("skipping bad/" in m for m in messages)
    md = (tmp_path / "out" / "table.md").read_text()
    assert "Skipped:" in md and "grayscale" in md


def test_bad_datasets_and_methods_do_not_stop_the_run(tmp_path: Path, data: Path, ckpt: Path) -> None:
    (tmp_path / "empty").mkdir()
    not_a_model = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, not_a_model)
    messages: list[str] = []
    result = evaluate(
        [str(not_a_model), str(tmp_path / "missing.pt"), "no_such_model", str(ckpt)],
        [f"gone={tmp_path / 'gone'}", f"empty={tmp_path / 'empty'}", f"set={data}"],
        out=tmp_path / "out",
        progress=False,
        log=messages.append,
    )
    text = "\n".join(messages)
    assert "weights.pt" in text and "missing.pt" in text and "no_such_model" in text
    assert "gone" in text and "empty" in text
    assert _by(result.records, "tiny").n == 3  # the good method on the good set still ran
    skipped = {(r.method, r.dataset) for r in result.records if r.skipped}
    assert {("Rainy", "gone"), ("Rainy", "empty"), (str(not_a_model), "*")} <= skipped
    md = (tmp_path / "out" / "table.md").read_text()
    assert "weights.pt" in md and "no_such_model" in md


def test_folder_method_missing_an_output(tmp_path: Path, data: Path) -> None:
    outputs = tmp_path / "other"
    _write(outputs / "001.png", 7)
    _write(outputs / "002.jpg", 8)
    result = evaluate([str(outputs)], [f"set={data}"], progress=False, log=lambda _: None)
    rec = _by(result.records, "other")
    assert rec.n == 2 and [name for name, _ in rec.skipped] == ["003"]
    assert "no output named" in rec.skipped[0][1]


@pytest.mark.parametrize("name", ["lpips", "PSNR", "brisque2"])
def test_unknown_metrics(name: str, data: Path) -> None:
    with pytest.raises(ValueError, match=f"unknown metric '{name}'.*Available: psnr, ssim, brisque, niqe, piqe"):
        evaluate([], [str(data)], ["psnr", name])


def test_registry_names_are_methods(data: Path, compat_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAPNET_WEIGHTS_DIR", str(compat_dir))
    messages: list[str] = []
    result = evaluate(
        ["prn_r.rain100h", "PRN=prn", "prenet.rain100x"], [str(data)], progress=False, log=messages.append
    )
    rows = {(r.method, r.dataset): r for r in result.records}
    assert rows[("prn_r.rain100h", data.name)].n == rows[("PRN", data.name)].n > 0
    assert ("prenet.rain100x", "*") in rows  # unknown: reported, listed, the rest ran
    assert any("unknown pretrained model 'prenet.rain100x'" in m and "prenet.rain100h" in m for m in messages)


def test_limit_scores_the_first_images(data: Path, model: sapnet.DerainNet, tmp_path: Path) -> None:
    result = evaluate([Method("m", model=model)], [str(data)], out=tmp_path, limit=1, progress=False)
    assert {r.n for r in result.records} == {1}
    assert "Only the first 1 images" in (tmp_path / "table.md").read_text()
    with pytest.raises(ValueError, match="limit"):
        evaluate([], [str(data)], limit=0)


def test_metric_registry() -> None:
    assert set(METRICS) == {"psnr", "ssim", "brisque", "niqe", "piqe"}
    assert [m for m in METRICS if METRICS[m].paired] == ["psnr", "ssim"]


def test_method_runner_outputs_and_timing(data: Path, model: sapnet.DerainNet, tmp_path: Path) -> None:
    rainy_path = data / "rain" / "001.png"
    rainy = sapnet.read_image(rainy_path)
    runner = MethodRunner()
    out = runner(Method("net", model=model), "set", "001", rainy_path, rainy)
    assert torch.equal(out, quantize_8bit(sapnet.derain(rainy, model), "floor")) and runner.seconds["net"] > 0
    saved = tmp_path / "saved"
    sapnet.write_image(out, saved / "set" / "001.png")
    again = runner(Method("folder", outputs_dir=saved), "set", "001", rainy_path, rainy)
    assert torch.equal(again, out) and set(runner.seconds) == {"net"}  # reading takes no network time
    assert runner.total_seconds == runner.seconds["net"]
    sapnet.write_image(out[:, :-2], saved / "set" / "002.png")
    with pytest.raises(ImageReadError, match=r"output is 40x30, the input 40x32"):
        runner(Method("folder", outputs_dir=saved), "set", "002", data / "rain" / "002.png", rainy)


@pytest.mark.parametrize(("value", "decimals", "cell"), [(1.23456, 2, "1.23"), (0.5, 4, "0.5000"), (None, 2, "-"),
                                                        (float("nan"), 3, "-")])  # fmt: skip
def test_format_value(value: float | None, decimals: int, cell: str) -> None:
    assert format_value(value, decimals) == cell


def test_both_table_layouts_share_one_renderer(tmp_path: Path) -> None:
    assert markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    psnr_spec, brisque_spec = METRICS["psnr"].spec, METRICS["brisque"].spec
    records = [Record("Rainy", "set", 2, {"psnr": 20.0, "brisque": 30.0}), Record("m", "set", 2, {"psnr": 25.5})]
    text = records_table(records, [psnr_spec, brisque_spec])
    assert text.startswith("| method | set PSNR ↑ | set BRISQUE ↓ |\n|---|---|---|\n| Rainy | 20.00 | 30.00 |")
    assert "| m | 25.50 | - |" in text and "Means over images (set: 2 images)." in text
    scores = {"Rainy": {"psnr": 20.0}, "m": {"psnr": float("nan")}}
    assert (
        scores_table(["Rainy", "m"], scores, [psnr_spec])
        == "| metric | Rainy | m |\n|---|---|---|\n| PSNR ↑ | 20.00 | - |"
    )
    paths = write_tables(tmp_path, "# t\n", [["k", "v"], ["x", 1.5]], {"x": None})
    assert paths["md"].read_text() == "# t\n" and paths["csv"].read_text().splitlines() == ["k,v", "x,1.5"]
    assert json.loads(paths["json"].read_text()) == {"x": None}


def test_per_image_writer_flushes_each_row(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "per_image.csv"
    with PerImageWriter(path, ["psnr", "brisque"]) as writer:
        assert path.read_text().splitlines() == ["method,dataset,image,psnr,brisque"]
        writer.write({"method": "m", "dataset": "d", "image": "1", "psnr": 30.5})
        assert path.read_text().splitlines()[1] == "m,d,1,30.5,"  # on disk before the file is closed
    assert writer.rows == 1


class Interrupting(torch.nn.Module):
    """Derains like ``inner`` for ``after`` images, then raises ``KeyboardInterrupt`` (Ctrl-C during a run)."""

    def __init__(self, inner: torch.nn.Module, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return self.inner(x)


@pytest.mark.parametrize(("sets", "after"), [(1, 0), (1, 2), (2, 4)])
def test_interrupted_run_keeps_what_it_measured(
    sets: int, after: int, data: Path, model: sapnet.DerainNet, tmp_path: Path
) -> None:
    datasets = [f"set={data}", f"set2={_paired(tmp_path / 'set2')}"][:sets]
    out, messages = tmp_path / "out", []
    with pytest.raises(KeyboardInterrupt):
        evaluate([Method("m", model=Interrupting(model, after))], datasets, ["psnr"], out, progress=False,
                 log=messages.append)  # fmt: skip
    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * after and all(r["psnr"] for r in rows)  # Rainy and m for each image scored
    md = (out / "table.md").read_text()
    assert md.startswith(f"PARTIAL results: interrupted after {after} images were scored")
    records = json.loads((out / "table.json").read_text())
    assert sum(r["n"] for r in records if r["method"] == "m") == after
    assert {(r["method"], r["dataset"]) for r in records} == {
        (m, d) for m in ("Rainy", "m") for d in ("set", "set2")[:sets]
    }
    assert messages[-1] == f"interrupted after {after} images: partial table in {out / 'table.md'}"


def test_cli_interrupted_exits_130_with_the_partial_table(
    data: Path, model: sapnet.DerainNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr("sapnet.evaluation.methods.load_model", lambda spec: Interrupting(model, 1))
    assert main(["evaluate", "--model", "net", "--dataset", str(data), "--out", str(tmp_path)]) == 130
    assert "interrupted after 1 images" in capsys.readouterr().err
    assert "PARTIAL" in (tmp_path / "table.md").read_text()


def test_method_object_in_memory(data: Path, model: sapnet.DerainNet) -> None:
    result = evaluate([Method("mem", model=model)], [str(data)], progress=False)
    assert _by(result.records, "mem").n == 3


def test_cli_prints_the_table_and_exit_codes(data: Path, ckpt: Path, tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--model", str(ckpt), "--dataset", f"set={data}", "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "| Rainy |" in printed and "| tiny |" in printed and "metric time" in printed
    bad = _bad_set(tmp_path / "bad")
    assert main(["evaluate", "--dataset", f"bad={bad}", "--out", str(tmp_path / "o2")]) == 1
    assert main(["evaluate", "--dataset", str(data), "--metrics", "lpips", "--out", str(tmp_path / "o3")]) == 2
    assert "unknown metric 'lpips'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("task", "extra", "named"),
    [
        ("restoration", ["--annotations", "a.json"], ["--annotations", "--task detection"]),
        ("restoration", ["--pseudo-gt", "--seed", "0"], ["--pseudo-gt", "--seed", "detection / segmentation"]),
        ("detection", ["--metrics", "brisque"], ["--metrics", "--task restoration"]),
        ("detection", ["--masks", "m", "--class-map", "voc"], ["--masks", "--class-map", "--task segmentation"]),
        ("segmentation", ["--save-outputs"], ["--save-outputs"]),
        ("segmentation", ["--pseudo-gt-threshold", "0.5"], ["--pseudo-gt-threshold", "--task detection"]),
    ],
)
def test_cli_refuses_options_of_other_tasks(
    task: str, extra: list[str], named: list[str], data: Path, tmp_path: Path, capsys
) -> None:
    argv = ["evaluate", "--task", task, "--dataset", str(data), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--task {task} does not use" in err and all(n in err for n in named), err
    assert not (tmp_path / "o").exists()  # refused before anything ran


def test_evaluate_py_entry_point(data: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "evaluate.py"), "--dataset", f"set={data}", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "| Rainy |" in run.stdout


# ------------------------------------------------------------------------------- calibration on real Rain100L

PUBLISHED = {  # Rain100L, Y channel: (PSNR, SSIM) the literature reports, see ../shared/data/README.md
    "Rainy": (26.90, 0.8384),
    "prenet_official_rain100l": (37.48, 0.9792),
    "sapnet_official_rain100h": (32.43, 0.9528),
}


def _check_published(rec, name: str) -> None:
    p, s = PUBLISHED[name]
    assert rec.n == 100 and not rec.skipped
    assert abs(rec.values["psnr"] - p) <= 0.01, rec.values
    assert abs(rec.values["ssim"] - s) <= 0.0005, rec.values


def test_rainy_row_on_rain100l(rain100l_dir: Path) -> None:
    torch.set_num_threads(2)
    result = evaluate([], [f"Rain100L={rain100l_dir}"], progress=False)
    _check_published(_by(result.records, "Rainy", "Rain100L"), "Rainy")
    pairs = sapnet.data.find_pairs(rain100l_dir)
    rgb = [psnr(sapnet.read_image(p.rainy), sapnet.read_image(p.clean), channel="rgb").item() for p in pairs]
    assert abs(np.mean(rgb) - 25.52) <= 0.01


@pytest.mark.slow
@pytest.mark.parametrize("name", ["prenet_official_rain100l", "sapnet_official_rain100h"])
def test_public_checkpoints_reproduce_published_figures(rain100l_dir: Path, compat_dir: Path, name: str) -> None:
    torch.set_num_threads(2)
    result = evaluate([str(compat_dir / f"{name}.pth")], [f"Rain100L={rain100l_dir}"], progress=False)
    _check_published(_by(result.records, "Rainy", "Rain100L"), "Rainy")
    _check_published(_by(result.records, name, "Rain100L"), name)


def test_images_list_restricts_scoring_and_reports_missing(data: Path, tmp_path: Path) -> None:
    names = sorted(p.name for p in (data / "rain").iterdir())
    listed = tmp_path / "subset.txt"
    listed.write_text(f"# two of them\n{names[0]}\n\n{names[1]}  # trailing comment\nnot_there.png\n")
    messages: list[str] = []
    result = evaluate(
        [], [f"set={data}"], ["psnr"], tmp_path / "out", images=sapnet.data.read_name_list(listed), log=messages.append
    )
    rainy = next(r for r in result.records if r.method == "Rainy")
    assert rainy.n == 2
    assert any("1 listed image not found: not_there.png" in m for m in messages)
    assert "Only listed images were scored (3 listed)." in (tmp_path / "out" / "table.md").read_text()


@pytest.mark.parametrize(
    ("text", "error"), [("", "lists no image names"), ("a.png\nb.png\na.png\n", "more than once: a.png")]
)
def test_read_name_list_errors(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "list.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        sapnet.data.read_name_list(path)
    with pytest.raises(FileNotFoundError, match="no such image list"):
        sapnet.data.read_name_list(tmp_path / "missing.txt")


def test_the_committed_sirr_split(shared_dir: Path) -> None:
    """30 held out + 117 for adaptation (97 trained on + 20 choosing best.pt): disjoint, together every SIRR photo."""
    root = Path(__file__).resolve().parents[1] / "datasets" / "splits"
    held = sapnet.data.read_name_list(root / "sirr_real_heldout.txt")
    adapt = sapnet.data.read_name_list(root / "sirr_real_adapt.txt")
    assert len(held) == 30 and len(adapt) == 117 and not set(held) & set(adapt)
    train = sapnet.data.read_name_list(root / "sirr_real_train.txt")
    select = sapnet.data.read_name_list(root / "sirr_real_select.txt")
    assert len(train) == 97 and len(select) == 20 and sorted(train + select) == sorted(adapt)
    folder = shared_dir / "data" / "SIRR_real" / "rain"
    if folder.is_dir():
        assert sorted(held + adapt) == sorted(p.name for p in sapnet.data.list_images(folder))


def test_cli_images_option(data: Path, tmp_path: Path, capsys) -> None:
    listed = tmp_path / "subset.txt"
    listed.write_text(sorted(p.name for p in (data / "rain").iterdir())[0] + "\n")
    assert main(["evaluate", "--dataset", str(data), "--images", str(listed), "--out", str(tmp_path / "o")]) == 0
    assert "Only listed images were scored (1 listed)." in capsys.readouterr().out
    assert main(["evaluate", "--dataset", str(data), "--images", str(tmp_path / "nope.txt"), "--out", "x"]) == 2
    assert "no such image list" in capsys.readouterr().err
