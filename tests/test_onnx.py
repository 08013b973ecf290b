"""ONNX export (``sapnet export``, ``sapnet.export_onnx``), int8 quantisation and the ONNX Runtime backend of
``sapnet.derain``, on a tiny random SAPNet (2 stages, 8 channels) and images of a few dozen pixels.

Exports cost a few seconds each (``torch.export`` tracing), so one dynamic export made through the CLI is shared by
the module, and the backend's own export of the same weights is made once (its session is cached).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import sapnet
import sapnet.deploy.backend
from sapnet.cli.main import main
from sapnet.deploy import (
    ImageFolderCalibration,
    OnnxDerainer,
    check_input,
    clear_session_cache,
    create_session,
    export_onnx,
    import_onnxruntime,
    onnx_derainer,
    quantize_int8,
    read_metadata,
)
from sapnet.deploy.graph import split_concat_convs
from sapnet.deploy.quantize import calibration_image, int8_nodes
from sapnet.hub import file_sha256

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (24, 32)


def tiny_net(seed: int = 0) -> sapnet.DerainNet:
    torch.manual_seed(seed)
    return sapnet.create_model("sapnet", stages=2, channels=8).eval()


@pytest.fixture(scope="module")
def net() -> sapnet.DerainNet:
    return tiny_net()


@pytest.fixture(scope="module")
def checkpoint(net: sapnet.DerainNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sapnet.save_model(net, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def exported(ort: Any, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``sapnet export CKPT -o tiny.onnx --dynamic --size 24 32``: (the file, what the command printed)."""
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["export", str(checkpoint), "-o", str(path), "--dynamic", "--size", *map(str, SIZE)])
    assert code == 0, out.getvalue()
    return path, out.getvalue()


def run_file(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = create_session(path, threads=1)
    (y,) = session.run(None, {"image": x.numpy()})
    return torch.from_numpy(y)


def reference(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net(x)


def test_cli_export_prints_the_difference_to_pytorch(exported: tuple[Path, str]) -> None:
    path, printed = exported
    assert path.is_file()
    match = re.search(r"max \|ONNX Runtime - PyTorch\| = (\S+)", printed)
    assert match is not None, printed
    assert float(match.group(1)) < 1e-4
    assert "1x3x24x32" in printed and "2x3x13x19" in printed  # the export size, and another size and batch


def test_export_round_trip_matches_pytorch(exported: tuple[Path, str], net: sapnet.DerainNet) -> None:
    x = check_input((1, 3, *SIZE), seed=5)
    torch.testing.assert_close(run_file(exported[0], x), reference(net, x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 3, 17, 41), (1, 3, 40, 20)])
def test_dynamic_export_runs_other_sizes(exported: tuple[Path, str], net: sapnet.DerainNet, shape: tuple) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(run_file(exported[0], x), reference(net, x), rtol=0, atol=1e-4)


def test_dynamic_axes_are_named(exported: tuple[Path, str]) -> None:
    (inp,) = create_session(exported[0]).get_inputs()
    assert inp.name == "image" and inp.shape == ["batch", 3, "height", "width"]


def test_metadata_documents_the_model(exported: tuple[Path, str], checkpoint: Path) -> None:
    meta = read_metadata(exported[0])
    assert meta["version"] == sapnet.__version__
    assert "[0, 1]" in meta["input"] and "RGB" in meta["input"] and "float32" in meta["input"]
    assert "clamp to [0, 1]" in meta["output"]
    assert meta["stages"] == "2" and meta["channels"] == "8"
    assert meta["weights_sha256"] == file_sha256(checkpoint) and meta["weights"] == "tiny.pt"
    assert meta["precision"] == "float32" and meta["shape"] == "dynamic"
    assert {"preprocess", "postprocess", "config"} <= set(meta)


def test_static_export_takes_its_shape_only(ort: Any, net: sapnet.DerainNet, tmp_path: Path) -> None:
    report = export_onnx(net, tmp_path / "static.onnx", size=(20, 28))
    assert report.input_shape == (1, 3, 20, 28) and report.metadata["shape"] == "static"
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    assert "max |ONNX Runtime - PyTorch|" in report.summary()
    x = torch.rand(3, 20, 28)
    out = sapnet.derain(x, report.path, backend="onnxruntime")
    torch.testing.assert_close(out, reference(net, x[None])[0].clamp(0, 1), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match=r"takes inputs of shape 1x3x20x28.*dynamic"):
        sapnet.derain(torch.rand(3, 20, 30), report.path, backend="onnxruntime", tile=0)


def test_keep_input_is_exported(ort: Any, net: sapnet.DerainNet, tmp_path: Path) -> None:
    x = torch.rand(1, 3, 20, 28)
    threshold = float((x - reference(net, x)).abs().amax(dim=1).median())  # about half the pixels kept
    keeping = sapnet.create_model("sapnet", stages=2, channels=8, keep_input=threshold).eval()
    keeping.load_state_dict(net.state_dict())
    report = export_onnx(keeping, tmp_path / "keep.onnx", size=(20, 28))
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    assert read_metadata(report.path)["config"].count("keep_input") == 1
    out = run_file(report.path, x)
    torch.testing.assert_close(out, reference(keeping, x), rtol=0, atol=1e-4)
    assert int((out == x).all(dim=1).sum()) > 0.3 * 20 * 28  # the input's own pixels came through


def test_graph_rewrites_leave_no_weight_slices_nor_reduce_means(exported: tuple[Path, str]) -> None:
    import onnx

    model = onnx.load(str(exported[0]))
    ops = [node.op_type for node in model.graph.node]
    assert "Slice" not in ops and "ReduceMean" not in ops and "GlobalAveragePool" in ops
    assert all(
        node.input[1] in {t.name for t in model.graph.initializer}
        for node in model.graph.node
        if node.op_type == "Conv"
    )
    assert not any(p.key == "pkg.torch.onnx.stack_trace" for node in model.graph.node for p in node.metadata_props)


def test_split_concat_convs_keeps_the_values(exported: tuple[Path, str], tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(exported[0]))
    concats = {out for node in model.graph.node if node.op_type == "Concat" for out in node.output}
    fed = sum(node.op_type == "Conv" and node.input[0] in concats for node in model.graph.node)
    assert fed == 1 + 1 + 4  # each stage's input convolution, the second stage's four LSTM gates
    assert split_concat_convs(model) == fed
    assert "Concat" not in {node.op_type for node in model.graph.node}
    onnx.save(model, str(tmp_path / "split.onnx"))
    x = check_input((1, 3, *SIZE), seed=4)
    torch.testing.assert_close(run_file(tmp_path / "split.onnx", x), run_file(exported[0], x), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------------ int8


def test_int8_nodes_keep_the_image_convolutions_and_the_lstm_float(exported: tuple[Path, str]) -> None:
    import onnx

    model = onnx.load(str(exported[0]))
    split_concat_convs(model)
    chosen = set(int8_nodes(model))
    weights = {t.name: t for t in model.graph.initializer}
    nodes = {node.name: node for node in model.graph.node}
    assert {nodes[name].op_type for name in chosen} == {"Conv", "Mul", "Add", "Relu"}
    for node in model.graph.node:
        if node.op_type == "Conv":
            dims = list(weights[node.input[1]].dims)
            assert (node.name in chosen) == (dims[0] > 3 and dims[2:] != [1, 1]), node.input[1]
    lstm_state = [
        n for n in model.graph.node if n.op_type == "Mul" and any("cell" in p.value for p in n.metadata_props)
    ]
    assert lstm_state and not chosen & {n.name for n in lstm_state}


def write_rainy_pngs(folder: Path, count: int, size: tuple[int, int] = (40, 48)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        image = check_input((1, 3, *size), seed=10 + k)[0]
        sapnet.write_image(image, folder / f"{k}.png")
    return folder


def test_int8_calibration_runs_and_its_error_is_bounded(
    exported: tuple[Path, str], net: sapnet.DerainNet, tmp_path: Path
) -> None:
    import onnx

    folder = write_rainy_pngs(tmp_path / "rain", 4)
    out = quantize_int8(exported[0], tmp_path / "int8.onnx", folder, size=SIZE)
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantised
    meta = read_metadata(out)
    assert meta["precision"] == "int8" and "4 images" in meta["quantization"] and meta["stages"] == "2"
    x = check_input((1, 3, *SIZE), seed=20)
    expected = reference(net, x)
    error = (run_file(out, x) - expected).abs()
    # Measured: mean 0.001, max 0.003, against a mean change of the image by the network of 0.1; a wrong scale or
    # zero point, or a calibration that missed a tensor's range, is off by tenths.
    assert 0 < float(error.mean()) < 0.004
    assert float(error.max()) < 0.02
    assert float((expected - x).abs().mean()) > 25 * float(error.mean())


def test_calibration_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderCalibration(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no image files"):
        ImageFolderCalibration(tmp_path / "empty")


def test_calibration_reader_cuts_images_to_its_size(tmp_path: Path) -> None:
    folder = write_rainy_pngs(tmp_path / "rain", 3, size=(20, 60))
    reader = ImageFolderCalibration(folder, size=(24, 32), limit=2, input_name="x")
    batches = list(iter(reader.get_next, None))
    assert len(reader) == 2 and len(batches) == 2
    assert all(set(b) == {"x"} and b["x"].shape == (1, 3, 24, 32) and b["x"].dtype == np.float32 for b in batches)
    reader.rewind()
    assert reader.get_next() is not None


def test_calibration_image_crops_large_and_scales_up_small_images() -> None:
    large = torch.rand(3, 50, 70)
    torch.testing.assert_close(calibration_image(large, (20, 30)), large[:, 15:35, 20:50])
    small = calibration_image(torch.rand(3, 10, 40), (20, 30))  # scaled x2 to 20 x 80, then cropped
    assert small.shape == (3, 20, 30)


def test_cli_int8_needs_a_calibration_folder(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "m.onnx"), "--int8"]) == 2
    assert "--int8 needs --calibrate" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- derain backend


def kinds(x: torch.Tensor) -> dict[str, Any]:
    u8 = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return {
        "pil": Image.fromarray(u8),
        "uint8-array": u8,
        "float-array": x.permute(1, 2, 0).numpy(),
        "tensor": x,
        "batch-tensor": torch.stack([x, x.flip(-1)]),
        "list": [x, x[:, :20, :28], Image.fromarray(u8)],
    }


@pytest.mark.parametrize("kind", ["pil", "uint8-array", "float-array", "tensor", "batch-tensor", "list"])
@pytest.mark.parametrize("tile", [None, 16])
def test_onnxruntime_backend_equals_torch(ort: Any, net: sapnet.DerainNet, kind: str, tile: int | None) -> None:
    image = kinds(check_input((1, 3, *SIZE), seed=7)[0])[kind]
    options: dict[str, Any] = {"tile": tile, "tile_overlap": 4, "batch_size": 2}
    got = sapnet.derain(image, net, backend="onnxruntime", **options)
    want = sapnet.derain(image, net, **options)
    for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want], strict=True):
        g_arr = np.asarray(g, dtype=np.float64) if not isinstance(g, torch.Tensor) else g.double().numpy()
        w_arr = np.asarray(w, dtype=np.float64) if not isinstance(w, torch.Tensor) else w.double().numpy()
        assert type(g) is type(w) and g_arr.shape == w_arr.shape
        integer = isinstance(g, Image.Image) or (isinstance(g, np.ndarray) and g.dtype == np.uint8)
        assert np.abs(g_arr - w_arr).max() <= (1 if integer else 1e-4)  # integers: a rounding step at most


def test_sessions_are_cached_by_weights(
    net: sapnet.DerainNet, exported: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = onnx_derainer(net)
    assert onnx_derainer(net) is first
    assert onnx_derainer(tiny_net()) is first  # another object with the same weights
    assert isinstance(first, OnnxDerainer) and first.channels == 8 and first.fixed_shape is None
    import onnx

    monkeypatch.setattr(sapnet.deploy.backend, "onnx_model", lambda model, **kw: onnx.load(str(exported[0])))
    changed = tiny_net()
    with torch.no_grad():
        changed.output_conv.bias.add_(0.1)
    assert onnx_derainer(changed) is not first
    assert onnx_derainer(exported[0]) is onnx_derainer(str(exported[0]))  # a file: by path, size and time


def test_derain_runs_an_exported_file(exported: tuple[Path, str], net: sapnet.DerainNet) -> None:
    x = torch.rand(3, 30, 22)
    got = sapnet.derain(x, exported[0], backend="onnxruntime")
    torch.testing.assert_close(got, sapnet.derain(x, net), rtol=0, atol=1e-4)


def test_backend_argument_errors(net: sapnet.DerainNet, tmp_path: Path) -> None:
    x = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="backend must be one of 'torch', 'onnxruntime'"):
        sapnet.derain(x, net, backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is an ONNX model: run it with backend='onnxruntime'"):
        sapnet.derain(x, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="float32"):
        sapnet.derain(x, net, backend="onnxruntime", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"runs on 'cpu' or 'cuda', not 'meta'"):
        sapnet.derain(x, net, backend="onnxruntime", device="meta")


def test_missing_onnxruntime_names_the_extra(net: sapnet.DerainNet, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_session_cache()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    hint = re.escape("needs onnxruntime: pip install 'sapnet[deploy]'")
    with pytest.raises(ImportError, match=hint):
        sapnet.derain(torch.rand(3, 8, 8), net, backend="onnxruntime")
    with pytest.raises(ImportError, match=hint):
        import_onnxruntime()
    from sapnet.downstream import ModelUnavailableError, YoloxOnnxDetector

    with pytest.raises(ModelUnavailableError, match=re.escape("pip install 'sapnet[downstream]'")):
        YoloxOnnxDetector(__file__)  # any existing file: the missing package is reported first


def test_missing_onnx_tools_name_the_extra(net: sapnet.DerainNet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match=re.escape("needs onnx and onnxscript: pip install 'sapnet[deploy]'")):
        export_onnx(net, "unused.onnx")


def test_cli_derain_with_the_onnxruntime_backend(
    exported: tuple[Path, str], checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image = check_input((1, 3, *SIZE), seed=9)[0]
    sapnet.write_image(image, tmp_path / "in" / "a.png")
    outputs = {}
    for name, model in (("torch", ["--checkpoint", str(checkpoint)]), ("ort", ["--model", str(exported[0])])):
        backend = ["--backend", "onnxruntime"] if name == "ort" else []
        assert main(["derain", str(tmp_path / "in"), "-o", str(tmp_path / name), *model, *backend]) == 0
        outputs[name] = np.asarray(Image.open(tmp_path / name / "a.png"), dtype=np.int16)
    assert np.abs(outputs["torch"] - outputs["ort"]).max() <= 1
    assert main(["derain", str(tmp_path / "in"), "-o", str(tmp_path / "x"), "--model", str(exported[0])]) == 2
    assert "run it with --backend onnxruntime" in capsys.readouterr().err


def test_export_refuses_an_opset_below_18(net: sapnet.DerainNet, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="opset must be >= 18"):
        export_onnx(net, tmp_path / "old.onnx", opset=17)
    assert not (tmp_path / "old.onnx").exists()
