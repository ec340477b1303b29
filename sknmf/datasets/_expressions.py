"""Facial-expression videos: a synthetic generator and a loader for frame folders."""

from __future__ import annotations

import os
import re
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

# Apex of each expression as offsets of a few facial "action" parameters (units: half
# the face width; eye openness and mouth width are relative changes). A frame at
# intensity ``i`` in [0, 1] shows ``neutral + i * apex``.
#   brow: raise of both brows (up > 0); brow_in: extra raise of their inner ends;
#   eye: eye opening; curve: lift of the mouth corners; open: half height of the open
#   mouth; width: mouth width; teeth: visible teeth; wrinkle: wrinkles on the nose;
#   lip: upper-lip raise.
_APEX = {
    "neutral": {},
    "happy": {"eye": -0.4, "curve": 0.2, "open": 0.1, "width": 0.35, "teeth": 1.0},
    "smile": {"eye": -0.2, "curve": 0.18, "width": 0.3},
    "sad": {"brow_in": 0.16, "eye": -0.3, "curve": -0.16},
    "surprise": {"brow": 0.18, "eye": 1.1, "open": 0.22, "width": -0.45},
    "anger": {"brow": -0.12, "brow_in": -0.2, "eye": -0.3, "width": -0.35},
    "disgust": {"brow": -0.03, "eye": -0.6, "curve": -0.12, "lip": 0.12,
                "wrinkle": 1.0, "width": 0.05},
    "fear": {"brow": 0.12, "brow_in": 0.12, "eye": 0.9, "open": 0.08, "width": 0.4,
             "curve": -0.08, "teeth": 0.3},
}  # fmt: skip

EXPRESSIONS = tuple(_APEX)
"""Expressions :func:`make_expression_videos` can draw."""

DEFAULT_CLASSES = (
    "happy",
    "sad",
    "surprise",
    "anger",
    "disgust",
    "fear",
    "smile-onset",
    "smile-offset",
)


def _parse_classes(classes) -> list[tuple[str, bool]]:
    """``[(expression, reversed_in_time), ...]`` for the requested class names."""
    parsed = []
    for name in classes:
        if not isinstance(name, str):
            raise ValueError(f"classes must hold strings; got {name!r}.")
        expr, _, direction = name.partition("-")
        if expr not in _APEX or direction not in ("", "onset", "offset"):
            raise ValueError(
                f"Unknown class {name!r}: use an expression from {list(EXPRESSIONS)}, "
                "optionally suffixed '-onset' (neutral to apex, the default) or "
                "'-offset' (apex back to neutral), e.g. 'smile-offset'."
            )
        if expr == "neutral" and direction:
            raise ValueError("'neutral' has no onset or offset; use 'neutral'.")
        parsed.append((expr, direction == "offset"))
    if len(parsed) < 1:
        raise ValueError("classes must name at least one class.")
    if len(set(parsed)) != len(parsed):
        raise ValueError(
            f"classes={list(classes)!r} names the same videos twice (an expression "
            "alone means its onset)."
        )
    return parsed


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _soft(d: np.ndarray, eps: float) -> np.ndarray:
    """Anti-aliased inside-mask from a signed distance (positive inside)."""
    return 0.5 * (1.0 + np.tanh(d / eps))


def _segment_distance(u, v, p, q):
    """Distance from points (u, v) to segments p->q (per-frame endpoints)."""
    px, py = p
    qx, qy = q
    dx, dy = qx - px, qy - py
    t = np.clip(((u - px) * dx + (v - py) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(u - px - t * dx, v - py - t * dy)


def _draw_subject(rng: np.random.RandomState) -> dict:
    return {
        "face_rx": rng.uniform(0.6, 0.74),
        "face_ry": rng.uniform(0.8, 0.93),
        "skin": rng.uniform(0.5, 0.85),
        "bg": rng.uniform(0.05, 0.35),
        "hair": rng.uniform(0.03, 0.3),
        "hairline": rng.uniform(-0.78, -0.55),
        "eye_y": rng.uniform(-0.21, -0.17),
        "eye_dx": rng.uniform(0.27, 0.31),
        "eye_rx": rng.uniform(0.11, 0.15),
        "eye_ry": rng.uniform(0.055, 0.075),
        "brow_gap": rng.uniform(0.11, 0.14),
        "brow_len": rng.uniform(0.22, 0.3),
        "brow_t": rng.uniform(0.035, 0.05),
        "nose_len": rng.uniform(0.22, 0.32),
        "mouth_y": rng.uniform(0.4, 0.45),
        "mouth_w": rng.uniform(0.26, 0.34),
        "lip_t": rng.uniform(0.035, 0.05),
        "expressive": rng.uniform(0.85, 1.1),
    }


def _render(subject: dict, expr: str, intensity: np.ndarray, size, noise, rng):
    """Frames ``(n_frames, h, w)`` of one subject at the given expression intensity."""
    h, w = size
    n = len(intensity)
    s = subject
    half = min(h, w) / 2.0
    eps = 0.9 / half  # about one pixel, in face units
    # Per-frame head jitter (translation, scale) and lighting flicker: independent and
    # identically distributed over time, so a video and its time reversal are equally
    # likely (what makes onset vs offset separable by order only).
    # float32 throughout: twice as fast, and the frames are stored as float32 anyway.
    # Jitter in face units (a fraction of the half-size), so any image size sees the
    # same relative motion.
    shift = half * (rng.normal(0.0, 0.03, size=2) + rng.normal(0.0, 0.015, size=(n, 2)))
    shift = shift.astype(np.float32)
    scale = half * (1.0 + rng.normal(0.0, 0.03) + rng.normal(0.0, 0.01, size=n))
    scale = scale.astype(np.float32)
    ys = np.arange(h, dtype=np.float32)[None, :, None]
    xs = np.arange(w, dtype=np.float32)[None, None, :]
    u = (xs - (w - 1) / 2.0 - shift[:, 0, None, None]) / scale[:, None, None]
    v = (ys - (h - 1) / 2.0 - shift[:, 1, None, None]) / scale[:, None, None]

    apex = _APEX[expr]
    k = (intensity[:, None, None] * s["expressive"]).astype(np.float32)

    def act(name):
        return apex.get(name, 0.0) * k

    img = np.full((n, h, w), s["bg"], dtype=np.float32)
    face = _soft(
        (1.0 - np.hypot(u / s["face_rx"], v / s["face_ry"])) * s["face_rx"], eps
    )
    img += (s["skin"] - img) * face
    hair = face * _soft(s["hairline"] - v, eps)
    img += (s["hair"] - img) * hair

    # Eyes: sclera ellipse whose opening follows the expression, dark iris inside.
    open_ry = s["eye_ry"] * np.maximum(1.0 + act("eye"), 0.1)
    for side in (-1.0, 1.0):
        eu = u - side * s["eye_dx"]
        ev = v - s["eye_y"]
        sclera = _soft((1.0 - np.hypot(eu / s["eye_rx"], ev / open_ry)) * open_ry, eps)
        iris = sclera * _soft(0.6 * s["eye_rx"] - np.hypot(eu, ev), eps)
        img += (0.92 - img) * sclera
        img += (0.08 - img) * iris
        # Brows: thick segments; inner ends move with brow_in.
        brow_y = s["eye_y"] - s["brow_gap"] - act("brow")
        inner = (side * (s["eye_dx"] - s["brow_len"] / 2), brow_y - act("brow_in"))
        outer = (
            side * (s["eye_dx"] + s["brow_len"] / 2),
            brow_y + 0.3 * act("brow_in"),
        )
        dist = _segment_distance(u, v, inner, outer)
        img += (s["hair"] - img) * _soft(s["brow_t"] - dist, eps)

    # Nose: a shaded ridge, a nostril line, wrinkles across the bridge for disgust.
    nose_top, nose_bot = s["eye_y"] + 0.06, s["eye_y"] + s["nose_len"]
    ridge = _soft(
        0.02 - _segment_distance(u, v, (0.04, nose_top), (0.06, nose_bot)), eps
    )
    img += (0.75 * s["skin"] - img) * ridge
    nostril = _soft(
        0.018 - _segment_distance(u, v, (-0.07, nose_bot), (0.07, nose_bot)), eps
    )
    img += (0.4 * s["skin"] - img) * nostril
    wrinkle = np.minimum(act("wrinkle"), 1.0)
    for dv in (0.0, 0.06, 0.12):
        line = _segment_distance(u, v, (-0.09, nose_top + dv), (0.09, nose_top + dv))
        img += (0.4 * s["skin"] - img) * _soft(0.018 - line, eps) * wrinkle

    # Mouth: a curved centre line with lifted or dropped corners, lips around it, an
    # opening (dark, with teeth along its top) that widens towards the centre.
    mw = s["mouth_w"] * np.maximum(1.0 + act("width"), 0.3)
    x = u / mw
    centre = s["mouth_y"] - act("lip") - act("curve") * x * x
    opening = np.maximum(act("open"), 0.0) * np.maximum(1.0 - x * x, 0.0)
    across = np.abs(v - centre - 0.5 * act("lip"))
    along = _soft((1.0 - np.abs(x)) * mw, eps)
    lips = along * _soft(opening + s["lip_t"] - across, eps)
    cavity = along * _soft(opening - across, eps)
    teeth = cavity * _soft(centre - 0.3 * opening - v, eps)
    img += (0.55 * s["skin"] - img) * lips
    img += (0.06 - img) * cavity
    img += (0.9 - img) * teeth * np.minimum(act("teeth"), 1.0)

    # Lighting: a per-video gradient across the face and a small per-frame flicker.
    angle = rng.uniform(0.0, 2.0 * np.pi)
    gain = rng.uniform(0.0, 0.15)
    light = 1.0 + gain * (np.cos(angle) * u + np.sin(angle) * v)
    light *= 1.0 + rng.normal(0.0, 0.02, size=(n, 1, 1)).astype(np.float32)
    img *= light * np.float32(rng.uniform(0.9, 1.05))
    img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


@validate_params(
    {
        "n_sequences": [Interval(Integral, 1, None, closed="left")],
        "n_frames": [Interval(Integral, 2, None, closed="left")],
        "image_size": [tuple, list],
        "classes": [list, tuple, None],
        "n_subjects": [Interval(Integral, 1, None, closed="left")],
        "noise": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_expression_videos(
    n_sequences: int = 240,
    n_frames: int = 16,
    *,
    image_size=(48, 48),
    classes=None,
    n_subjects: int = 12,
    noise: float = 0.03,
    random_state=None,
):
    """Synthetic grayscale videos of faces going from neutral to an expression.

    Each subject has its own face (shape, skin and hair tone, hairline, placement and
    size of eyes, brows, nose and mouth, expressiveness). Each video shows one subject
    whose expression starts at, rises to, or fades from the apex of a basic expression
    (happy, sad, surprise, anger, disgust, fear, a closed-mouth smile), with a random
    start and speed, under head jitter, a lighting gradient, flicker and pixel noise.

    ``"<expression>-offset"`` classes are the time reversals of
    ``"<expression>-onset"`` videos: every frame is drawn from the same distribution,
    and only the order of the frames tells them apart, so an order-blind model (frame
    features averaged over time) cannot score above chance on such a pair.

    Parameters
    ----------
    n_sequences : int, default=240
        Number of videos.
    n_frames : int, default=16
        Frames per video (at least 2).
    image_size : tuple of int (height, width), default=(48, 48)
        Frame size in pixels (each at least 12).
    classes : list of str or None, default=None
        Class names: an expression from ``("neutral", "happy", "smile", "sad",
        "surprise", "anger", "disgust", "fear")``, optionally suffixed ``"-onset"``
        (neutral to apex; the same as no suffix) or ``"-offset"`` (apex to neutral).
        ``None`` means ``("happy", "sad", "surprise", "anger", "disgust", "fear",
        "smile-onset", "smile-offset")``.
    n_subjects : int, default=12
        Number of distinct faces. Classes are balanced within each subject (videos go
        round-robin over classes, then subjects).
    noise : float, default=0.03
        Standard deviation of the Gaussian pixel noise (intensities lie in [0, 1]).
    random_state : int, RandomState instance or None, default=None
        Seed for reproducible data.

    Returns
    -------
    X : ndarray of shape (n_sequences, n_frames, height, width), dtype float32
        Frames with intensities in [0, 1] (nonnegative, ready for NMF).
    y : ndarray of shape (n_sequences,), dtype str
        Class name of each video.
    groups : ndarray of shape (n_sequences,), dtype int
        Subject of each video, for subject-wise splits
        (:class:`~sklearn.model_selection.GroupKFold`).

    See Also
    --------
    load_expression_folder : Load real expression videos stored as image folders.

    Examples
    --------
    >>> from sknmf.datasets import make_expression_videos
    >>> X, y, groups = make_expression_videos(16, n_frames=6, random_state=0)
    >>> X.shape, X.dtype
    ((16, 6, 48, 48), dtype('float32'))
    >>> sorted(set(y.tolist()))[:3]
    ['anger', 'disgust', 'fear']
    >>> X2, y2, _ = make_expression_videos(
    ...     4, n_frames=5, classes=["smile-onset", "smile-offset"], random_state=0)
    >>> y2.tolist()
    ['smile-offset', 'smile-onset', 'smile-onset', 'smile-offset']
    """
    if len(image_size) != 2 or not all(
        isinstance(s, Integral) and s >= 12 for s in image_size
    ):
        raise ValueError(
            f"image_size={image_size!r} must be (height, width), two integers >= 12."
        )
    parsed = _parse_classes(DEFAULT_CLASSES if classes is None else classes)
    names = DEFAULT_CLASSES if classes is None else tuple(classes)
    rng = check_random_state(random_state)
    subjects = [_draw_subject(rng) for _ in range(n_subjects)]
    n_classes = len(parsed)
    label_idx = np.arange(n_sequences) % n_classes
    group = (np.arange(n_sequences) // n_classes) % n_subjects
    order = rng.permutation(n_sequences)
    label_idx, group = label_idx[order], group[order]

    X = np.empty((n_sequences, n_frames, *image_size), dtype=np.float32)
    t = np.arange(n_frames, dtype=np.float64)
    last = n_frames - 1
    for i in range(n_sequences):
        expr, backwards = parsed[label_idx[i]]
        start = rng.uniform(0.0, 0.3) * last
        duration = rng.uniform(0.35, 0.6) * last
        peak = rng.uniform(0.8, 1.0)
        intensity = peak * _smoothstep((t - start) / duration)
        if backwards:
            intensity = intensity[::-1]
        X[i] = _render(subjects[group[i]], expr, intensity, image_size, noise, rng)
    y = np.asarray(names)[label_idx]
    return X, y, group.astype(np.int64)


def _natural_key(name: str):
    """Sort key putting '2.png' before '10.png'."""
    return [
        int(part) if part.isdigit() else part.lower()
        for part in re.split(r"(\d+)", name)
    ]


def _subdirs(path: Path) -> list[Path]:
    return sorted(
        (p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: _natural_key(p.name),
    )


def load_expression_folder(
    path,
    *,
    image_size=None,
    grayscale: bool = True,
    subject_separator: str | None = "_",
):
    """Load expression videos stored as ``root/<label>/<sequence>/<frame>.<ext>``.

    Every readable image format of Pillow works (PNG, JPEG, BMP, TIFF...). Frames are
    sorted naturally (``2.png`` before ``10.png``); hidden files are skipped.

    Parameters
    ----------
    path : str or path-like
        The root folder; each sub-folder is a class label holding one folder per video.
    image_size : tuple of int (height, width) or None, default=None
        Resize every frame to this size (bilinear). ``None`` keeps the stored size,
        which must then be the same for all frames of a video.
    grayscale : bool, default=True
        Convert frames to grayscale ``(h, w)``; otherwise to RGB ``(h, w, 3)``.
    subject_separator : str or None, default="_"
        The subject of a video (its group) is the part of its folder name before this
        separator (``"S005_001"`` -> ``"S005"``); ``None`` uses the whole folder name.

    Returns
    -------
    X : ndarray of shape (n_seq, n_frames, h, w[, 3]) or list of ndarray
        Frames as float32 in [0, 1]; a list of ``(n_frames_i, h, w[, 3])`` arrays when
        the videos differ in length or frame size.
    y : ndarray of shape (n_seq,), dtype str
        The label (folder name) of each video.
    groups : ndarray of shape (n_seq,), dtype str
        The subject of each video, for subject-wise splits.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a folder.
    ValueError
        For a folder without label, video or frame folders, an unreadable image, or
        frames of different sizes within one video (without ``image_size``).

    See Also
    --------
    make_expression_videos : Synthetic expression videos.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> from sknmf.datasets import load_expression_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for label in ("happy", "sad"):
    ...     for seq in ("S1_001", "S2_001"):
    ...         (root / label / seq).mkdir(parents=True)
    ...         for f in range(3):
    ...             img = np.full((8, 10), 40 * f, dtype=np.uint8)
    ...             Image.fromarray(img).save(root / label / seq / f"{f}.png")
    >>> X, y, groups = load_expression_folder(root)
    >>> X.shape, y.tolist(), groups.tolist()
    ((4, 3, 8, 10), ['happy', 'happy', 'sad', 'sad'], ['S1', 'S2', 'S1', 'S2'])
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(os.fspath(path))
    if not root.is_dir():
        raise FileNotFoundError(f"path={str(root)!r} is not an existing folder.")
    if image_size is not None and (
        len(image_size) != 2
        or not all(isinstance(s, Integral) and s >= 1 for s in image_size)
    ):
        raise ValueError(
            f"image_size={image_size!r} must be None or (height, width), two positive "
            "integers."
        )
    labels = _subdirs(root)
    if not labels:
        raise ValueError(
            f"{str(root)!r} holds no label folders; expected root/<label>/<sequence>/"
            "<frame>.png."
        )
    X, y, groups = [], [], []
    for label_dir in labels:
        sequences = _subdirs(label_dir)
        if not sequences:
            raise ValueError(
                f"Label folder {str(label_dir)!r} holds no sequence folders; expected "
                f"{label_dir.name}/<sequence>/<frame>.png."
            )
        for seq_dir in sequences:
            files = sorted(
                (
                    p
                    for p in seq_dir.iterdir()
                    if p.is_file() and not p.name.startswith(".")
                ),
                key=lambda p: _natural_key(p.name),
            )
            if not files:
                raise ValueError(f"Sequence folder {str(seq_dir)!r} holds no frames.")
            frames = []
            for file in files:
                try:
                    with Image.open(file) as img:
                        img = img.convert("L" if grayscale else "RGB")
                        if image_size is not None:
                            img = img.resize(
                                (image_size[1], image_size[0]),
                                Image.Resampling.BILINEAR,
                            )
                        frames.append(np.asarray(img, dtype=np.float32) / 255.0)
                except (UnidentifiedImageError, OSError) as exc:
                    raise ValueError(
                        f"Cannot read {str(file)!r} as an image ({exc})."
                    ) from exc
            shapes = {f.shape for f in frames}
            if len(shapes) > 1:
                sizes = sorted(s[:2] for s in shapes)
                raise ValueError(
                    f"Frames of {str(seq_dir)!r} have different sizes {sizes}; pass "
                    "image_size=(height, width) to resize them."
                )
            X.append(np.stack(frames))
            y.append(label_dir.name)
            name = seq_dir.name
            if subject_separator:
                name = name.split(subject_separator, 1)[0]
            groups.append(name)
    if len({x.shape for x in X}) == 1:
        X = np.stack(X)
    return X, np.asarray(y), np.asarray(groups)
