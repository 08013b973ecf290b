"""The pseudo-label bank: ranking, replacement rules, resume, bad inputs, teachers, patch pairs and the loss."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import sapnet
from sapnet.data import DatasetError, DatasetNotFoundError, quantize_8bit, read_image, write_image
from sapnet.metrics import METRICS, ImageMetric, MetricSpec
from sapnet.models import keep_unchanged
from sapnet.training import (
    INPUT,
    PseudoLabelBank,
    PseudoLabelLoss,
    PseudoLabelWarning,
    PseudoPairs,
    hflip_average,
    kept_input,
    mean_ranks,
    model_teacher,
    pseudo_label_loss,
    rank_order,
    registry_teachers,
    with_hflip_averages,
    with_kept_input,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# Toy metrics with known answers: the mean value (darker is "better") and the spread (higher is "better").
MEAN = ImageMetric(MetricSpec("mean", "Mean", 3, False), False, lambda x, _: float(x.double().mean()))
SPREAD = ImageMetric(MetricSpec("spread", "Spread", 3, True), False, lambda x, _: float(x.double().std()))


def _photo(seed: int, h: int, w: int) -> torch.Tensor:
    """A structured RGB image on the 8-bit grid: smooth gradients, a bright stripe and some texture; the odd
    seeds give brighter images (mean about 0.59 against 0.49)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([0.3 + 0.4 * xx, 0.2 + 0.5 * yy, 0.5 + 0.3 * (xx - yy)]) + (0.05 if seed % 2 else -0.05)
    base[:, :, w // 3 : w // 3 + max(1, w // 16)] += 0.25
    x = (base + 0.08 * torch.rand(3, h, w, generator=g)).clamp(0, 1)
    return quantize_8bit(x, "round")


def _folder(path: Path, count: int = 3, h: int = 40, w: int = 48) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_image(_photo(i, h, w), path / f"img{i + 1}.png")
    return path


Fn = Callable[[torch.Tensor], torch.Tensor]


def _scale(f: float) -> Fn:
    return lambda x: x * f


# ---------------------------------------------------------------------------------------------------- ranking


def test_mean_ranks_on_a_hand_made_table() -> None:
    # rows: entries; columns: two lower-is-better metrics. Metric 0 ranks 1, 2, 3; metric 1 has a tie (5, 5).
    assert mean_ranks([[1.0, 9.0], [2.0, 5.0], [3.0, 5.0]]) == [2.0, 1.75, 2.25]
    # The second metric higher-is-better: 9 is now the best.
    assert mean_ranks([[1.0, 9.0], [2.0, 5.0], [3.0, 5.0]], [False, True]) == [1.0, 2.25, 2.75]
    # Three-way tie under one metric: every entry gets the mean place 2.
    assert mean_ranks([[4.0], [4.0], [4.0]]) == [2.0, 2.0, 2.0]
    assert mean_ranks([]) == []
    with pytest.raises(ValueError, match="same"):
        mean_ranks([[1.0, 2.0], [1.0]])
    with pytest.raises(ValueError, match="directions"):
        mean_ranks([[1.0, 2.0]], [True])


@pytest.mark.parametrize(
    ("table", "directions", "order"),
    [
        ([[1.0, 9.0], [2.0, 5.0], [3.0, 5.0]], None, [1, 0, 2]),
        # All mean ranks 2.0: the first metric's score decides (lower first), then the row index.
        ([[2.0, 1.0], [1.0, 2.0], [2.0, 1.0]], None, [1, 0, 2]),
        # The same with the first metric higher-is-better: 2.0 beats 1.0.
        ([[2.0, 1.0], [1.0, 2.0], [2.0, 1.0]], [True, True], [0, 2, 1]),
        # A complete tie keeps the row order (the current label is row 0: it stays).
        ([[3.0, 3.0], [3.0, 3.0]], None, [0, 1]),
    ],
)
def test_rank_order_breaks_ties_by_first_metric_then_position(
    table: list[list[float]], directions: list[bool] | None, order: list[int]
) -> None:
    assert rank_order(table, directions) == order


# -------------------------------------------------------------------------------------------- replacement rules


def test_a_better_candidate_replaces_a_worse_one_does_not(tmp_path: Path) -> None:
    bank = PseudoLabelBank(_folder(tmp_path / "real"), [MEAN], store=tmp_path / "store")
    assert bank.names == ["img1", "img2", "img3"] and bank.labelled() == []

    s0 = bank.update({"bright": _scale(1.1), "half": _scale(0.5)}, epoch=0)
    assert s0.replaced == {"half": 3} and s0.kept == 0 and s0.images == 3
    assert bank.labelled() == bank.names
    for name in bank.names:
        label = bank.labels[name]
        assert (label.source, label.epoch) == ("half", 0)
        stored = read_image(bank.label_path(name))
        # The label is the candidate rounded to 8 bits, and its stored score is that of the stored image.
        assert torch.equal(stored, quantize_8bit(read_image(bank.files[name]) * 0.5, "round"))
        assert label.scores["mean"] == pytest.approx(float(stored.double().mean()), abs=1e-12)
    assert s0.label_means["mean"] == pytest.approx(np.mean([bank.labels[n].scores["mean"] for n in bank.names]))
    assert set(s0.candidate_means) == {"bright", "half"}
    assert s0.candidate_means["bright"]["mean"] > s0.candidate_means["half"]["mean"]
    assert "3 of 3 labels replaced (half 3)" in s0.describe()

    first_files = {n: bank.label_path(n) for n in bank.names}
    s1 = bank.update({"worse": _scale(0.8)}, epoch=1)
    assert s1.replaced == {} and s1.kept == 3
    assert all(bank.labels[n].source == "half" and bank.label_path(n) == first_files[n] for n in bank.names)

    s2 = bank.update({"worse": _scale(0.8), "better": _scale(0.25)}, epoch=2)
    assert s2.replaced == {"better": 3}
    assert all(bank.labels[n].epoch == 2 for n in bank.names)
    # A replaced label's file survives one update (the previous state stays loadable), then goes.
    assert all(p.is_file() for p in first_files.values())
    bank.update({"worse": _scale(0.8)}, epoch=3)
    assert not any(p.exists() for p in first_files.values())
    assert all(bank.label_path(n).is_file() for n in bank.names)
    assert json.loads((tmp_path / "store" / "bank.json").read_text()) == bank.state_dict()


def test_ties_keep_the_old_label(tmp_path: Path) -> None:
    bank = PseudoLabelBank(_folder(tmp_path / "real", count=2), [MEAN], store=tmp_path / "store")
    # The identity scores exactly as the input (the initial label): a tie, nothing replaced.
    summary = bank.update({"identity": lambda x: x.clone()}, epoch=0)
    assert summary.replaced == {} and summary.kept == 2
    assert all(bank.labels[n].source == INPUT and bank.labels[n].file is None for n in bank.names)
    assert bank.labelled() == [] and bank.label_path("img1") == bank.files["img1"]

    bank.update({"half": _scale(0.5)}, epoch=1)
    # Same scores from another candidate, later: the kept label (and its epoch) stay.
    summary = bank.update({"half-again": _scale(0.5)}, epoch=2)
    assert summary.replaced == {}
    assert all((bank.labels[n].source, bank.labels[n].epoch) == ("half", 1) for n in bank.names)
    # Within one update, of two equal candidates the first listed wins.
    bank2 = PseudoLabelBank(bank.files.values(), [MEAN], store=tmp_path / "store2")
    assert bank2.update({"b": _scale(0.5), "a": _scale(0.5)}, epoch=0).replaced == {"b": 2}


def test_several_metrics_are_combined_by_mean_rank(tmp_path: Path) -> None:
    # "mean": lower is better; "spread": higher is better. Darkening lowers both the mean and the spread, a
    # contrast stretch about the mean raises the spread and keeps the mean, so the stretch wins on mean rank.
    bank = PseudoLabelBank(_folder(tmp_path / "real", count=2), [MEAN, SPREAD], store=tmp_path / "store")

    def stretch(x: torch.Tensor) -> torch.Tensor:
        return (x.mean() + 1.5 * (x - x.mean())).clamp(0, 1)

    summary = bank.update({"dark": _scale(0.9), "stretch": stretch}, epoch=0)
    for name in bank.names:
        x = read_image(bank.files[name])
        pool = [x, quantize_8bit(x * 0.9, "round"), quantize_8bit(stretch(x), "round")]
        table = [[MEAN.fn(p, None), SPREAD.fn(p, None)] for p in pool]
        expected = [INPUT, "dark", "stretch"][rank_order(table, [False, True])[0]]
        assert bank.labels[name].source == expected
    assert sum(summary.replaced.values()) + summary.kept == 2


def test_default_metrics_brisque_and_niqe_pick_the_mean_rank_winner(tmp_path: Path) -> None:
    # 192x96: the smallest size NIQE scores (two 96x96 blocks).
    bank = PseudoLabelBank(_folder(tmp_path / "real", count=2, h=96, w=192), store=tmp_path / "store")
    assert list(bank.metrics) == ["brisque", "niqe"]

    def noisy(x: torch.Tensor) -> torch.Tensor:
        return (x + 0.1 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)

    def blurred(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x[None], 3, stride=1, padding=1, count_include_pad=False)[0]

    summary = bank.update({"noisy": noisy, "blurred": blurred}, epoch=0)
    for name in bank.names:
        x = read_image(bank.files[name])
        pool = [x, quantize_8bit(noisy(x), "round"), quantize_8bit(blurred(x), "round")]
        table = [[METRICS[k].fn(p, None) for k in ("brisque", "niqe")] for p in pool]
        best = rank_order(table)[0]
        label = bank.labels[name]
        assert label.source == [INPUT, "noisy", "blurred"][best]
        assert label.scores == {"brisque": table[best][0], "niqe": table[best][1]}
    # On these textured images, a light blur scores better than the input under both metrics.
    assert summary.replaced == {"blurred": 2}


# ----------------------------------------------------------------------------------------------------- resume


def test_resume_from_state_continues_exactly(tmp_path: Path) -> None:
    real = _folder(tmp_path / "real", count=4)

    def selective(x: torch.Tensor) -> torch.Tensor:  # better than "half" on bright photos only
        return x * 0.3 if x.mean() > 0.55 else x

    first = {"half": _scale(0.5), "bright": _scale(1.2)}
    second = {"selective": selective, "slightly": _scale(0.45)}
    straight = PseudoLabelBank(real, [MEAN], store=tmp_path / "a")
    straight.update(first, epoch=0)
    expected = straight.update(second, epoch=1)

    interrupted = PseudoLabelBank(real, [MEAN], store=tmp_path / "b")
    interrupted.update(first, epoch=0)
    torch.save({"bank": interrupted.state_dict()}, tmp_path / "ckpt.pt")
    del interrupted
    resumed = PseudoLabelBank(real, [MEAN], store=tmp_path / "b")
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["bank"])
    got = resumed.update(second, epoch=1)

    assert got == expected and got.replaced == {"selective": 2, "slightly": 2}
    assert resumed.state_dict() == straight.state_dict()
    for name in straight.names:
        assert torch.equal(read_image(resumed.label_path(name)), read_image(straight.label_path(name)))
    # The state is JSON as well.
    assert json.loads(json.dumps(straight.state_dict())) == straight.state_dict()


def test_load_state_dict_refuses_another_bank(tmp_path: Path) -> None:
    real = _folder(tmp_path / "real")
    bank = PseudoLabelBank(real, [MEAN], store=tmp_path / "store")
    bank.update({"half": _scale(0.5)}, epoch=0)
    state = bank.state_dict()
    with pytest.raises(ValueError, match="ranked by"):
        PseudoLabelBank(real, [MEAN, SPREAD], store=tmp_path / "store").load_state_dict(state)
    with pytest.raises(ValueError, match="not in this bank: img3"):
        PseudoLabelBank([real / "img1.png", real / "img2.png"], [MEAN], store=tmp_path / "store").load_state_dict(state)
    with pytest.raises(ValueError, match="missing from"):
        PseudoLabelBank(real, [MEAN], store=tmp_path / "elsewhere").load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        PseudoLabelBank(real, [MEAN], store=tmp_path / "store").load_state_dict({**state, "version": 99})


# ------------------------------------------------------------------------------------------------- bad inputs


def test_unreadable_and_grayscale_files_are_reported_and_skipped(tmp_path: Path) -> None:
    real = _folder(tmp_path / "real", count=2)
    (real / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(np.full((40, 48), 128, np.uint8), mode="L").save(real / "gray.png")
    with pytest.warns(PseudoLabelWarning, match="skipped 2 file") as caught:
        bank = PseudoLabelBank(real, [MEAN], store=tmp_path / "store")
    message = str(caught[0].message)
    assert "broken.png" in message and "gray.png: is grayscale" in message
    assert bank.names == ["img1", "img2"]
    assert set(bank.skipped) == {real / "broken.png", real / "gray.png"}
    assert bank.update({"half": _scale(0.5)}, epoch=0).replaced == {"half": 2}


def test_a_folder_without_usable_photos_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=f"{empty}: no image files"):
        PseudoLabelBank(empty, [MEAN], store=tmp_path / "store")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"garbage")
    with pytest.warns(PseudoLabelWarning), pytest.raises(DatasetError, match=f"{bad}: 1 image file.*none usable"):
        PseudoLabelBank(bad, [MEAN], store=tmp_path / "store")
    with pytest.raises(DatasetNotFoundError, match="not found"):
        PseudoLabelBank(tmp_path / "missing", [MEAN], store=tmp_path / "store")


def test_same_stem_twice_is_an_error(tmp_path: Path) -> None:
    real = _folder(tmp_path / "real", count=1)
    write_image(_photo(5, 40, 48), real / "img1.jpg")
    with pytest.raises(DatasetError, match="same name 'img1'"):
        PseudoLabelBank(real, [MEAN], store=tmp_path / "store")


def test_metrics_that_cannot_score_a_small_photo(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    write_image(_photo(0, 100, 100), real / "medium.png")  # BRISQUE scores it, NIQE needs 192x96
    write_image(_photo(1, 10, 10), real / "tiny.png")  # neither (BRISQUE needs 14x14)
    bank = PseudoLabelBank(real, store=tmp_path / "store")
    with pytest.warns(PseudoLabelWarning) as caught:
        summary = bank.update({"half": _scale(0.5)}, epoch=0)
    messages = " | ".join(str(w.message) for w in caught)
    assert "'medium': niqe cannot score it" in messages and "'tiny': no metric can score it" in messages
    assert summary.excluded == ["tiny"] and summary.images == 1
    assert set(bank.labels) == {"medium"} and set(bank.labels["medium"].scores) == {"brisque"}
    assert bank.excluded.keys() == {"tiny"}
    # Later updates skip the excluded photo silently and rank the other under BRISQUE alone.
    again = bank.update({"half": _scale(0.5)}, epoch=1)
    assert again.images == 1 and again.excluded == [] and set(again.label_means) == {"brisque"}


def test_a_candidate_that_cannot_be_scored_is_left_out(tmp_path: Path) -> None:
    bank = PseudoLabelBank(_folder(tmp_path / "real", count=1, h=96, w=192), ["piqe"], store=tmp_path / "store")
    with pytest.warns(PseudoLabelWarning, match="candidate 'black' cannot be scored"):
        summary = bank.update({"black": torch.zeros_like, "half": _scale(0.5)}, epoch=0)
    assert "black" not in summary.replaced and summary.candidate_means["black"] == {}
    assert set(summary.candidate_means["half"]) == {"piqe"}


@pytest.mark.parametrize(
    ("candidates", "match"),
    [
        ({}, "no candidates"),
        ({INPUT: _scale(0.5)}, "reserved"),
        ({"crop": lambda x: x[:, 1:, :]}, "turned photo 'img1'"),
    ],
)
def test_bad_candidates(tmp_path: Path, candidates: dict[str, Fn], match: str) -> None:
    bank = PseudoLabelBank(_folder(tmp_path / "real", count=1), [MEAN], store=tmp_path / "store")
    with pytest.raises(ValueError, match=match):
        bank.update(candidates, epoch=0)


def test_an_update_that_raises_changes_nothing(tmp_path: Path) -> None:
    bank = PseudoLabelBank(_folder(tmp_path / "real"), [MEAN], store=tmp_path / "store")
    bank.update({"half": _scale(0.5)}, epoch=0)
    before = bank.state_dict()

    def fails_on_img2(x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0.55:  # img2 (seed 1) is the bright one: img1 has been relabelled by then
            raise RuntimeError("teacher crashed")
        return x * 0.1

    with pytest.raises(RuntimeError, match="crashed"):
        bank.update({"better": _scale(0.25), "flaky": fails_on_img2}, epoch=1)
    assert bank.state_dict() == before
    assert bank.update({"better": _scale(0.25)}, epoch=1).replaced == {"better": 3}


@pytest.mark.parametrize(("metrics", "match"), [(["psnr"], "clean reference"), (["sharpness"], "unknown"), ([], "at")])
def test_bad_metrics(tmp_path: Path, metrics: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PseudoLabelBank(_folder(tmp_path / "real", count=1), metrics, store=tmp_path / "store")


# ---------------------------------------------------------------------------------------------------- teachers


def test_hflip_average() -> None:
    x = torch.rand(3, 5, 7)
    ramp = torch.linspace(0, 1, 7)

    def lopsided(y: torch.Tensor) -> torch.Tensor:
        return y * ramp

    out = hflip_average(lopsided)(x)
    assert torch.allclose(out, (x * ramp + (x.flip(-1) * ramp).flip(-1)) / 2)
    assert torch.allclose(hflip_average(lambda y: y)(x), x)
    both = with_hflip_averages({"t": lopsided})
    assert list(both) == ["t", "t+hflip"] and torch.allclose(both["t+hflip"](x), out)


@pytest.mark.parametrize("threshold", [0.01, 0.02, 0.1])
def test_keep_unchanged_puts_back_only_pixels_changed_little(threshold: float) -> None:
    g = torch.Generator().manual_seed(0)
    rainy = torch.rand(2, 3, 6, 8, generator=g)
    change = (torch.rand(2, 1, 6, 8, generator=g) - 0.5) * 4 * threshold  # some within, some beyond
    restored = (rainy - change * torch.tensor([1.0, 0.5, 0.25]).view(3, 1, 1)).clamp(0, 1)
    out = keep_unchanged(rainy, restored, threshold)
    little = (rainy - restored).abs().amax(dim=1, keepdim=True) <= threshold
    assert 0 < int(little.sum()) < little.numel()  # both cases occur
    assert torch.equal(out, torch.where(little, rainy, restored))
    assert out.dtype == restored.dtype and out.shape == restored.shape


def test_keep_unchanged_masks_by_the_largest_channel_change() -> None:
    rainy = torch.full((3, 1, 1), 0.5)
    restored = torch.tensor([0.5, 0.5, 0.45]).view(3, 1, 1)  # only blue changed, by 0.05
    assert torch.equal(keep_unchanged(rainy, restored, 0.02), restored)
    assert torch.equal(keep_unchanged(rainy, restored, 0.06), rainy)


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1])
def test_keep_unchanged_refuses_bad_thresholds(threshold: float) -> None:
    x = torch.rand(3, 4, 4)
    with pytest.raises(ValueError, match="outside"):
        keep_unchanged(x, x, threshold)
    with pytest.raises(ValueError, match="outside"):
        kept_input(lambda y: y, threshold)
    with pytest.raises(ValueError, match="differ"):
        keep_unchanged(x, x[:, :2], 0.02)


def test_kept_input_variants_share_their_teachers_pass() -> None:
    calls: list[int] = []

    def darker(y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return y - 0.005 - 0.01 * torch.arange(y.shape[-1]).float()  # changed by 0.005, 0.015, ...

    x = torch.rand(3, 4, 6)
    pool = with_kept_input({"t": darker}, [0.02, 0.04])
    assert list(pool) == ["t", "t+keep0.02", "t+keep0.04"]
    outs = [f(x) for f in pool.values()]
    assert len(calls) == 1  # one network pass for all three
    assert torch.equal(outs[1], keep_unchanged(x, outs[0], 0.02))
    assert torch.equal(outs[2][..., :4], x[..., :4]) and torch.equal(outs[2][..., 4:], outs[0][..., 4:])
    assert list(with_kept_input({"t": darker}, [])) == ["t"]


def test_model_teachers_restore_the_mode_and_load_by_name(tmp_path: Path) -> None:
    torch.manual_seed(0)
    student = sapnet.create_model("prenet", stages=2, channels=8)
    student.train()
    x = torch.rand(3, 16, 20)
    y = model_teacher(student)(x)
    assert y.shape == x.shape and not y.requires_grad and student.training
    assert torch.allclose(model_teacher(student, flip=True)(x), hflip_average(model_teacher(student))(x))
    path = sapnet.save_model(student, tmp_path / "teacher.pt")
    teachers = registry_teachers([str(path)], flip=True)
    assert list(teachers) == [str(path), f"{path}+hflip"]
    assert torch.allclose(teachers[str(path)](x), y, atol=1e-6)


# ------------------------------------------------------------------------------------------- pairs and the loss


def test_pseudo_pairs(tmp_path: Path) -> None:
    bank = PseudoLabelBank(_folder(tmp_path / "real", count=3), [MEAN], store=tmp_path / "store")
    with pytest.raises(DatasetError, match="no photo"):
        PseudoPairs(bank, 16)
    # Only the bright photos get a label (the candidate darkens them, leaves the others as they are).
    bank.update({"some": lambda x: x * 0.5 if x.mean() > 0.55 else x}, epoch=0)
    pairs = PseudoPairs(bank, 16, seed=3)
    assert len(pairs) == len(bank.labelled()) > 0
    rainy, label = pairs[0]
    assert rainy.shape == label.shape == (3, 16, 16) and rainy.dtype == torch.float32
    assert torch.equal(label, quantize_8bit(rainy * 0.5, "round"))  # the same crop and flip of both
    again = pairs[0]
    assert torch.equal(again[0], rainy)
    pairs.set_epoch(1)
    assert not torch.equal(pairs[0][0], rainy)
    with pytest.raises(DatasetError, match="smaller than"):
        PseudoPairs(bank, 64)


def test_pseudo_label_loss_gradient() -> None:
    torch.manual_seed(0)
    label = torch.rand(2, 3, 16, 16)
    assert pseudo_label_loss(label.clone(), label).item() == pytest.approx(0.0, abs=1e-6)
    output = (label + 0.1 * torch.randn_like(label)).requires_grad_()
    loss = pseudo_label_loss(output, label, ssim_weight=0.5, l1_weight=2.0)
    loss.backward()
    assert output.grad is not None and output.grad.abs().sum() > 0
    module = PseudoLabelLoss(ssim_weight=0.5, l1_weight=2.0)
    assert torch.allclose(module(output, label), loss)
    parts = 0.5 * sapnet.losses.ssim_loss(output, label) + 2.0 * (output - label).abs().mean()
    assert torch.allclose(loss, parts)
