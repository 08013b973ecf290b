"""Tests of the SAPNet training losses (``sapnet.losses``) on tiny images, with random (seeded) backbones.

No pretrained weights are needed: the "imagenet" path is only tested for its offline failure (skipped when the
weights happen to be cached) and the weight-file path with files written here.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import pytest
import torch

import sapnet
from sapnet.losses import (
    BackboneUnavailableError,
    LossWeights,
    LPIPSLoss,
    PerceptualContrastiveLoss,
    RandomBackboneWarning,
    SAPNetLoss,
    SSIMLoss,
    UBSLoss,
    contrastive_loss,
    focal_loss,
    lpips_loss,
    ssim_loss,
    ubs_loss,
)
from sapnet.losses.backbones import build_segmentation_network, build_vgg16_features

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::sapnet.losses.RandomBackboneWarning"),
]

ENCODER = "resnet18"  # the smallest ResNet encoder of smp; the paper's resnet101 is too heavy for tests
TERMS = ("ssim", "ubs", "contrastive", "lpips")


def _only(term: str) -> LossWeights:
    return LossWeights(**{name: (1.0 if name == term else 0.0) for name in TERMS})


def _random_loss(weights: LossWeights | None = None, **kwargs: object) -> SAPNetLoss:
    return SAPNetLoss(weights or LossWeights(), backbones="random", seg_encoder=ENCODER, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def loss() -> SAPNetLoss:
    """All four terms, random backbones, seed 0."""
    return _random_loss()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(derained-like, clean, rainy): 2x3x64x64 in [0, 1]."""
    g = torch.Generator().manual_seed(123)
    clean = torch.rand(2, 3, 64, 64, generator=g)
    rainy = (clean + 0.5 * (torch.rand(2, 3, 64, 64, generator=g) > 0.9)).clamp(0, 1)
    derained = (0.5 * clean + 0.5 * rainy).clamp(0, 1)
    return derained, clean, rainy


def _term(loss: SAPNetLoss, name: str, derained: torch.Tensor, clean: torch.Tensor, rainy: torch.Tensor):
    if name == "ssim":
        assert loss.ssim is not None
        return loss.ssim(derained, clean)
    if name == "ubs":
        assert loss.ubs is not None
        return loss.ubs(derained)
    if name == "contrastive":
        assert loss.contrastive is not None
        return loss.contrastive(derained, clean, rainy)
    assert loss.lpips is not None
    return loss.lpips(derained, clean)


@pytest.mark.parametrize("name", TERMS)
def test_each_loss_finite_and_differentiable(loss: SAPNetLoss, batch, name: str) -> None:
    derained, clean, rainy = batch
    x = derained.clone().requires_grad_(True)
    value = _term(loss, name, x, clean, rainy)
    assert value.dim() == 0 and torch.isfinite(value) and value.item() >= 0
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", TERMS)
def test_function_equals_module(loss: SAPNetLoss, batch, name: str) -> None:
    derained, clean, rainy = batch
    module_value = _term(loss, name, derained, clean, rainy)
    if name == "ssim":
        value = ssim_loss(derained, clean)
    elif name == "ubs":
        assert loss.ubs is not None
        value = ubs_loss(derained, loss.ubs.network)
    elif name == "contrastive":
        assert loss.contrastive is not None
        value = contrastive_loss(derained, clean, rainy, loss.contrastive.vgg)
    else:
        assert loss.lpips is not None
        value = lpips_loss(derained, clean, loss.lpips.metric)
    torch.testing.assert_close(value, module_value)


def test_identical_images_give_zero(loss: SAPNetLoss, batch) -> None:
    _, clean, rainy = batch
    assert loss.contrastive is not None and loss.lpips is not None
    assert loss.contrastive(clean, clean, rainy).item() == pytest.approx(0.0, abs=1e-6)
    assert loss.lpips(clean, clean).item() == pytest.approx(0.0, abs=1e-6)
    assert ssim_loss(clean, clean).item() == pytest.approx(0.0, abs=1e-5)


def test_combined_total_and_terms(loss: SAPNetLoss, batch) -> None:
    derained, clean, rainy = batch
    total, terms = loss(derained, clean, rainy)
    assert set(terms) == set(TERMS)
    assert all(v.dim() == 0 and not v.requires_grad for v in terms.values())
    w = loss.weights
    expected = sum(getattr(w, k) * v for k, v in terms.items())
    torch.testing.assert_close(total, expected)


def _tiny_net() -> sapnet.DerainNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return sapnet.create_model("sapnet", stages=2, channels=8)


def test_gradient_reaches_every_derain_parameter(loss: SAPNetLoss, batch) -> None:
    _, clean, rainy = batch
    net = _tiny_net()
    total, _ = loss(net(rainy), clean, rainy)
    assert total.requires_grad
    total.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert sum(int(p.grad.count_nonzero()) for p in net.parameters() if p.grad is not None) > 0
    # the frozen networks got nothing
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())


@pytest.mark.parametrize("name", TERMS)
def test_each_term_alone_reaches_the_derain_network(batch, name: str) -> None:
    _, clean, rainy = batch
    alone = _random_loss(_only(name))
    net = _tiny_net()
    total, terms = alone(net(rainy), clean, rainy)
    assert set(terms) == {name}
    total.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.count_nonzero() > 0 for g in grads)


def test_shared_vgg_pass_equals_separate_terms(loss: SAPNetLoss, batch) -> None:
    """Same VGG-16 weights for the contrastive term and the LPIPS trunk: one shared pass, same values and gradient
    as the two terms computed separately (compared in float64: LPIPS's scaling constants are float32, so the input
    normalisations agree to ~1e-9 only)."""
    assert loss.shares_vgg
    derained, clean, rainy = (t.double() for t in batch)
    shared = copy.deepcopy(loss).double()
    separate = copy.deepcopy(shared)
    separate.shares_vgg = False
    results = []
    for module in (shared, separate):
        x = derained.clone().requires_grad_(True)
        total, terms = module(x, clean, rainy)
        total.backward()
        results.append((total.detach(), terms, x.grad))
    (t_a, terms_a, g_a), (t_b, terms_b, g_b) = results
    assert list(terms_a) == list(terms_b) == list(TERMS)
    torch.testing.assert_close(t_a, t_b, rtol=1e-7, atol=1e-12)
    for name in TERMS:
        torch.testing.assert_close(terms_a[name], terms_b[name], rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(g_a, g_b, rtol=1e-6, atol=1e-12)
    # float32: equal within float tolerance
    total32, _ = loss(*batch)
    loss.shares_vgg = False
    try:
        separate32, _ = loss(*batch)
    finally:
        loss.shares_vgg = True
    torch.testing.assert_close(total32, separate32)


def test_vgg_not_shared_unless_same_network(loss: SAPNetLoss) -> None:
    assert _random_loss(LossWeights(ssim=1.0, ubs=0.0, contrastive=0.1, lpips=0.0)).shares_vgg is False
    assert _random_loss(LossWeights(ssim=1.0, ubs=0.0, contrastive=0.0, lpips=0.1)).shares_vgg is False
    no_ubs = LossWeights(ssim=1.0, ubs=0.0, contrastive=0.1, lpips=0.1)
    assert _random_loss(no_ubs, lpips_net="alex").shares_vgg is False
    other = _random_loss(no_ubs)
    assert other.shares_vgg and other.lpips is not None
    with torch.no_grad():
        other.lpips.metric.net.slice3[1].weight[0, 0, 0, 0] += 1e-3  # a different trunk (e.g. another weight file)
    assert other._can_share_vgg() is False


def test_zero_weight_does_not_build_network() -> None:
    only_ssim = SAPNetLoss(_only("ssim"), backbones="random")  # would be slow / fail if resnet101 were built
    assert only_ssim.ubs is None and only_ssim.contrastive is None and only_ssim.lpips is None
    assert only_ssim.backbones_info == {}
    assert sum(p.numel() for p in only_ssim.parameters()) == 0
    partial = _random_loss(LossWeights(ssim=1.0, ubs=0.0, contrastive=0.5, lpips=0.0))
    assert partial.ubs is None and partial.lpips is None and partial.contrastive is not None
    assert set(partial.backbones_info) == {"vgg16"}


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SAPNetLoss(LossWeights(0, 0, 0, 0), backbones="random")
    with pytest.raises(ValueError, match=">= 0"):
        LossWeights(ssim=-1.0)
    with pytest.raises(ValueError, match="unknown weight_files"):
        SAPNetLoss(_only("ssim"), backbones="random", weight_files={"vgg": "x.pth"})
    with pytest.raises(ValueError, match="backbones"):
        SAPNetLoss(_only("ssim"), backbones="pretrained")  # type: ignore[arg-type]


def test_ubs_start_epoch(batch) -> None:
    derained, clean, rainy = batch
    loss = _random_loss(LossWeights(ssim=1.0, ubs=0.5, contrastive=0.0, lpips=0.0), ubs_start_epoch=3)
    total, terms = loss(derained, clean, rainy, epoch=2)
    assert set(terms) == {"ssim"}
    torch.testing.assert_close(total, terms["ssim"])
    total, terms = loss(derained, clean, rainy, epoch=3)
    assert set(terms) == {"ssim", "ubs"}
    torch.testing.assert_close(total, terms["ssim"] + 0.5 * terms["ubs"])
    # only UBS, before its start: a zero total that still back-propagates
    ubs_only = _random_loss(_only("ubs"), ubs_start_epoch=1)
    x = derained.clone().requires_grad_(True)
    total, terms = ubs_only(x, clean, rainy, epoch=0)
    assert terms == {} and total.item() == 0.0
    total.backward()
    assert x.grad is not None


def test_frozen_networks_stay_in_eval_mode(loss: SAPNetLoss) -> None:
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert loss.training
    assert loss.ubs is not None and loss.lpips is not None and loss.contrastive is not None
    for frozen in (loss.ubs.network, loss.lpips.metric, loss.contrastive.vgg.features):
        assert not any(m.training for m in frozen.modules())
    loss.eval()
    assert loss.to("cpu") is loss


def test_backbones_info_and_warning() -> None:
    with pytest.warns(RandomBackboneWarning, match="randomly initialised"):
        loss = _random_loss()
    assert loss.backbones_info == {"vgg16": "random", "lpips": "random", "seg_encoder": "random"}
    info = loss.backbones_info
    info["vgg16"] = "changed"
    assert loss.backbones_info["vgg16"] == "random"  # a copy


def test_seeded_random_backbones_are_deterministic(batch) -> None:
    derained, clean, rainy = (t[:1, :, :32, :32] for t in batch)
    state = torch.random.get_rng_state()
    a, _ = _random_loss(seed=3)(derained, clean, rainy)
    b, _ = _random_loss(seed=3)(derained, clean, rainy)
    c, _ = _random_loss(seed=4)(derained, clean, rainy)
    assert a.item() == b.item()
    assert a.item() != c.item()
    assert torch.equal(torch.random.get_rng_state(), state)  # construction leaves the global generator alone


def _cached(path: Path) -> bool:
    return path.is_file()


def _hf_cached(encoder: str) -> bool:
    import segmentation_models_pytorch as smp
    from huggingface_hub import try_to_load_from_cache

    settings = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]
    found = try_to_load_from_cache(settings["repo_id"], "model.safetensors", revision=settings["revision"])
    return isinstance(found, str) and os.path.isfile(found)


@pytest.mark.parametrize("term", ["contrastive", "lpips", "ubs"])
def test_imagenet_offline_fails_fast(term: str) -> None:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if term == "ubs":
        if _hf_cached(ENCODER):
            pytest.skip(f"ImageNet weights of {ENCODER} are cached")
    elif _cached(hub / "vgg16-397923af.pth"):
        pytest.skip("ImageNet VGG-16 weights are cached")
    start = time.monotonic()
    try:
        SAPNetLoss(_only(term), backbones="imagenet", seg_encoder=ENCODER)
    except BackboneUnavailableError as exc:
        message = str(exc)
    else:
        pytest.skip("the weights could be downloaded (online)")
    assert time.monotonic() - start < 15
    assert "--backbones random" in message and 'backbones="random"' in message
    if term == "ubs":
        assert ENCODER in message
    else:
        assert str(hub / "vgg16-397923af.pth") in message
    assert issubclass(BackboneUnavailableError, RuntimeError)


def test_vgg16_weight_file(tmp_path: Path, batch) -> None:
    features, _ = build_vgg16_features("random", seed=42)
    # torchvision's whole-model layout: "features.*" plus classifier entries (ignored)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    loss = SAPNetLoss(
        LossWeights(ssim=0.0, ubs=0.0, contrastive=1.0, lpips=1.0), backbones="imagenet", weight_files={"vgg16": path}
    )
    assert loss.backbones_info == {"vgg16": f"file:{path}", "lpips": f"file:{path}"}
    assert loss.contrastive is not None and loss.lpips is not None
    for k, v in loss.contrastive.vgg.features.state_dict().items():
        assert torch.equal(v, features.state_dict()[k]), k
    lpips_trunk = loss.lpips.metric.net.state_dict()
    for k, v in lpips_trunk.items():
        assert torch.equal(v, features.state_dict()[k.split(".", 1)[1]]), k
    derained, clean, rainy = batch
    total, _ = loss(derained, clean, rainy)
    assert torch.isfinite(total)


def test_weight_file_is_strict(tmp_path: Path) -> None:
    features, _ = build_vgg16_features("random", seed=1)
    state = features.state_dict()
    del state["28.bias"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(BackboneUnavailableError, match="do not fit"):
        PerceptualContrastiveLoss(weight_file=path)
    with pytest.raises(BackboneUnavailableError, match="does not exist"):
        PerceptualContrastiveLoss(weight_file=tmp_path / "missing.pth")


def test_segmentation_encoder_weight_file(tmp_path: Path) -> None:
    source_net, _ = build_segmentation_network("FPN", ENCODER, mode="random", seed=5)
    path = tmp_path / "encoder.pth"
    torch.save(source_net.encoder.state_dict(), path)
    loss = UBSLoss("FPN", ENCODER, weight_file=path, seed=0)
    assert loss.backbone_source == f"file:{path}"
    for k, v in loss.network.encoder.state_dict().items():
        assert torch.equal(v, source_net.encoder.state_dict()[k]), k


def test_focal_loss_reduces_to_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 4, generator=g)
    target = torch.randint(0, 5, (2, 4, 4), generator=g)
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0), torch.nn.functional.cross_entropy(logits, target))
    assert focal_loss(logits, target, gamma=2.0) < focal_loss(logits, target, gamma=0.0)


def test_ubs_handles_sizes_not_divisible_by_32(loss: SAPNetLoss) -> None:
    assert loss.ubs is not None
    x = torch.rand(1, 3, 50, 70, requires_grad=True)
    value = loss.ubs(x)
    value.backward()
    assert torch.isfinite(value) and x.grad is not None and x.grad.shape == x.shape


def test_standalone_modules() -> None:
    assert SSIMLoss()(torch.ones(1, 3, 16, 16), torch.ones(1, 3, 16, 16)).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.warns(RandomBackboneWarning):
        lp = LPIPSLoss("vgg", backbone="random")
    assert lp.backbone_source == "random"
    lp.train()
    assert not lp.metric.training
    with pytest.raises(ValueError, match="shape"):
        ssim_loss(torch.ones(1, 3, 16, 16), torch.ones(1, 3, 16, 17))
