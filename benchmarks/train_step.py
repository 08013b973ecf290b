"""Speed of one SAPNet training step on the CPU, per combination of loss terms, against a naive step.

Batch of 12 RGB patches of 100x100 (the papers' setting), SAPNet (6 stages), Adam (lr 1e-3) on the derain
network's parameters, float32. The loss networks (VGG-16 of the contrastive term, the VGG-16 LPIPS trunk, the
FPN / ResNet-101 segmentation network of UBS) are RANDOMLY initialised (``backbones="random"``: no pretrained
weights are needed; the speed does not depend on the weights). Their warnings are silenced here.

"ours" is :meth:`sapnet.training.Trainer.train_step` itself: a Trainer built from a config (``backbones="random"``,
the demo patches as the batch), the derain network and its inputs in channels_last, the loss networks built
once and frozen (no parameter gradients, eval mode), the contrastive clean / rainy features computed in one
batch under ``torch.no_grad``, one VGG-16 pass shared by the contrastive and LPIPS terms (their VGG-16 weights
are identical here), the UBS pseudo-labels from the detached logits of its single forward.

The naive step does what a straightforward port of the reference training code does, for the same terms:

* the derain network runs eagerly in NCHW (contiguous inputs), written the way the reference runs it: the
  recurrent state starts as zero tensors and every LSTM gate is computed from ``cat(z, h)`` (also at stage 1),
  the channel attention uses ``adaptive_avg_pool2d``, all activations out of place;
* SSIM: ``1 - pytorch_msssim.ssim`` (the same function as ours);
* UBS: at EVERY step a new ``smp.FPN(encoder_name=seg_encoder, classes=21, encoder_weights=None)`` is
  constructed (default random encoder initialisation, decoder / head convolutions re-drawn from N(0, 0.01²)),
  put in eval mode; its parameters keep ``requires_grad=True`` (nobody freezes a throw-away network), so the
  backward pass also computes its weight gradients; the input is ImageNet-normalised and edge-padded to a
  multiple of 32, the pseudo-labels are the arg-max of the detached logits, the focal loss (gamma 2) is taken;
* contrastive: one frozen VGG-16 (built once, parameters not requiring grad), run three times (derained,
  clean, rainy, batch 12 each) with autograd enabled; the clean / rainy features are ``.detach()``-ed afterwards
  (the AECR-Net ``ContrastLoss`` style); L1 ratio with weights 1/32, 1/16, 1/8, 1/4;
* LPIPS: an ``lpips.LPIPS`` module (VGG trunk, built once, frozen as the package does by default) called with
  ``normalize=True`` on derained / clean, the batch mean back-propagated (like ours; the reference turns it
  into a Python float, which would make it gradient-free and not comparable);
* ``optimizer.zero_grad(); loss.backward(); optimizer.step()``.

Both steps start from the same weights and see the same batch. Times are ``time.perf_counter`` around the whole
step, the median over ``--steps`` steps after ``--warmup`` warm-up steps.

    python benchmarks/train_step.py [--batch 12] [--patch 100] [--steps 3] [--warmup 1] [--threads 2]
                                    [--seg-encoder resnet101] [--quick]

``--quick`` times only "SSIM only" and "all four" with 2 steps. With ResNet-101 a step takes tens of seconds on
a 2-core CPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim as ms_ssim
from torch import nn

from sapnet.hub import IMAGENET_MEAN, IMAGENET_STD
from sapnet.losses.backbones import build_vgg16_features
from sapnet.losses.contrastive import DEFAULT_LAYER_WEIGHTS, VGG_LAYERS
from sapnet.losses.lpips import build_lpips
from sapnet.models import DerainNet
from sapnet.training.config import TrainConfig
from sapnet.training.trainer import Trainer

TERMS = ("ssim", "ubs", "contrastive", "lpips")
PAPER_WEIGHTS = {"ssim": 1.0, "ubs": 0.1, "contrastive": 0.1, "lpips": 0.1}
COMBINATIONS: dict[str, tuple[str, ...]] = {
    "SSIM only": ("ssim",),
    "SSIM + UBS": ("ssim", "ubs"),
    "SSIM + contrastive": ("ssim", "contrastive"),
    "SSIM + LPIPS": ("ssim", "lpips"),
    "all four": TERMS,
}
QUICK = ("SSIM only", "all four")


# --------------------------------------------------------------------------------------------- naive step


def naive_segmentation_net(encoder: str) -> nn.Module:
    """A fresh FPN with a random encoder and a N(0, 0.01²) head, as the reference builds inside every step."""
    import segmentation_models_pytorch as smp

    seg = smp.FPN(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=21)
    for part in (seg.decoder, seg.segmentation_head):
        for m in part.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return seg.eval()


def naive_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    return (-((1 - torch.exp(log_p)) ** gamma) * log_p).mean()


def naive_vgg_features(vgg: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    h, out = (x - mean) / std, []
    for i, layer in enumerate(vgg):
        h = layer(h)
        if i in VGG_LAYERS.values():
            out.append(h)
    return out


def baseline_forward(model: DerainNet, x: torch.Tensor) -> torch.Tensor:
    """The network computed the plain way a port of the reference code runs it: NCHW, out-of-place ops, the
    recurrent state starting as zero tensors and every LSTM gate computed from ``cat(z, h)``."""
    x0, h, c = x, None, None
    cell = model.cell
    assert cell is not None and hasattr(cell, "forget_gate")
    for _ in range(model.config.stages):
        z = F.relu(model.input_conv(torch.cat((x0, x), 1)))
        if h is None:
            h, c = torch.zeros_like(z), torch.zeros_like(z)
        u = torch.cat((z, h), 1)
        i = torch.sigmoid(cell.input_gate(u))
        f = torch.sigmoid(cell.forget_gate(u))
        g = torch.tanh(cell.cell_gate(u))
        o = torch.sigmoid(cell.output_gate(u))
        c = f * c + i * g
        h = o * torch.tanh(c)
        z = h
        for block in model.blocks:
            r = z
            for conv, attn in ((block.conv1, block.attn1), (block.conv2, block.attn2)):
                r = conv(r)
                if not isinstance(attn, torch.nn.Identity):
                    s = F.adaptive_avg_pool2d(r, 1)
                    r = r * torch.sigmoid(attn.expand(F.relu(attn.reduce(s))) + attn.skip(s))
                r = F.relu(r)
            z = F.relu(r + z)
        x = model.output_conv(z) + x0
    return x


@dataclass
class NaiveStep:
    """The naive training step (see the module docstring) for a set of active terms."""

    net: DerainNet
    terms: tuple[str, ...]
    seg_encoder: str
    vgg: nn.Sequential | None = None
    lpips: nn.Module | None = None

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        if "contrastive" in self.terms:
            self.vgg = build_vgg16_features("random", seed=0)[0][: max(VGG_LAYERS.values()) + 1]
        if "lpips" in self.terms:
            self.lpips = build_lpips("vgg", backbone="random", seed=0)[0]

    def __call__(self, rainy: torch.Tensor, clean: torch.Tensor) -> float:
        out = baseline_forward(self.net, rainy)
        loss = PAPER_WEIGHTS["ssim"] * (1 - ms_ssim(out, clean, data_range=1.0, size_average=True))
        if "ubs" in self.terms:
            seg = naive_segmentation_net(self.seg_encoder)
            x = (out - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            h, w = x.shape[-2:]
            x = F.pad(x, (0, (-w) % 32, 0, (-h) % 32), mode="replicate")
            logits = seg(x)[..., :h, :w]
            loss = loss + PAPER_WEIGHTS["ubs"] * naive_focal(logits, logits.detach().argmax(1))
        if "contrastive" in self.terms:
            assert self.vgg is not None
            f_d = naive_vgg_features(self.vgg, out)
            f_c = [f.detach() for f in naive_vgg_features(self.vgg, clean)]
            f_r = [f.detach() for f in naive_vgg_features(self.vgg, rainy)]
            cl = sum(
                w * F.l1_loss(d, c) / (F.l1_loss(d, r) + 1e-7)
                for w, d, c, r in zip(DEFAULT_LAYER_WEIGHTS, f_d, f_c, f_r, strict=True)
            )
            loss = loss + PAPER_WEIGHTS["contrastive"] * cl
        if "lpips" in self.terms:
            assert self.lpips is not None
            loss = loss + PAPER_WEIGHTS["lpips"] * self.lpips(out, clean, normalize=True).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss)


# ----------------------------------------------------------------------------------------------- our step


def build_trainer(terms: tuple[str, ...], args: argparse.Namespace, out_dir: str) -> Trainer:
    cfg = TrainConfig()
    for term in TERMS:
        setattr(cfg.loss, term, PAPER_WEIGHTS[term] if term in terms else 0.0)
    cfg.loss.backbones = "random"
    cfg.loss.seg_encoder = args.seg_encoder
    cfg.data.batch_size, cfg.data.patch, cfg.data.workers = args.batch, args.patch, 0
    cfg.run.device, cfg.run.out, cfg.run.progress, cfg.run.seed = "cpu", out_dir, False, 0
    return Trainer(cfg, log=lambda _: None)


def time_steps(step: Callable[[], object], warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--patch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per path (default 3, --quick 2)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seg-encoder", default="resnet101")
    parser.add_argument("--quick", action="store_true", help="only 'SSIM only' and 'all four', 2 steps")
    parser.add_argument(
        "--only", nargs="+", choices=list(COMBINATIONS), default=None, help="time only these combinations"
    )
    args = parser.parse_args()
    steps = args.steps if args.steps is not None else (2 if args.quick else 3)
    torch.set_num_threads(args.threads)
    names = args.only or (list(QUICK) if args.quick else list(COMBINATIONS))

    print(
        f"SAPNet training step: batch {args.batch} x 3 x {args.patch} x {args.patch}, float32, CPU, "
        f"{args.threads} threads, Adam; median of {steps} steps after {args.warmup} warm-up"
    )
    print(
        f"loss networks RANDOMLY initialised (backbones='random'): VGG-16, LPIPS VGG-16 trunk, "
        f"FPN/{args.seg_encoder} (21 classes)"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RandomBackboneWarning, smp / torchvision notices
        for name in names:
            terms = COMBINATIONS[name]
            trainer = build_trainer(terms, args, tmp)
            rainy, clean = next(iter(trainer.loader))
            naive_net = DerainNet(trainer.net.config)
            naive_net.load_state_dict(trainer.net.state_dict())
            naive_net.train()
            naive = NaiveStep(naive_net, terms, args.seg_encoder)
            trainer.model.train()
            t_naive = time_steps(partial(naive, rainy, clean), args.warmup, steps)
            t_ours = time_steps(partial(trainer.train_step, rainy, clean), args.warmup, steps)
            base, fast = statistics.median(t_naive), statistics.median(t_ours)
            rows.append((name, base, fast))
            print(f"  {name}: naive {[round(t, 2) for t in t_naive]} s, ours {[round(t, 2) for t in t_ours]} s")

    print()
    print("| combination | naive s/step | ours s/step | ours images/s | speed-up |")
    print("|---|---|---|---|---|")
    for name, base, fast in rows:
        print(f"| {name} | {base:.2f} | {fast:.2f} | {args.batch / fast:.2f} | {base / fast:.2f}x |")
    all_four = [r for r in rows if r[0] == "all four"]
    if all_four:
        _, base, fast = all_four[0]
        verdict = "meets" if base / fast >= 2 else "misses"
        print(f"\nall four terms: {base / fast:.2f}x the naive step ({verdict} the 2x target)")


if __name__ == "__main__":
    main()
