"""Facial-expression videos: a synthetic generator and a loader for frame folders."""

from __future__ import annotations

import os
import re
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

# Apex of each expression as offsets of a few facial "action" parameters (units: half
# the face width; eye openness and mouth width are relative changes). A frame at
# intensity ``i`` in [0, 1] shows ``neutral + i * apex``.
#   brow: raise of both brows (up > 0); brow_in: extra raise of their inner ends;
#   eye: eye opening; curve: lift of the mouth corners; open: half height of the open
#   mouth; width: mouth width; teeth: visible teeth; wrinkle: wrinkles on the nose;
#   lip: upper-lip raise; smirk: lift and pull of the right mouth corner alone.
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
    "contempt": {"smirk": 0.2, "curve": 0.03, "eye": -0.1, "width": 0.05},
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


# Range of every face parameter (uniform draws at subject_variation=1) and the bounds
# that keep a face drawable when the ranges are widened.
_SUBJECT_RANGES = {
    "face_rx": (0.6, 0.74, 0.45, 0.9),
    "face_ry": (0.8, 0.93, 0.62, 1.0),
    "skin": (0.5, 0.85, 0.25, 0.97),
    "bg": (0.05, 0.35, 0.0, 0.6),
    "hair": (0.03, 0.3, 0.0, 0.5),
    "hairline": (-0.78, -0.55, -0.95, -0.42),
    "eye_y": (-0.21, -0.17, -0.3, -0.1),
    "eye_dx": (0.27, 0.31, 0.2, 0.38),
    "eye_rx": (0.11, 0.15, 0.07, 0.19),
    "eye_ry": (0.055, 0.075, 0.035, 0.1),
    "brow_gap": (0.11, 0.14, 0.07, 0.2),
    "brow_len": (0.22, 0.3, 0.14, 0.38),
    "brow_t": (0.035, 0.05, 0.02, 0.07),
    "nose_len": (0.22, 0.32, 0.14, 0.4),
    "mouth_y": (0.4, 0.45, 0.33, 0.52),
    "mouth_w": (0.26, 0.34, 0.18, 0.42),
    "lip_t": (0.035, 0.05, 0.025, 0.065),
    "expressive": (0.85, 1.1, 0.6, 1.3),
}


def _draw_subject(rng: np.random.RandomState, variation: float = 1.0) -> dict:
    """One face: parameters spread ``variation`` times their base range."""
    subject = {}
    for name, (low, high, lowest, highest) in _SUBJECT_RANGES.items():
        value = rng.uniform(low, high)
        if variation != 1.0:
            centre = 0.5 * (low + high)
            value = float(
                np.clip(centre + variation * (value - centre), lowest, highest)
            )
        subject[name] = value
    # Above the base variation, every face also gets personal marks (shadows, moles,
    # beard stubble...): smooth blobs of either sign whose contrast grows with it.
    n_marks = 6 if variation > 1.0 else 0
    subject["marks"] = [
        (
            rng.uniform(-0.6, 0.6),
            rng.uniform(-0.7, 0.8),
            rng.uniform(0.06, 0.2),
            rng.normal(0.0, 0.07 * (variation - 1.0)),
        )
        for _ in range(n_marks)
    ]
    return subject


def _steady(per_frame: np.ndarray, held) -> np.ndarray:
    """Per-frame draws where the ``held`` frames share one pose (20% tremor left)."""
    if held is None or held.sum() < 2:
        return per_frame
    out = per_frame.copy()
    out[held] = per_frame[held][0] + 0.2 * per_frame[held]
    return out


def _render(
    subject: dict, expr: str, intensity: np.ndarray, size, noise, rng, held=None
):
    """Frames ``(n_frames, h, w)`` of one subject at the given expression intensity.

    ``held`` (boolean, one per frame) marks consecutive frames of a held expression:
    they share one head pose and lighting, up to a small tremor.
    """
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
    shift = half * (
        rng.normal(0.0, 0.03, size=2) + _steady(rng.normal(0.0, 0.015, (n, 2)), held)
    )
    shift = shift.astype(np.float32)
    scale = half * (
        1.0 + rng.normal(0.0, 0.03) + _steady(rng.normal(0.0, 0.01, size=n), held)
    )
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
    for mu, mv, width, contrast in s.get("marks", ()):
        blob = np.exp(-((u - mu) ** 2 + (v - mv) ** 2) / (2.0 * width * width))
        img += (contrast * face) * blob
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
    right = np.clip(x, 0.0, 1.2)
    centre = (
        s["mouth_y"] - act("lip") - act("curve") * x * x - act("smirk") * right * right
    )
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
    flicker = _steady(rng.normal(0.0, 0.02, size=(n, 1, 1)), held)
    light *= 1.0 + flicker.astype(np.float32)
    img *= light * np.float32(rng.uniform(0.9, 1.05))
    img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


HARD_CLASSES = ("anger", "contempt", "disgust", "fear", "happy", "sad", "surprise")
"""The seven classes of the ``setting="hard"`` videos."""

# Class proportions of the hard setting: those of a public posed-expression set of
# 7 classes (18 to 83 videos per class).
_HARD_WEIGHTS = (45, 18, 59, 25, 69, 28, 83)

_SETTINGS = {
    "easy": {
        "n_frames": 16,
        "n_subjects": 12,
        "subject_variation": 1.0,
        "sequences_per_subject": None,
        "dynamics": "smooth",
    },
    "hard": {
        "n_frames": 4,
        "n_subjects": None,
        "subject_variation": 2.0,
        "sequences_per_subject": (1, 6),
        "dynamics": "apex",
    },
}


def _subject_counts(n_sequences, n_subjects, per_subject, rng) -> np.ndarray:
    """Number of videos of each subject, each within ``per_subject = (low, high)``."""
    low, high = per_subject
    if n_subjects is None:
        counts = []
        while sum(counts) < n_sequences:
            counts.append(int(rng.randint(low, high + 1)))
        counts[-1] -= sum(counts) - n_sequences
        return np.asarray(counts, dtype=np.int64)
    if not low * n_subjects <= n_sequences <= high * n_subjects:
        raise ValueError(
            f"n_sequences={n_sequences} cannot be split over n_subjects={n_subjects} "
            f"with sequences_per_subject={per_subject!r}: it must lie between "
            f"{low * n_subjects} and {high * n_subjects}. Change one of them, or pass "
            "n_subjects=None to draw as many subjects as needed."
        )
    counts = np.full(n_subjects, low, dtype=np.int64)
    for _ in range(n_sequences - low * n_subjects):
        counts[rng.choice(np.flatnonzero(counts < high))] += 1
    return counts


def _check_per_subject(per_subject):
    if per_subject is None:
        return None
    if isinstance(per_subject, Integral):
        per_subject = (per_subject, per_subject)
    if (
        len(per_subject) != 2
        or not all(isinstance(c, Integral) for c in per_subject)
        or not 1 <= per_subject[0] <= per_subject[1]
    ):
        raise ValueError(
            f"sequences_per_subject={per_subject!r} must be None, a positive int, or "
            "(low, high) with 1 <= low <= high, e.g. (1, 6)."
        )
    return int(per_subject[0]), int(per_subject[1])


@validate_params(
    {
        "n_sequences": [Interval(Integral, 1, None, closed="left")],
        "n_frames": [Interval(Integral, 2, None, closed="left"), None],
        "image_size": [tuple, list],
        "classes": [list, tuple, None],
        "n_subjects": [Interval(Integral, 1, None, closed="left"), None],
        "noise": [Interval(Real, 0, None, closed="left")],
        "setting": [StrOptions({"easy", "hard"})],
        "subject_variation": [Interval(Real, 0, None, closed="left"), None],
        "sequences_per_subject": [Interval(Integral, 1, None, closed="left"), tuple,
                                  list, None],
        "dynamics": [StrOptions({"smooth", "apex"}), None],
        "weights": ["array-like", None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)  # fmt: skip
def make_expression_videos(
    n_sequences: int = 240,
    n_frames: int | None = None,
    *,
    image_size=(48, 48),
    classes=None,
    n_subjects: int | None = None,
    noise: float = 0.03,
    setting: str = "easy",
    subject_variation: float | None = None,
    sequences_per_subject=None,
    dynamics: str | None = None,
    weights=None,
    random_state=None,
):
    """Synthetic grayscale videos of faces going from neutral to an expression.

    Each subject has their own face (shape, skin and hair tone, hairline, placement and
    size of eyes, brows, nose and mouth, expressiveness). Each video shows one subject
    whose expression starts at, rises to, or fades from the apex of a basic expression
    (happy, sad, surprise, anger, disgust, fear, contempt, a closed-mouth smile) under
    head jitter, a lighting gradient, flicker and pixel noise.

    Two settings fix the defaults of every knob below:

    - ``setting="easy"`` (the default): 12 subjects whose videos are balanced over the
      classes, 16 frames of a smooth change with a random start and speed, faces
      that differ moderately. Good for a first look and a gallery example.
    - ``setting="hard"``: the statistics of real posed-expression sets, where a
      recognizer must work on strangers from little data: many people with 1 to 6
      videos each (the classes of one person all differ), 4 frames (a neutral first
      frame, then three consecutive frames of the held apex), faces that differ far
      more from person to person than from expression to expression
      (``subject_variation=2``: the variance of the neutral frames across videos is
      about 4 times the mean energy of the neutral-to-apex change; about 2 in real
      posed sets, which ``subject_variation=1`` matches), and 7 classes (anger,
      contempt, disgust, fear, happy, sad, surprise) in uneven proportions (contempt,
      a one-sided lift of the mouth close to a faint smile, is the smallest class).
      Score it with folds split by subject
      (:class:`~sklearn.model_selection.GroupKFold` with ``groups``).

    ``"<expression>-offset"`` classes are the time reversals of
    ``"<expression>-onset"`` videos: every frame is drawn from the same distribution,
    and only the order of the frames tells them apart, so an order-blind model (frame
    features averaged over time) cannot score above chance on such a pair.

    Parameters
    ----------
    n_sequences : int, default=240
        Number of videos.
    n_frames : int or None, default=None
        Frames per video (at least 2); ``None``: 16 (easy) or 4 (hard).
    image_size : tuple of int (height, width), default=(48, 48)
        Frame size in pixels (each at least 12).
    classes : list of str or None, default=None
        Class names: an expression (``"neutral"``,
        ``"happy"``, ``"smile"``, ``"sad"``, ``"surprise"``, ``"anger"``,
        ``"disgust"``, ``"fear"``, ``"contempt"``), optionally suffixed ``"-onset"``
        (neutral to apex; the same as no suffix) or ``"-offset"`` (apex to neutral).
        ``None`` means ``("happy", "sad", "surprise", "anger", "disgust", "fear",
        "smile-onset", "smile-offset")`` (easy) or ``("anger", "contempt",
        "disgust", "fear", "happy", "sad", "surprise")`` (hard).
    n_subjects : int or None, default=None
        Number of distinct faces. ``None``: 12 (easy), or as many as the draws of
        ``sequences_per_subject`` need to reach ``n_sequences`` (hard).
    noise : float, default=0.03
        Standard deviation of the Gaussian pixel noise (intensities lie in [0, 1]).
    setting : {"easy", "hard"}, default="easy"
        Where the ``None`` defaults of the other parameters come from (see above).
    subject_variation : float >= 0 or None, default=None
        How much faces differ: every face parameter is spread this many times its base
        range around the same average face, and above 1 every face also gets personal
        marks (smooth light and dark blobs) of contrast proportional to
        ``subject_variation - 1``. ``0`` gives everybody the average face. ``None``:
        1.0 (easy) or 2.0 (hard).
    sequences_per_subject : int, (low, high) or None, default=None
        Videos per subject. ``None`` balances the classes within every subject (videos
        go round-robin over classes, then subjects); ``(low, high)`` gives each
        subject between ``low`` and ``high`` videos (drawn uniformly, or spread over
        ``n_subjects`` when it is set) of different classes where possible.
        ``None`` means ``None`` (easy) or ``(1, 6)`` (hard).
    dynamics : {"smooth", "apex"} or None, default=None
        ``"smooth"``: the expression rises from neutral to the apex along a smooth
        step with a random start and duration. ``"apex"``: the first frame is neutral
        and every later frame is at the apex (the frames a posed-expression set keeps).
        ``None``: ``"smooth"`` (easy) or ``"apex"`` (hard).
    weights : array-like of shape (n_classes,) or None, default=None
        Relative frequency of each class when ``sequences_per_subject`` is set
        (ignored, with balanced classes, otherwise). ``None``: equal, except for the
        hard setting's own classes, which get the proportions 45, 18, 59, 25, 69, 28,
        83 of a real set.
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
    >>> import numpy as np
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

    The hard setting: 4 frames, many subjects with 1 to 6 videos each.

    >>> X, y, groups = make_expression_videos(300, setting="hard", random_state=0)
    >>> X.shape
    (300, 4, 48, 48)
    >>> bool(np.bincount(groups).min() >= 1 and np.bincount(groups).max() <= 6)
    True
    """
    if len(image_size) != 2 or not all(
        isinstance(s, Integral) and s >= 12 for s in image_size
    ):
        raise ValueError(
            f"image_size={image_size!r} must be (height, width), two integers >= 12."
        )
    preset = _SETTINGS[setting]
    if n_frames is None:
        n_frames = preset["n_frames"]
    if subject_variation is None:
        subject_variation = preset["subject_variation"]
    if dynamics is None:
        dynamics = preset["dynamics"]
    if sequences_per_subject is None:
        sequences_per_subject = preset["sequences_per_subject"]
    per_subject = _check_per_subject(sequences_per_subject)
    if n_subjects is None and per_subject is None:
        n_subjects = 12
    if classes is None:
        classes = DEFAULT_CLASSES if setting == "easy" else HARD_CLASSES
        if setting == "hard" and weights is None:
            weights = _HARD_WEIGHTS
    parsed = _parse_classes(classes)
    names = tuple(classes)
    n_classes = len(parsed)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if (
            weights.shape != (n_classes,)
            or not np.all(np.isfinite(weights))
            or np.any(weights < 0)
            or weights.sum() <= 0
        ):
            raise ValueError(
                f"weights must hold one nonnegative number per class ({n_classes}), "
                f"not all zero; got {weights.tolist()!r}."
            )
        weights = weights / weights.sum()
    rng = check_random_state(random_state)

    if per_subject is None:
        subjects = [_draw_subject(rng, subject_variation) for _ in range(n_subjects)]
        label_idx = np.arange(n_sequences) % n_classes
        group = (np.arange(n_sequences) // n_classes) % n_subjects
        order = rng.permutation(n_sequences)
        label_idx, group = label_idx[order], group[order]
    else:
        counts = _subject_counts(n_sequences, n_subjects, per_subject, rng)
        subjects = [_draw_subject(rng, subject_variation) for _ in counts]
        label_idx = np.empty(n_sequences, dtype=np.int64)
        group = np.repeat(np.arange(len(counts)), counts)
        start = 0
        for count in counts:
            # Different classes for one person's videos while there are enough.
            distinct = (
                min(int(count), int(np.count_nonzero(weights)))
                if (weights is not None)
                else min(int(count), n_classes)
            )
            picks = rng.choice(n_classes, size=distinct, replace=False, p=weights)
            extra = rng.choice(n_classes, size=count - distinct, p=weights)
            label_idx[start : start + count] = np.concatenate([picks, extra])
            start += count
        order = rng.permutation(n_sequences)
        label_idx, group = label_idx[order], group[order]

    X = np.empty((n_sequences, n_frames, *image_size), dtype=np.float32)
    t = np.arange(n_frames, dtype=np.float64)
    last = n_frames - 1
    for i in range(n_sequences):
        expr, backwards = parsed[label_idx[i]]
        if dynamics == "smooth":
            start = rng.uniform(0.0, 0.3) * last
            duration = rng.uniform(0.35, 0.6) * last
            peak = rng.uniform(0.8, 1.0)
            intensity = peak * _smoothstep((t - start) / duration)
        else:
            peak = rng.uniform(0.8, 1.0)
            intensity = peak * rng.uniform(0.93, 1.0, size=n_frames)
            intensity[0] = 0.0
        if backwards:
            intensity = intensity[::-1]
        # Apex frames are consecutive frames of one held expression: one pose.
        held = intensity > 0 if dynamics == "apex" else None
        X[i] = _render(
            subjects[group[i]], expr, intensity, image_size, noise, rng, held
        )
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


# Pillow modes of integer frames wider than 8 bits, scaled by 65535 ("I" is where
# Pillow reads 16-bit PNGs into in some versions, and 32-bit integer TIFFs).
_WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _wide_frame(img, file) -> np.ndarray:
    """The float32 intensities in [0, 1] of a 16-bit or float frame."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"Float frame {str(file)!r} holds NaN or infinite values; float "
                "frames are read as intensities in [0, 1]."
            )
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            raise ValueError(
                f"Float frame {str(file)!r} holds values outside [0, 1] (min "
                f"{arr.min():.4g}, max {arr.max():.4g}); float frames are read as "
                "intensities in [0, 1]: rescale them, or store 8- or 16-bit frames."
            )
        return arr
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ValueError(
            f"Integer frame {str(file)!r} (mode {img.mode}) holds values outside "
            f"0-65535 (min {arr.min()}, max {arr.max()}); integer frames wider than "
            "8 bits are read as 16-bit intensities: rescale them or store 16-bit "
            "frames."
        )
    return (arr.astype(np.float32) / np.float32(65535.0)).astype(np.float32)


def _read_frame(file: Path, grayscale: bool, image_size) -> np.ndarray:
    """One frame as float32 in [0, 1], ``(h, w)`` or ``(h, w, 3)``; ValueError names
    the file for anything Pillow cannot (or, over its pixel limit, will not) read."""
    from PIL import Image, UnidentifiedImageError

    size = None if image_size is None else (image_size[1], image_size[0])
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a frame
            # that large is refused here too, before it is decoded.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                if img.mode == "F" or img.mode in _WIDE_INT_MODES:
                    frame = _wide_frame(img, file)
                    if size is not None:
                        frame = np.asarray(
                            Image.fromarray(frame).resize(
                                size, Image.Resampling.BILINEAR
                            )
                        )
                    if not grayscale:
                        frame = np.repeat(frame[..., None], 3, axis=-1)
                    return frame
                img = img.convert("L" if grayscale else "RGB")
                if size is not None:
                    img = img.resize(size, Image.Resampling.BILINEAR)
                return np.asarray(img, dtype=np.float32) / 255.0
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(
            f"Cannot read {str(file)!r}: its size is above Pillow's decompression-"
            f"bomb limit ({exc}). Raise PIL.Image.MAX_IMAGE_PIXELS (or set it to "
            "None) to load frames this large from a source you trust."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"Cannot read {str(file)!r} as an image ({exc}).") from exc


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

    Intensities are scaled to [0, 1] by the range of each frame's pixel type: 8-bit
    frames (and any mode Pillow converts to 8 bits) by 255; 16-bit frames (Pillow's
    modes ``"I;16"``, and ``"I"``, the 32-bit integer mode Pillow also reads 16-bit
    files into) by 65535, values outside 0-65535 being an error; floating-point
    frames (mode ``"F"``, e.g. float TIFF) are taken as they are, and must lie in
    [0, 1]. A grayscale 16-bit or float frame read with ``grayscale=False`` is
    repeated over the three channels.

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
        For a folder without label, video or frame folders, an unreadable image, a
        frame above Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``,
        about 89 million pixels; raise it or set it to ``None`` to load larger
        frames), a 16-bit or float frame outside the ranges above, or frames of
        different sizes within one video (without ``image_size``). The message
        names the file.

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
            frames = [_read_frame(file, grayscale, image_size) for file in files]
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
