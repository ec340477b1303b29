"""
======================================================================
Facial expressions over time: Deep NMF frame codes and a recurrent net
======================================================================

Each video frame of a face is encoded by (deep) nonnegative matrix factorisation,
and a recurrent network (:class:`~sknmf.ExpressionRNN`) reads the sequence of codes
to recognise the expression. :class:`~sknmf.FrameEncoder` applies the NMF to every
frame and keeps one row per video, so the whole model is one scikit-learn
:class:`~sklearn.pipeline.Pipeline` that :class:`~sklearn.model_selection.GridSearchCV`
tunes with subject-wise folds.

The data are synthetic (:func:`~sknmf.datasets.make_expression_videos`): every subject
has their own face, and two classes, a smile that appears (``smile-onset``) and one that
fades (``smile-offset``), contain exactly the same kinds of frames; only their order
differs. A model that averages frame codes over time cannot separate them; the recurrent
network can. Real videos stored as ``root/<label>/<video>/<frame>.png`` load with
:func:`~sknmf.datasets.load_expression_folder` and go through the same code.
"""

# %%
# Synthetic expression videos
# ---------------------------
# 72 subjects, one video of each of 8 classes per subject, 6 frames of 24x24 pixels.
# ``groups`` holds the subject of each video: a third of the subjects is kept apart
# for the final test, so no face is seen in both training and testing.
import time
from shutil import rmtree
from tempfile import mkdtemp

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import ConfusionMatrixDisplay, classification_report
from sklearn.model_selection import GridSearchCV, GroupKFold, GroupShuffleSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from sknmf import DeepNMF, ExpressionRNN, FrameEncoder
from sknmf.datasets import make_expression_videos

X, y, groups = make_expression_videos(
    576, n_frames=6, image_size=(24, 24), n_subjects=72, random_state=0
)
train, test = next(
    GroupShuffleSplit(1, test_size=1 / 3, random_state=0).split(X, y, groups)
)
X_train, y_train, g_train = X[train], y[train], groups[train]
X_test, y_test = X[test], y[test]
classes = np.unique(y)
print(f"{len(X_train)} training videos, {len(X_test)} test videos of new subjects")

fig, axes = plt.subplots(len(classes), X.shape[1], figsize=(6, 8))
for row, label in zip(axes, classes):
    video = X[np.flatnonzero(y == label)[0]]
    for ax, frame in zip(row, video):
        ax.imshow(frame, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    row[0].set_ylabel(label, rotation=0, ha="right", fontsize=8)
fig.suptitle("One video per class (time runs to the right)")
plt.show()

# %%
# A pipeline, tuned with subject-wise folds
# -----------------------------------------
# ``FrameEncoder(DeepNMF(...))`` turns every 24x24 frame into a short nonnegative code;
# ``ExpressionRNN``, a GRU trained by skorch, reads the codes in order. The grid tunes
# the number of NMF components and the size of the recurrent state; ``GroupKFold``
# keeps each subject's videos in one fold. With ``random_state`` set, every fit is
# reproducible. ``memory`` caches the fitted frame encoder, so each NMF is fitted once
# per fold and number of components, whatever the size of the recurrent net.
cache = mkdtemp()
pipe = Pipeline(
    [
        ("frames", FrameEncoder(DeepNMF(32, random_state=0))),
        ("rnn", ExpressionRNN(hidden_size=64, random_state=0)),
    ],
    memory=cache,
)
grid = GridSearchCV(
    pipe,
    {"frames__transformer__n_components": [16, 32], "rnn__hidden_size": [32, 64]},
    cv=GroupKFold(3),
    n_jobs=2,
)
start = time.perf_counter()
grid.fit(X_train, y_train, groups=g_train)
search_time = time.perf_counter() - start
for params, score in zip(
    grid.cv_results_["params"], grid.cv_results_["mean_test_score"]
):
    print(f"{params}: cross-validated accuracy {score:.3f}")
rmtree(cache)
print(f"best: {grid.best_params_}")
print(
    f"search: {search_time:.1f} s, refit of the best pipeline: {grid.refit_time_:.1f} s"
)

# %%
# What the frame encoder learned
# ------------------------------
# The rows of ``components_`` are nonnegative images: parts of faces (eyes, brows,
# mouth shapes, face outlines, lighting) that add up to every frame.
nmf = grid.best_estimator_.named_steps["frames"].transformer_
components = nmf.components_.reshape(-1, 24, 24)
fig, axes = plt.subplots(4, 8, figsize=(8, 4.4))
for ax, part in zip(axes.ravel(), components):
    ax.imshow(part, cmap="gray")
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("NMF components of the face frames")
plt.show()

# %%
# Accuracy on unseen subjects
# ---------------------------
y_pred = grid.predict(X_test)
print(classification_report(y_test, y_pred, digits=3))
ConfusionMatrixDisplay.from_predictions(
    y_test, y_pred, xticks_rotation=45, colorbar=False
)
plt.title("Pipeline on unseen subjects")
plt.tight_layout()
plt.show()

# %%
# The order-blind baseline
# ------------------------
# Same frame codes, averaged over time, then a logistic regression. It recognises
# expressions whose frames differ, but a smile that appears and a smile that fades give
# the same average: on that pair it stays at chance, where the recurrent net does not.
encoder = grid.best_estimator_.named_steps["frames"]
codes_train, codes_test = encoder.transform(X_train), encoder.transform(X_test)
baseline = make_pipeline(
    FunctionTransformer(lambda codes: codes.mean(axis=1)),
    StandardScaler(),
    LogisticRegression(max_iter=2000),
)
start = time.perf_counter()
baseline.fit(codes_train, y_train)
baseline_time = time.perf_counter() - start
y_base = baseline.predict(codes_test)
pair = np.isin(y_test, ["smile-onset", "smile-offset"])
print(f"{'model':<28}{'all classes':>12}{'onset/offset':>14}")
for name, pred in [
    ("NMF codes + ExpressionRNN", y_pred),
    ("time-average + logistic", y_base),
]:
    overall, on_pair = np.mean(pred == y_test), np.mean(pred[pair] == y_test[pair])
    print(f"{name:<28}{overall:>12.3f}{on_pair:>14.3f}")
print(f"baseline fit on precomputed codes: {baseline_time:.2f} s")

# %%
# Going deeper
# ------------
# A two-layer Deep NMF (64 parts, combined into 32 codes) as the frame encoder, same
# recurrent network, same training and test subjects.
deep = Pipeline(
    [
        ("frames", FrameEncoder(DeepNMF((64, 32), random_state=0))),
        ("rnn", ExpressionRNN(hidden_size=64, random_state=0)),
    ]
)
start = time.perf_counter()
deep.fit(X_train, y_train)
deep_time = time.perf_counter() - start
y_deep = deep.predict(X_test)
print(
    f"Deep NMF (64, 32) + ExpressionRNN: accuracy {np.mean(y_deep == y_test):.3f}, "
    f"onset/offset {np.mean(y_deep[pair] == y_test[pair]):.3f}, fit {deep_time:.1f} s"
)

# %%
# Learning curve
# --------------
# skorch records the loss and the training accuracy of every epoch in ``history_``.
history = grid.best_estimator_.named_steps["rnn"].history_
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(history[:, "epoch"], history[:, "train_loss"], label="training loss")
ax.plot(history[:, "epoch"], history[:, "train_acc"], label="training accuracy")
ax.set_xlabel("epoch")
ax.legend()
ax.set_title("ExpressionRNN training")
plt.tight_layout()
plt.show()
