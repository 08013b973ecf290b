"""``sapnet derain``: derain image files, folders and glob patterns into lossless PNGs."""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

import sapnet
from sapnet.cli.arguments import non_negative_int, positive_int, tile_size
from sapnet.data import IMAGE_EXTENSIONS, ImageReadError, read_image_with_meta, write_image
from sapnet.data.listing import list_images, natural_sort_key
from sapnet.deploy import BACKENDS, import_onnx, import_onnxruntime, is_onnx_file, onnx_derainer
from sapnet.inference import (
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_TILE,
    DEFAULT_TILE_OVERLAP,
    activation_bytes,
    choose_tile,
    network_width,
)
from sapnet.models import DEFAULT_MODEL, CheckpointError, DerainNet, load_model

__all__ = ["Job", "Source", "add_parser", "expand_inputs", "load_cli_model", "one_line", "plan_jobs", "run"]

_FileId = tuple[int, int]


@dataclass(frozen=True)
class Source:
    """An input file, and the folder under OUTDIR that its output goes to: ``Path()`` (OUTDIR itself), or with
    ``--recursive`` the file's sub-folder within the folder that was given."""

    path: Path
    subfolder: Path = Path()


@dataclass
class Job:
    """One image to derain: ``source`` is written to ``output``; ``error`` set means it must not be."""

    source: Path
    output: Path
    error: str | None = None


def _gibibytes(text: str) -> int:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return int(value * 2**30)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "derain",
        help="derain images (files, folders, glob patterns) into lossless PNGs",
        description="Derain image files, folders and glob patterns into OUTDIR/<input name>.png (lossless). "
        "Inputs are never overwritten; existing outputs are skipped unless --overwrite. "
        "Exit status: 0 all done, 1 some images failed, 2 usage or checkpoint error, or an output folder that "
        "cannot be created or written (checked before any image is read).",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image file, folder (its image files; with --recursive those of its sub-folders too) or quoted glob "
        "pattern (e.g. 'rain/*.jpg')",
    )
    p.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="also derain the images in the sub-folders of folder inputs, mirroring the sub-folders in OUTDIR "
        "(the output folder itself is never searched)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUTDIR",
        help="output folder; each image is written as OUTDIR/<input name>.png, as 16-bit PNG for 16-bit inputs, "
        "with the input's ICC colour profile and EXIF (orientation applied)",
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument(
        "--model",
        metavar="NAME|PATH",
        help="published weights by registry name (`sapnet models --pretrained` lists them; fetched and cached on "
        f"first use), a checkpoint file / save_pretrained folder, or with --backend onnxruntime an .onnx file "
        f"from `sapnet export` (default: {DEFAULT_MODEL})",
    )
    weights.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="any checkpoint file: sapnet's format or a public SAPNet / PReNet-family .pth",
    )
    p.add_argument(
        "--weights-dir",
        type=Path,
        metavar="DIR",
        help="offline mirror folder searched (recursively, by SHA-256) for published weights before the cache "
        "and the download (default: $SAPNET_WEIGHTS_DIR)",
    )
    p.add_argument(
        "--tile",
        type=tile_size,
        default=None,
        metavar="N|auto",
        help="process images in overlapping N x N tiles to bound memory; 0: whole images; auto (default): each "
        "image whole when its estimated activation memory fits --memory-budget, else in "
        f"{DEFAULT_TILE} x {DEFAULT_TILE} tiles (the rule of sapnet.derain and sapnet evaluate)",
    )
    p.add_argument(
        "--memory-budget",
        type=_gibibytes,
        default=DEFAULT_MEMORY_BUDGET,
        metavar="GIB",
        help=f"activation memory for --tile auto, in GiB (default: {DEFAULT_MEMORY_BUDGET / 2**30:g}: whole "
        "images up to about 2.7 megapixels with a 32-channel network)",
    )
    p.add_argument(
        "--tile-overlap",
        type=non_negative_int,
        default=DEFAULT_TILE_OVERLAP,
        metavar="N",
        help=f"pixels shared by neighbouring tiles (default: {DEFAULT_TILE_OVERLAP})",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        metavar="N",
        help="tiles per forward pass (images are processed one at a time; default: 1)",
    )
    p.add_argument(
        "--dtype",
        choices=list(_DTYPES),
        default="float32",
        help="precision of the network: bfloat16 / float16 run under autocast (default: float32)",
    )
    p.add_argument("--device", default="cpu", help="where the network runs, e.g. cpu, cuda, cuda:1 (default: cpu)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="torch (default) or onnxruntime: the network exported to ONNX once and run by ONNX Runtime "
        "(pip install 'sapnet[deploy]'; float32 only)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of skipping them")
    p.set_defaults(run=run)
    return p


def _file_id(path: Path) -> _FileId | None:
    """(device, inode) of the file ``path`` points to, or ``None`` if there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def expand_inputs(
    inputs: Sequence[str], *, recursive: bool = False, exclude: Path | None = None
) -> tuple[list[Source], list[str]]:
    """The files named by ``inputs`` in order, each once, and an error message for each input naming none.

    An input is an existing file (taken whatever its extension), a folder (its image files as listed by
    :func:`sapnet.data.listing.list_images`: natural order, hidden files skipped; with ``recursive`` those
    of its sub-folders too, each keeping its sub-folder) or a glob pattern (``**`` recursive) whose matches
    are taken as if each had been given. Files inside ``exclude`` (the output folder) are left out of folders
    searched recursively, so that a second run does not derain the outputs of the first.
    """
    sources: list[Source] = []
    errors: list[str] = []
    seen: set[_FileId] = set()
    skip = exclude.resolve() if exclude is not None else None

    def add(path: Path, subfolder: Path = Path()) -> None:
        fid = _file_id(path)
        if fid is None or fid not in seen:
            sources.append(Source(path, subfolder))
        if fid is not None:
            seen.add(fid)

    def add_folder(folder: Path) -> int:
        found = list_images(folder, recursive=recursive)
        if recursive and skip is not None:
            found = [f for f in found if not f.resolve().is_relative_to(skip)]
        for f in found:
            add(f, f.parent.relative_to(folder))
        return len(found)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            if not add_folder(path):
                where = "or its sub-folders " if recursive else ""
                extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
                errors.append(f"{item}: folder {where}has no image files ({extensions})")
        elif path.exists() or not glob.has_magic(item):
            add(path)  # a missing file is reported when it is read
        else:
            matches = sorted(glob.glob(item, recursive=True), key=natural_sort_key)
            if not matches:
                errors.append(f"{item}: no files match this pattern")
            for m in matches:
                if Path(m).is_dir():
                    add_folder(Path(m))
                else:
                    add(Path(m))
    return sources, errors


def plan_jobs(sources: Sequence[Source], outdir: Path) -> list[Job]:
    """Pair each input with ``outdir/<subfolder>/<stem>.png``, marking as errors the outputs that would
    overwrite an input and those already claimed by an earlier input with the same output name (compared
    case-insensitively, for case-insensitive file systems)."""
    input_ids = {fid for src in sources if (fid := _file_id(src.path)) is not None}
    claimed: dict[str, Path] = {}
    jobs = []
    for src in sources:
        out = outdir / src.subfolder / f"{src.path.stem}.png"
        job = Job(src.path, out)
        key = (src.subfolder / src.path.stem).as_posix().casefold()
        if key in claimed:
            job.error = f"same output name as {claimed[key]} ({out}); rename one or derain it separately"
        elif _file_id(out) in input_ids:
            job.error = f"output {out} is an input file and is never overwritten; choose another -o folder"
        claimed.setdefault(key, src.path)
        jobs.append(job)
    return jobs


def load_cli_model(
    target: str | os.PathLike[str], device_name: str, weights_dir: str | os.PathLike[str] | None = None
) -> tuple[DerainNet, torch.device] | str:
    """``sapnet.load_model(target)`` on ``device_name`` for a command, or the one-line error to print: an unknown
    name, an unusable checkpoint, or a device that cannot be used."""
    try:
        model = load_model(target, weights_dir=weights_dir)
        device = torch.device(device_name)
        return model.to(device), device
    except KeyError as e:
        return str(e.args[0])
    except CheckpointError as e:
        return one_line(e)
    except (RuntimeError, AssertionError) as e:  # bad or unavailable device (AssertionError: no CUDA build)
        return f"cannot use device {device_name!r}: {one_line(e)}"


def _output_folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot receive the outputs, or ``None`` if it can: a probe file is written (and removed) in
    it or, when it does not exist yet, in its nearest existing parent, where it would be created; nothing is
    left behind."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path.cwd())
    if not existing.is_dir():
        if existing == folder:
            return f"output folder {folder} exists and is not a folder"
        return f"cannot create output folder {folder}: {existing} is not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".sapnet-write-test.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        action = "write to" if existing == folder else f"create (in {existing})"
        return f"cannot {action} output folder {folder}: {e.strerror or one_line(e)}"
    return None


def one_line(e: BaseException) -> str:
    """An exception's message on one line (its type name if it has none), for error messages."""
    return " ".join(str(e).split()) or type(e).__name__


def _load_model(
    target: str | os.PathLike[str], args: argparse.Namespace
) -> tuple[DerainNet | Path, torch.device, int] | str:
    """(model, device, feature channels) for ``run``, or the one-line error to print; with ``--backend
    onnxruntime`` an ``.onnx`` file stays a path (its session is built here, so that problems show up front)."""
    if args.backend == "onnxruntime":
        if args.dtype != "float32":
            return f"--backend onnxruntime runs float32, not --dtype {args.dtype}"
        try:
            import_onnxruntime()
            if is_onnx_file(target):
                derainer = onnx_derainer(target, device=args.device)
                return Path(target), torch.device("cpu"), derainer.channels
            import_onnx("--backend onnxruntime (it exports the network to ONNX)")
        except (ImportError, OSError, ValueError) as e:
            return one_line(e)
        except Exception as e:  # onnxruntime's own exception types for a file that is not a model
            return f"{target} is not a loadable ONNX model: {one_line(e)}"
    elif is_onnx_file(target):
        return f"{target} is an ONNX model: run it with --backend onnxruntime"
    loaded = load_cli_model(target, args.device, args.weights_dir)
    if isinstance(loaded, str):
        return loaded
    model, device = loaded
    return model, device, network_width(model)


def run(args: argparse.Namespace) -> int:
    """Derain ``args.inputs`` into ``args.output``; see the module docstring and ``sapnet derain --help``."""

    def say(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    largest_tile = DEFAULT_TILE if args.tile is None else args.tile
    if largest_tile and args.tile_overlap >= largest_tile:
        say(f"error: --tile-overlap ({args.tile_overlap}) must be smaller than --tile ({largest_tile})")
        return 2
    problem = _output_folder_problem(args.output)
    if problem is not None:
        say(f"error: {problem}")
        return 2
    target = args.checkpoint if args.checkpoint is not None else args.model or DEFAULT_MODEL
    loaded = _load_model(target, args)
    if isinstance(loaded, str):
        say(f"error: {loaded}")
        return 2
    model, device, width = loaded

    sources, input_errors = expand_inputs(args.inputs, recursive=args.recursive, exclude=args.output)
    for message in input_errors:
        say(f"error: {message}")
    done = skipped = 0
    failed = len(input_errors)
    ways: dict[str, int] = {}  # "whole" / "in NxN tiles" -> images derained that way
    jobs = plan_jobs(sources, args.output)
    for job in tqdm(jobs, desc="derain", unit="image", file=sys.stderr, disable=None):
        if job.error is not None:
            say(f"error: {job.source}: {job.error}")
            failed += 1
            continue
        if job.output.exists() and not args.overwrite:
            say(f"skip: {job.source}: {job.output} exists (--overwrite replaces it)")
            skipped += 1
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                image, meta = read_image_with_meta(job.source)
            for note in caught:
                say(f"warning: {note.message}")
            h, w = image.shape[-2:]
            tile = args.tile if args.tile is not None else choose_tile(h, w, width, args.memory_budget)
            if tile and args.tile is None:
                need = activation_bytes(h, w, width) / 2**30
                say(
                    f"note: {job.source}: {w}x{h} would need about {need:.1f} GiB whole, over the "
                    f"--memory-budget of {args.memory_budget / 2**30:g} GiB: derained in {tile}x{tile} tiles"
                )
            result = sapnet.derain(
                image,
                model,
                device=device,
                tile=tile,
                tile_overlap=args.tile_overlap,
                batch_size=args.batch_size,
                dtype=_DTYPES[args.dtype],
                progress=None,
                backend=args.backend,
            )
            write_image(result, job.output, meta)
        except ImageReadError as e:
            say(f"error: {one_line(e)}")
            failed += 1
        except (
            OSError,
            RuntimeError,
            Image.DecompressionBombError,
        ) as e:  # write failure, out of memory, ...
            say(f"error: {job.source}: {type(e).__name__}: {one_line(e)}")
            failed += 1
        else:
            done += 1
            way = f"in {tile}x{tile} tiles" if tile else "whole"
            ways[way] = ways.get(way, 0) + 1
    how = f" ({', '.join(f'{n} {way}' for way, n in ways.items())})" if ways else ""
    print(f"derained {done}, skipped {skipped} existing, failed {failed}{how}")
    return 1 if failed else 0
