"""Derain methods for the benchmarks: what a method spec names, and each method's output for a rainy image.

A method is a network (run on each rainy image, its output quantised as if saved to an 8-bit PNG, as the
literature's test scripts do) or a folder of another method's precomputed outputs (read as they are). Both the
image-quality evaluation (:func:`sapnet.evaluation.evaluate`) and the downstream benchmark
(:func:`sapnet.downstream.evaluate_downstream`) get their derained images from :class:`MethodRunner`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sapnet.data import IMAGE_EXTENSIONS, ImageReadError, read_image
from sapnet.data.image import format_size, quantize_8bit
from sapnet.inference import derain
from sapnet.models import CheckpointError, load_model

__all__ = ["Method", "MethodRunner", "resolve_method", "resolve_methods"]


@dataclass
class Method:
    """A derain method: a network (run on each rainy image) or a folder of its precomputed outputs."""

    name: str
    model: torch.nn.Module | None = None
    outputs_dir: Path | None = None

    def output_for(self, dataset: str, name: str, rainy_path: Path) -> Path:
        """The precomputed output for an image: ``DIR/<dataset>/`` (if it exists) or ``DIR/``, matched by the pair
        name or the rainy file's stem, any image extension."""
        assert self.outputs_dir is not None
        folder = self.outputs_dir / dataset if (self.outputs_dir / dataset).is_dir() else self.outputs_dir
        for stem in dict.fromkeys((name, rainy_path.stem)):
            for ext in sorted(IMAGE_EXTENSIONS):
                for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
                    if candidate.is_file():
                        return candidate
        raise ImageReadError(f"{folder}: no output named {name!r} or {rainy_path.stem!r} for {rainy_path.name}")


def resolve_method(spec: str) -> Method:
    """``[LABEL=]SPEC`` -> :class:`Method`. SPEC is a folder of precomputed outputs, or anything
    :func:`sapnet.load_model` reads: a registry name (``prenet.rain100h``), a checkpoint file (ours or a public
    SAPNet / PReNet file) or a ``save_pretrained`` folder (one holding ``config.json``).

    Raises:
        CheckpointError / KeyError: with a message naming what is wrong (``KeyError``: the closest valid names).
    """
    label, _, target = spec.rpartition("=")
    path = Path(target).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        return Method(label or path.name, outputs_dir=path)
    model = load_model(target)
    return Method(label or (path.stem if path.exists() else target), model=model)


def resolve_methods(methods: Sequence[str | Method]) -> tuple[list[Method], list[tuple[str, str]]]:
    """:func:`resolve_method` for each spec (:class:`Method` objects pass through): (the methods that load,
    ``(spec, reason)`` for each one that does not)."""
    resolved: list[Method] = []
    failed: list[tuple[str, str]] = []
    for m in methods:
        try:
            resolved.append(m if isinstance(m, Method) else resolve_method(m))
        except (CheckpointError, FileNotFoundError, KeyError, OSError) as e:
            failed.append((str(m), str(e.args[0]) if isinstance(e, KeyError) else str(e)))
    return resolved, failed


@dataclass
class MethodRunner:
    """Derained images of rainy inputs, method by method, with the time the networks took.

    Attributes:
        device, tile: passed to :func:`sapnet.derain`.
        seconds: network time so far, by method name (folder methods take none).
    """

    device: torch.device | str | None = None
    tile: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def __call__(self, method: Method, dataset: str, name: str, rainy_path: Path, rainy: torch.Tensor) -> torch.Tensor:
        """``method``'s output for the rainy image ``rainy`` (float (3, H, W) in [0, 1], read from ``rainy_path``,
        named ``name`` in ``dataset``): float (3, H, W) on 8-bit levels (a network's output quantised with
        :func:`sapnet.data.image.quantize_8bit` with ``"floor"``; a saved output read as it is).

        Raises:
            ImageReadError: no saved output, an unreadable one, or an output of another size than the input.
            RuntimeError: the network failed (e.g. out of memory).
        """
        if method.model is None:
            out = read_image(method.output_for(dataset, name, rainy_path))
        else:
            t0 = time.perf_counter()
            # Truncated: the evaluation protocol saves a network's output as np.uint8(255 * out) does.
            out = quantize_8bit(derain(rainy, method.model, device=self.device, tile=self.tile), "floor")
            self.seconds[method.name] = self.seconds.get(method.name, 0.0) + time.perf_counter() - t0
        if out.shape != rainy.shape:
            raise ImageReadError(f"output is {format_size(out)}, the input {format_size(rainy)}")
        return out

    @property
    def total_seconds(self) -> float:
        """Network time of all methods so far."""
        return sum(self.seconds.values())
