"""The ``sknmf`` command: compress, decompress, info and demo.

Each subcommand is one ``_Command`` (name, help, how to add its arguments, how
to run it) in ``COMMANDS``; a new subcommand is one more entry.
Errors the user can fix end in one line on stderr and a non-zero exit code:
2 for bad options (argparse's convention), 1 for everything else.

The command imports nothing outside ``sknmf`` (and its dependencies) and never
touches ``sys.path``: it works the same from a wheel as from a checkout. The
benchmark suite is not part of the package; run it from a clone with
``python benchmarks/run.py``.

Start-up is cheap: ``sknmf --help`` and ``--version`` import neither numpy nor
torch; each subcommand imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["main"]

# Pillow's default ``Image.MAX_IMAGE_PIXELS`` (about 9459 x 9459), counted as Pillow
# counts (width x height) and read from the header before any pixel is decoded.
# Pillow only warns between this and twice it; the command refuses above it.
MAX_PIXELS = 89_478_485

# Formats whose writer re-encodes lossy by default; refused before decoding unless
# --allow-lossy. Any other format is checked by reading its bytes back.
_LOSSY_FORMATS = frozenset({"JPEG", "MPO", "WEBP"})


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


def _check_input_file(path: str) -> None:
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory; give a file")
    if not os.path.isfile(path):
        raise CLIError(f"{path}: no such file")


def _check_pixels(path: str, shape, max_pixels: int) -> None:
    """Refuse an image above the pixel budget (``max_pixels=0``: no budget)."""
    n_pixels = int(shape[0]) * int(shape[1])
    if max_pixels and n_pixels > max_pixels:
        raise CLIError(
            f"{path}: {shape[1]}x{shape[0]} is {n_pixels} pixels, above the budget "
            f"of {max_pixels} (--max-pixels; 0 lifts it)"
        )


def _read_image(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read any image Pillow opens as uint8 gray, RGB or RGBA.

    The size is checked from the header, before any pixel is decoded: a small
    file declaring a huge image is refused at once.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    _check_input_file(path)
    # The budget is ours (checked below); Pillow's own check, with its fixed
    # limit and a warning before the error, is off while the header is read.
    pillow_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            _check_pixels(path, im.size[::-1], max_pixels)
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
    except MemoryError:
        raise CLIError(f"{path}: not enough memory to decode this image") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def _image_format(path: str) -> str:
    """Pillow's format name for the extension of ``path``."""
    from PIL import Image

    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise CLIError(
            f"{path}: cannot write this image format (unknown extension); use an "
            "extension Pillow knows, e.g. .png"
        )
    return fmt


def _lossy_refusal(path: str, fmt: str, why: str) -> CLIError:
    return CLIError(
        f"{path}: {fmt} {why}; write .png (or .bmp, .tif) to keep the decoded "
        "image exact, or pass --allow-lossy"
    )


def _write_image(path: str, image: np.ndarray, *, allow_lossy: bool = False) -> None:
    """Write ``image`` atomically in the format of the extension.

    Unless ``allow_lossy``, the encoded bytes are read back and must give the
    same pixels: a format that would change them is refused, nothing written.
    """
    import io

    import numpy as np
    from PIL import Image

    from sknmf.image._codec import write_atomically

    fmt = _image_format(path)
    if fmt in _LOSSY_FORMATS and not allow_lossy:
        raise _lossy_refusal(path, fmt, "re-encodes the image lossy")
    pil = Image.fromarray(image)
    buf = io.BytesIO()
    try:
        pil.save(buf, format=fmt)
    except (ValueError, KeyError, OSError) as exc:
        raise CLIError(
            f"{path}: cannot write this image format ({exc}); use an extension "
            "Pillow knows, e.g. .png"
        ) from exc
    data = buf.getvalue()
    if not allow_lossy:
        try:
            with Image.open(io.BytesIO(data)) as back:
                same = np.array_equal(np.asarray(back.convert(pil.mode)), image)
        except Exception:  # a file Pillow cannot read back is not exact either
            same = False
        if not same:
            raise _lossy_refusal(path, fmt, "does not store this image exactly")
    try:
        write_atomically(path, lambda f: f.write(data))
    except OSError as exc:
        raise CLIError(f"{path}: cannot write ({exc.strerror or exc})") from exc


def _read_bytes(path: str) -> bytes:
    _check_input_file(path)
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
    # Imported here, not at the top: it imports torch, which `--help` must not.
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
    _add_max_pixels(p, "input image")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress on stderr (it is shown only when stderr is a terminal)",
    )


def _add_max_pixels(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--max-pixels",
        type=_int_in(0, 1 << 62),
        default=MAX_PIXELS,
        metavar="N",
        help=f"refuse an {what} of more than N pixels (width x height), checked "
        "from the header before decoding, as Pillow's MAX_IMAGE_PIXELS; "
        f"default: {MAX_PIXELS} (Pillow's default, about 9459x9459); 0: no limit",
    )


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


class _Progress:
    """The progress line of ``compress`` on stderr: planes done, the current
    plane's stage and iterations, the elapsed time (tqdm, a dependency of skorch).

    Shared, not copied, by the estimators that report to it (scikit-learn's
    ``clone`` and the estimator deep-copy their parameters).
    """

    def __init__(self, names: list[str], enabled: bool):
        import shutil

        from tqdm import tqdm

        size = shutil.get_terminal_size()
        self.names = names
        self.bar = tqdm(
            total=len(names),
            desc="compressing",
            unit="plane",
            file=sys.stderr,
            disable=not enabled,
            leave=False,
            # A terminal reporting a 0x0 size (a bare pty) would get no bar;
            # shutil falls back to 80x24 there.
            ncols=size.columns,
            nrows=size.lines,
        )
        self.plane = -1
        self.iterations = 0
        self._shown = 0.0

    def __deepcopy__(self, memo):
        return self

    def fit_started(self) -> None:
        if self.plane >= 0:
            self.bar.update(1)  # the previous plane is fitted and encoded
        self.plane += 1
        self.iterations = 0
        self._show("fitting", force=True)

    def iteration(self) -> None:
        self.iterations += 1
        self._show("fitting")

    def fit_done(self) -> None:
        self._show("encoding", force=True)

    def _show(self, stage: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.bar.disable or not (force or now - self._shown > 0.1):
            return
        self._shown = now
        name = self.names[min(self.plane, len(self.names) - 1)]
        iters = f" ({self.iterations} iterations)" if self.iterations else ""
        self.bar.set_postfix_str(f"{name}: {stage}{iters}", refresh=True)

    def close(self) -> None:
        self.bar.close()


def _reporting_factoriser(progress: _Progress, random_state):
    """The codec's own default estimator, reporting its planes and iterations.

    ``compress`` clones this per plane with the plane's ``n_components``; its
    ``fit`` builds exactly the estimator the codec builds without one, so the
    file is the same with and without progress.
    """
    from sklearn.base import BaseEstimator
    from skorch.callbacks import Callback

    from sknmf.image import _codec

    class _Iterations(Callback):
        def __init__(self, progress):
            self.progress = progress

        def on_epoch_end(self, net, **kwargs):
            self.progress.iteration()

    class ReportingFactoriser(BaseEstimator):
        def __init__(self, n_components=None, random_state=None, progress=None):
            self.n_components = n_components
            self.random_state = random_state
            self.progress = progress

        def fit(self, X, y=None):
            est = _codec._default_estimator(self.n_components, self.random_state)
            est.set_params(callbacks=[_Iterations(self.progress)])
            self.progress.fit_started()
            est.fit(X)
            self.progress.fit_done()
            self.components_ = est.components_
            return self

    return ReportingFactoriser(random_state=random_state, progress=progress)


def _run_compress(args: argparse.Namespace) -> int:
    from sknmf.image import bits_per_pixel, save

    _check_distinct(args.input, args.output)
    image = _read_image(args.input, args.max_pixels)
    if image.ndim == 2:
        names = ["gray"]
    else:
        names = ["R", "G", "B"] if args.color == "rgb" else ["Y", "Cb", "Cr"]
    progress = _Progress(names, enabled=not args.quiet and _stderr_is_terminal())
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
            estimator=_reporting_factoriser(progress, args.seed),
            random_state=args.seed,
        )
    except (ValueError, TypeError) as exc:
        raise CLIError(f"{args.input}: {exc}") from exc
    except OSError as exc:
        raise CLIError(f"{args.output}: cannot write ({exc.strerror or exc})") from exc
    finally:
        progress.close()
    # The wall time of the whole command (start-up, reading, fitting, encoding,
    # writing), as the user waited for it.
    seconds = time.perf_counter() - args._started
    print(
        f"{args.output}: {n_bytes} bytes, "
        f"{bits_per_pixel(n_bytes, image.shape):.3f} bpp, {seconds:.2f} s"
    )
    return 0


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _add_decompress_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="compressed file (.sknmf)")
    p.add_argument(
        "output",
        help="image to write (format from the extension; lossless formats such "
        "as .png, .bmp, .tif keep the decoded pixels exactly)",
    )
    p.add_argument(
        "--allow-lossy",
        action="store_true",
        help="allow a format that changes the decoded pixels (.jpg, .webp, or "
        "a .gif of more than 256 colours), written with Pillow's default "
        "settings; without it such an output is refused and nothing is written",
    )
    _add_max_pixels(p, "image")


def _run_decompress(args: argparse.Namespace) -> int:
    from sknmf.image import DecompressionBombError, decompress

    _check_distinct(args.input, args.output)
    # Refuse a lossy target before the work, and a bomb before any allocation.
    fmt = _image_format(args.output)
    if fmt in _LOSSY_FORMATS and not args.allow_lossy:
        raise _lossy_refusal(args.output, fmt, "re-encodes the image lossy")
    data = _read_bytes(args.input)
    try:
        # The decoder checks the command's budget (pixels, and the work they
        # allow) from the header, before allocating anything.
        image = decompress(data, max_pixels=args.max_pixels or None)
    except DecompressionBombError as exc:
        raise CLIError(
            f"{args.input}: {exc} (on the command line: --max-pixels N, 0 lifts it)"
        ) from exc
    except ValueError as exc:
        raise CLIError(f"{args.input}: {exc}") from exc
    except MemoryError:
        raise CLIError(f"{args.input}: not enough memory to decode") from None
    _write_image(args.output, image, allow_lossy=args.allow_lossy)
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


def _check_output_folder(path: str) -> None:
    """Create ``path`` if needed and prove it writable, before any work."""
    import tempfile

    if os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"{path}: exists and is not a directory; choose another --out")
    try:
        os.makedirs(path, exist_ok=True)
        # A real write: os.access answers yes to root on a read-only folder, and
        # knows nothing of read-only mounts or quotas.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise CLIError(
            f"{path}: cannot write figures there ({exc.strerror or exc}); "
            "choose another --out"
        ) from exc


def _run_demo(args: argparse.Namespace) -> int:
    _check_output_folder(args.out)
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


def _process_age() -> float:
    """Seconds since this process started (Linux; 0 where unknown)."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22, counted after the command name (which may hold spaces).
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


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
    started = time.perf_counter()
    if argv is None:
        # The console command: count the interpreter's start-up too.
        started -= _process_age()
    args = _parser().parse_args(argv)
    args._started = started
    try:
        return args._run(args)
    except CLIError as exc:
        print(f"sknmf {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sknmf {args.command}: interrupted", file=sys.stderr)
        return 130
