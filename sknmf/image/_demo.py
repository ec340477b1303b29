"""``sknmf demo``: (deep) NMF on the bundled photos, against scikit-learn and JPEG.

Two tables on scikit-learn's two sample photos (no download):

1. Factorisation of the 8x8 colour patches: DeepNMF with one and three layers and
   :class:`sklearn.decomposition.NMF`, same patches and components: relative
   reconstruction error, fit time, PSNR of the rebuilt (unquantised) image.
2. Compression at several rates with the sknmf codec (DeepNMF one layer, DeepNMF
   three layers, scikit-learn NMF as the factoriser) and JPEG by Pillow at the
   same bits per pixel: bpp, PSNR, SSIM, encode and decode time.

Then the figures ``rate_distortion.png``, ``reconstructions.png`` and
``components.png`` in the output folder.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.decomposition import NMF

from sknmf.decomposition import DeepNMF
from sknmf.image import _codec
from sknmf.image._codec import codec_settings, compress, decompress, stored_atoms
from sknmf.image._metrics import bits_per_pixel, psnr, ssim
from sknmf.image._patches import ImagePatches

QUALITIES = (20, 50, 75)
N_COMPONENTS = 32
FACTOR_ITER = 100


@dataclass
class _Row:
    image: str
    method: str
    setting: str
    bpp: float
    psnr: float
    ssim: float
    encode_s: float
    decode_s: float
    data: bytes = field(default=b"", repr=False)
    decoded: np.ndarray | None = field(default=None, repr=False)


def _deep(k, cap=64):
    """Three non-increasing layers ending in ``k``, the first at most ``cap``."""
    return (max(k, min(cap, 2 * k)), max(k, min(cap, round(1.5 * k))), k)


def _factorisers(n_components, cap, random_state=0):
    return [
        (
            "DeepNMF, 1 layer",
            DeepNMF(
                n_components,
                init="nndsvda",
                max_iter=FACTOR_ITER,
                tol=0.0,
                random_state=random_state,
            ),
        ),
        (
            "DeepNMF, 3 layers",
            DeepNMF(
                _deep(n_components, cap),
                init="nndsvda",
                max_iter=FACTOR_ITER,
                tol=0.0,
                random_state=random_state,
            ),
        ),
        (
            "sklearn NMF",
            NMF(
                n_components,
                init="nndsvda",
                solver="cd",
                max_iter=FACTOR_ITER,
                tol=0.0,
                random_state=random_state,
            ),
        ),
    ]


def _jpeg_at(image: np.ndarray, n_bytes: int) -> tuple[int, bytes]:
    """Pillow JPEG (optimised Huffman tables) whose size is closest to ``n_bytes``."""
    from PIL import Image

    pil = Image.fromarray(image)
    cache: dict[int, bytes] = {}

    def encode(q: int) -> bytes:
        if q not in cache:
            buf = io.BytesIO()
            pil.save(buf, format="JPEG", quality=q, optimize=True)
            cache[q] = buf.getvalue()
        return cache[q]

    lo, hi = 1, 95
    while lo < hi:  # size grows with quality: bisect, then take the closer side
        mid = (lo + hi) // 2
        if len(encode(mid)) < n_bytes:
            lo = mid + 1
        else:
            hi = mid
    best = min({max(lo - 1, 1), lo}, key=lambda q: abs(len(encode(q)) - n_bytes))
    return best, encode(best)


def _decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _ssim_or_nan(a, b) -> float:
    try:
        return ssim(a, b)
    except ImportError:
        return float("nan")


def _factorisation_table(images, log):
    rows = []
    for name, image in images.items():
        patches = ImagePatches((8, 8)).fit(image)
        X = patches.transform(image).astype(np.float32) / 255.0
        norm = float(np.linalg.norm(X))
        cap = min(X.shape)
        for method, est in _factorisers(min(N_COMPONENTS, cap), cap):
            log(f"  factorising {name}: {method} ...")
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
                W = est.fit_transform(X)
            seconds = time.perf_counter() - start
            rebuilt = np.asarray(W @ est.components_, dtype=np.float32)
            err = float(np.linalg.norm(X - rebuilt)) / norm
            back = patches.inverse_transform(np.clip(rebuilt * 255.0, 0, 255))
            rows.append((name, method, err, seconds, psnr(image, np.rint(back))))
    return rows


def _codec_rows(images, qualities, log):
    rows: list[_Row] = []
    total = len(images) * len(qualities) * 4
    done = 0
    for name, image in images.items():
        for q in qualities:
            luma, chroma, bits, _ = codec_settings(q)
            variants = [
                ("DeepNMF, 1 layer", {"quality": q}),
                (
                    "DeepNMF, 3 layers",
                    {
                        "n_components": _deep(luma),
                        "chroma_components": _deep(chroma),
                        "bits": bits,
                    },
                ),
                (
                    "sklearn NMF",
                    {
                        "quality": q,
                        # The same iteration budget as the default DeepNMF.
                        "estimator": NMF(
                            init="nndsvda",
                            solver="cd",
                            max_iter=_codec.FIT_ITER,
                            tol=0.0,
                            random_state=0,
                        ),
                    },
                ),
            ]
            for method, params in variants:
                done += 1
                log(f"  [{done}/{total}] {name}, {method}, quality {q} ...")
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    data = compress(image, **params)
                enc = time.perf_counter() - start
                start = time.perf_counter()
                out = decompress(data)
                dec = time.perf_counter() - start
                rows.append(
                    _Row(
                        name,
                        method,
                        f"q={q}, K={luma}/{chroma}, {bits} bit",
                        bits_per_pixel(data),
                        psnr(image, out),
                        _ssim_or_nan(image, out),
                        enc,
                        dec,
                        data,
                        out,
                    )
                )
            target = rows[-3].data  # JPEG matches the DeepNMF one-layer file size
            done += 1
            log(f"  [{done}/{total}] {name}, JPEG at {bits_per_pixel(target):.2f} bpp")
            start = time.perf_counter()
            jq, jdata = _jpeg_at(image, len(target))
            enc = time.perf_counter() - start
            start = time.perf_counter()
            out = _decode_jpeg(jdata)
            dec = time.perf_counter() - start
            rows.append(
                _Row(
                    name,
                    "JPEG (Pillow)",
                    f"quality {jq}",
                    bits_per_pixel(jdata, image.shape),
                    psnr(image, out),
                    _ssim_or_nan(image, out),
                    enc,
                    dec,
                    jdata,
                    out,
                )
            )
    return rows


def _print_tables(fact_rows, codec_rows, qualities) -> None:
    print(
        "\n1. Factorising the 8x8 colour patches "
        f"({N_COMPONENTS} components, {FACTOR_ITER} iterations, float32)\n"
    )
    print(
        f"{'image':<8} {'method':<19} {'rel. error':>10} {'time s':>7} {'PSNR dB':>8}"
    )
    for name, method, err, sec, p in fact_rows:
        print(f"{name:<8} {method:<19} {err:>10.4f} {sec:>7.2f} {p:>8.2f}")

    print(
        "\n2. Compression: real file sizes; JPEG searched to the same size as "
        "DeepNMF, 1 layer\n"
    )
    head = (
        f"{'image':<8} {'method':<19} {'setting':<24} {'bpp':>6} {'PSNR dB':>8} "
        f"{'SSIM':>6} {'enc s':>6} {'dec s':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in codec_rows:
        print(
            f"{r.image:<8} {r.method:<19} {r.setting:<24} {r.bpp:>6.3f} "
            f"{r.psnr:>8.2f} {r.ssim:>6.3f} {r.encode_s:>6.2f} {r.decode_s:>6.3f}"
        )

    print(
        "\nWhere NMF stands against JPEG at equal bpp (PSNR of DeepNMF, 1 layer "
        "minus JPEG's):"
    )
    for name in dict.fromkeys(r.image for r in codec_rows):
        gaps = []
        for i, r in enumerate(codec_rows):
            if r.image == name and r.method == "DeepNMF, 1 layer":
                jpeg = codec_rows[i + 3]  # each rate ends with its JPEG match
                gaps.append(f"{r.bpp:.2f} bpp: {r.psnr - jpeg.psnr:+.2f} dB")
        print(f"  {name}: " + "; ".join(gaps))


def _figures(out_dir, images, codec_rows, qualities, log) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(
            "  matplotlib is not installed: figures skipped "
            "(pip install sknmf[examples])"
        )
        return []
    os.makedirs(out_dir, exist_ok=True)
    written = []
    names = list(images)
    methods = list(dict.fromkeys(r.method for r in codec_rows))

    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2))
    for ax, name in zip(np.atleast_1d(axes), names):
        for method in methods:
            pts = sorted(
                (r.bpp, r.psnr)
                for r in codec_rows
                if r.image == name and r.method == method
            )
            ax.plot(*zip(*pts), marker="o", label=method)
        ax.set(title=name, xlabel="bits per pixel", ylabel="PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out_dir, "rate_distortion.png"))
    plt.close(fig)

    mid = qualities[len(qualities) // 2]
    fig, axes = plt.subplots(
        len(names),
        len(methods) + 1,
        figsize=(2.6 * (len(methods) + 1), 2.8 * len(names) + 0.6),
        squeeze=False,
    )
    crops = []
    for i, name in enumerate(names):
        image = images[name]
        h, w = image.shape[:2]
        ch, cw = min(h, 128), min(w, 160)
        top, left = (h - ch) // 2, (w - cw) // 2
        crops.append(f"{name}[{top}:{top + ch}, {left}:{left + cw}]")
        crop = (slice(top, top + ch), slice(left, left + cw))
        panels = [(f"{name}: original", image)]
        for method in methods:
            rows = [r for r in codec_rows if r.image == name and r.method == method]
            row = rows[list(qualities).index(mid)]
            setting = row.setting if method == "JPEG (Pillow)" else f"q={mid}"
            panels.append(
                (
                    f"{method}, {setting}\n{row.bpp:.2f} bpp, {row.psnr:.1f} dB",
                    row.decoded,
                )
            )
        for ax, (title, img) in zip(axes[i], panels):
            ax.imshow(img[crop], interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    # Say what the crops are: the panels show a part of each image, while the
    # bits per pixel and PSNR in the titles are those of the whole image.
    fig.suptitle(
        f"Centre crops {', '.join(crops)} of each photo decoded at the demo's "
        f"middle quality, q={mid}; JPEG at the Pillow quality whose file size "
        "matches the DeepNMF, 1 layer file.\nbpp and PSNR are those of the whole "
        "image, not of the crop.",
        fontsize=8,
    )
    fig.tight_layout()
    written.append(_save(fig, out_dir, "reconstructions.png"))
    plt.close(fig)

    best = max(
        (r for r in codec_rows if r.method == "DeepNMF, 1 layer"),
        key=lambda r: (r.image == names[0], r.bpp),
    )
    atoms = stored_atoms(best.data)[0]
    k = len(atoms)
    # NMF splits each term's size between the atom and its codes as it likes, so
    # the atoms are drawn at unit L2 norm, all on one grey scale (not each
    # stretched to its own range, which makes a near-flat atom look like noise).
    norms = np.sqrt((atoms.astype(np.float64) ** 2).sum(axis=(1, 2)))
    unit = atoms / np.maximum(norms, np.finfo(np.float64).tiny)[:, None, None]
    vmax = float(unit.max()) if unit.size else 1.0
    cols = int(np.ceil(np.sqrt(k)))
    rows_n = int(np.ceil(k / cols))
    fig, axes = plt.subplots(
        rows_n,
        cols,
        figsize=(1.1 * cols + 1.2, 1.1 * rows_n + 0.5),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.ravel():
        ax.axis("off")
    shown = None
    for ax, atom in zip(axes.ravel(), unit):
        shown = ax.imshow(
            atom, cmap="gray", vmin=0.0, vmax=vmax, interpolation="nearest"
        )
    if shown is not None:
        fig.colorbar(shown, ax=axes, shrink=0.8, label="atom value (unit L2 norm)")
    fig.suptitle(
        f"{k} luma atoms stored in the {best.image} file "
        f"({best.setting.split(',')[0]}), each at unit L2 norm, one shared scale",
        fontsize=9,
    )
    written.append(_save(fig, out_dir, "components.png"))
    plt.close(fig)
    return written


def _save(fig, out_dir, name) -> str:
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=110)
    return path


def run(
    out_dir: str = "sknmf-demo", *, log=print, qualities=QUALITIES, crop=None
) -> int:
    """Run the demo: print both tables, write the figures; return 0.

    ``crop`` (rows, cols) shrinks the photos, for quick tests.
    """
    from sklearn.datasets import load_sample_images

    start = time.perf_counter()
    data = load_sample_images()
    images = {}
    for path, image in zip(data.filenames, data.images):
        name = os.path.splitext(os.path.basename(path))[0]
        images[name] = image if crop is None else image[: crop[0], : crop[1]]
    log(
        "sknmf demo: the two sample photos of scikit-learn, "
        f"{'x'.join(map(str, next(iter(images.values())).shape))} each"
    )
    log("factorising 8x8 colour patches ...")
    fact_rows = _factorisation_table(images, log)
    log("compressing ...")
    codec_rows = _codec_rows(images, qualities, log)
    _print_tables(fact_rows, codec_rows, qualities)
    log("writing figures ...")
    for path in _figures(out_dir, images, codec_rows, qualities, log):
        print(f"wrote {path}")
    print(f"\ndone in {time.perf_counter() - start:.1f} s")
    return 0
