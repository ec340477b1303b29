"""The ``sknmf`` command: compress, decompress, info and demo.

Each subcommand is one ``_Command`` (name, help, how to add its arguments, how
to run it) in ``COMMANDS``; a new subcommand is one more entry.
Errors the user can fix end in one line on stderr and a non-zero exit code:
2 for bad options (argparse's convention), 1 for everything else.

The command imports nothing outside ``sknmf`` (and its dependencies) and never
touches ``sys.path``: it works the same from a wheel as from a checkout. The
benchmark suite is not part of the package; run it from a clone with
``python benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["main"]


class CLIError(Exception):
    """An error reported to the user as one line, exit code 1."""


@dataclass(frozen=True)
class _Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- #
# Image files
# --------------------------------------------------------------------------- #


def _read_image(path: str) -> np.ndarray:
    """Read any image Pillow opens as uint8 gray, RGB or RGBA."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise CLIError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise CLIError(
                    f"{path}: {mode} images are not 8-bit; sknmf compresses 8-bit "
                    "gray, RGB and RGBA images"
                )
            has_alpha = "A" in mode or "transparency" in im.info
            if mode in ("L", "RGB", "RGBA"):
                converted = im
            elif mode == "1":
                converted = im.convert("L")
            else:
                converted = im.convert("RGBA" if has_alpha else "RGB")
            return np.asarray(converted, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CLIError(f"{path}: cannot read image ({exc})") from exc


def _write_image(path: str, image: np.ndarray) -> None:
    from PIL import Image

    from sknmf.image._codec import write_atomically

    # The format comes from the extension, as Pillow's own save does; the
    # bytes go through a temporary file, which has no meaningful extension.
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise CLIError(
            f"{path}: cannot write this image format (unknown extension); use an "
            "extension Pillow knows, e.g. .png"
        )
    try:
        write_atomically(path, lambda f: Image.fromarray(image).save(f, format=fmt))
    except (ValueError, KeyError) as exc:
        raise CLIError(
            f"{path}: cannot write this image format ({exc}); use an extension "
            "Pillow knows, e.g. .png"
        ) from exc
    except OSError as exc:
        raise CLIError(f"{path}: cannot write ({exc.strerror or exc})") from exc


def _read_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise CLIError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CLIError(f"{path}: cannot read ({exc})") from exc


# --------------------------------------------------------------------------- #
# compress / decompress / info
# --------------------------------------------------------------------------- #


def _components(text: str):
    """``"32"`` -> 32, ``"64,48,32"`` -> (64, 48, 32) (deep NMF).

    The ranks are checked by :func:`sknmf.decomposition.check_ranks`, the one
    rank check of the package; its error becomes an option error (exit 2).
    """
    # Lazy like every other sknmf import here: `sknmf --help` stays cheap if
    # the package's own imports ever become lazy.
    from sknmf.decomposition import check_ranks

    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an int or a comma-separated list of ints"
        ) from None
    try:
        ranks = check_ranks(values, "components")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return ranks[0] if len(ranks) == 1 else ranks


def _int_in(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an int") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in [{low}, {high}]")
        return value

    return parse


def _add_compress_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="image to compress (any format Pillow reads)")
    p.add_argument("output", help="compressed file to write (.sknmf)")
    p.add_argument(
        "-q",
        "--quality",
        type=_int_in(1, 100),
        default=75,
        help="1-100, higher is larger and better (default: 75)",
    )
    p.add_argument(
        "-k",
        "--components",
        type=_components,
        default=None,
        help="components of the luma plane; a list like 64,48,32 fits a deep NMF",
    )
    p.add_argument(
        "--chroma-components",
        type=_components,
        default=None,
        help="components of the chroma planes",
    )
    p.add_argument(
        "-p",
        "--patch",
        type=_int_in(1, 64),
        default=None,
        help="patch side in pixels (default: 8)",
    )
    p.add_argument(
        "-b",
        "--bits",
        type=_int_in(2, 16),
        default=None,
        help="bits per quantised code",
    )
    p.add_argument(
        "--color",
        choices=("ycbcr", "rgb"),
        default="ycbcr",
        help="colour transform of RGB images (default: ycbcr)",
    )
    p.add_argument(
        "--subsampling",
        type=int,
        choices=(1, 2),
        default=2,
        help="chroma subsampling per side (default: 2, as JPEG's 4:2:0)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _check_distinct(source: str, target: str) -> None:
    """Refuse to write over the file being read (it would be destroyed)."""
    try:
        same = os.path.samefile(source, target)
    except OSError:  # the target does not exist yet (or the source cannot be read)
        same = os.path.abspath(source) == os.path.abspath(target)
    if same:
        raise CLIError(
            f"{target}: is the input file; choose another output path (writing it "
            "would destroy the input)"
        )


def _run_compress(args: argparse.Namespace) -> int:
    from sknmf.image import bits_per_pixel, save

    _check_distinct(args.input, args.output)
    image = _read_image(args.input)
    start = time.perf_counter()
    try:
        n_bytes = save(
            args.output,
            image,
            quality=args.quality,
            n_components=args.components,
            chroma_components=args.chroma_components,
            patch_size=args.patch,
            bits=args.bits,
            color=args.color,
            subsampling=args.subsampling,
            random_state=args.seed,
        )
    except (ValueError, TypeError) as exc:
        raise CLIError(f"{args.input}: {exc}") from exc
    except OSError as exc:
        raise CLIError(f"{args.output}: cannot write ({exc.strerror or exc})") from exc
    seconds = time.perf_counter() - start
    print(
        f"{args.output}: {n_bytes} bytes, "
        f"{bits_per_pixel(n_bytes, image.shape):.3f} bpp, {seconds:.2f} s"
    )
    return 0


def _add_decompress_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="compressed file (.sknmf)")
    p.add_argument("output", help="image to write (format from the extension)")


def _run_decompress(args: argparse.Namespace) -> int:
    from sknmf.image import decompress

    _check_distinct(args.input, args.output)
    data = _read_bytes(args.input)
    try:
        image = decompress(data)
    except ValueError as exc:
        raise CLIError(f"{args.input}: {exc}") from exc
    _write_image(args.output, image)
    print(f"{args.output}: {'x'.join(str(s) for s in image.shape)} uint8")
    return 0


def _add_info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="compressed file (.sknmf)")


def _run_info(args: argparse.Namespace) -> int:
    from sknmf.image import read_header

    data = _read_bytes(args.file)
    try:
        header = read_header(data)
    except ValueError as exc:
        raise CLIError(f"{args.file}: {exc}") from exc
    shape = "x".join(str(s) for s in header["shape"])
    print(f"file        {args.file}")
    print(f"format      sknmf image, version {header['version']}")
    print(f"image       {shape} uint8, colour {header['color']}")
    print(f"size        {header['n_bytes']} bytes, {header['bits_per_pixel']:.3f} bpp")
    names = _plane_names(header)
    for name, plane in zip(names, header["planes"]):
        if plane["kind"] == "lossless":
            print(f"plane {name:<5} lossless")
            continue
        layers = plane["layers"]
        deep = f", layers {','.join(map(str, layers))}" if len(layers) > 1 else ""
        ph, pw = plane["patch_size"]
        print(
            f"plane {name:<5} NMF {plane['n_components']} components{deep}, "
            f"{ph}x{pw} patches, subsampling {plane['subsampling']}, "
            f"{plane['code_bits']}-bit codes, step {plane['step']:.4g}"
        )
    return 0


def _plane_names(header: dict) -> list[str]:
    return {
        "gray": ["gray"],
        "rgb": ["R", "G", "B", "alpha"],
        "ycbcr": ["Y", "Cb", "Cr", "alpha"],
    }[header["color"]]


# --------------------------------------------------------------------------- #
# demo
# --------------------------------------------------------------------------- #


def _add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        default="sknmf-demo",
        help="folder for the PNG figures (default: ./sknmf-demo)",
    )


def _run_demo(args: argparse.Namespace) -> int:
    from sknmf.image import _demo

    return _demo.run(args.out, log=lambda msg: print(msg, file=sys.stderr, flush=True))


COMMANDS: list[_Command] = [
    _Command(
        "compress",
        "compress an image into an .sknmf file",
        _add_compress_arguments,
        _run_compress,
    ),
    _Command(
        "decompress",
        "decode an .sknmf file into an image",
        _add_decompress_arguments,
        _run_decompress,
    ),
    _Command(
        "info",
        "show the header and rate of an .sknmf file",
        _add_info_arguments,
        _run_info,
    ),
    _Command(
        "demo",
        "compress the bundled photos with (deep) NMF and JPEG, "
        "print a table and write figures",
        _add_demo_arguments,
        _run_demo,
    ),
]


def _parser() -> argparse.ArgumentParser:
    from sknmf import __version__

    parser = argparse.ArgumentParser(
        prog="sknmf",
        description="Deep NMF image compression and its demo.",
        epilog="Benchmarks: python benchmarks/run.py in a source checkout.",
    )
    parser.add_argument("--version", action="version", version=f"sknmf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``sknmf`` command line; return the exit code.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    code : int
        0 on success, 1 on an error, 2 on bad options.

    Examples
    --------
    >>> from sknmf.cli import main
    >>> main(["info", "no-such-file.sknmf"])
    1
    """
    args = _parser().parse_args(argv)
    try:
        return args._run(args)
    except CLIError as exc:
        print(f"sknmf {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sknmf {args.command}: interrupted", file=sys.stderr)
        return 130
