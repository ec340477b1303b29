"""
==============================================
DeepNMF and scikit-learn's NMF, side by side
==============================================

A one-layer :class:`sknmf.DeepNMF` is the same model as
:class:`sklearn.decomposition.NMF`: same objective, same initialization, same
parameters. This example fits both to the 8×8 colour patches of a photo and
compares

* how fast each one brings the reconstruction error down (error against time), and
* the components they learn, drawn as image patches.

What users feel is the time to reach a given error, not the time per iteration,
so each solver is run for an increasing number of iterations and timed from
scratch each time (initialization included).
"""

# %%
# The data: 8×8 patches of a photo
# --------------------------------
# ``china.jpg`` ships with scikit-learn. Cutting it into non-overlapping 8×8
# patches gives one row of 8·8·3 = 192 values per patch, scaled to [0, 1].
# Both libraries get the very same float32 array.
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_sample_image
from sklearn.decomposition import NMF
from threadpoolctl import threadpool_info

from sknmf import DeepNMF

image = load_sample_image("china.jpg")
h, w = (s - s % 8 for s in image.shape[:2])
patches = (
    image[:h, :w]
    .reshape(h // 8, 8, w // 8, 8, 3)
    .swapaxes(1, 2)
    .reshape(-1, 8 * 8 * 3)
    .astype(np.float32)
    / 255
)
print(f"X: {patches.shape[0]} patches x {patches.shape[1]} values")

n_components = 32
norm_X = np.linalg.norm(patches)

# Timings depend on the machine and on how many threads each library may use.
blas = {pool["internal_api"]: pool["num_threads"] for pool in threadpool_info()}
print(f"threads: torch {torch.get_num_threads()}, BLAS {blas}")

# %%
# Error against time
# ------------------
# Each method is refitted with a growing ``max_iter`` and ``tol=0``, so that it
# runs exactly that many iterations; the relative error is
# :math:`\|X - WH\|_F / \|X\|_F`. All start from the same ``init="nndsvda"``.
methods = {
    "scikit-learn NMF, cd": lambda it: NMF(
        n_components, init="nndsvda", solver="cd", max_iter=it, tol=0
    ),
    "scikit-learn NMF, mu": lambda it: NMF(
        n_components, init="nndsvda", solver="mu", max_iter=it, tol=0
    ),
    "DeepNMF, hals": lambda it: DeepNMF(
        n_components, init="nndsvda", solver="hals", max_iter=it, tol=0
    ),
    "DeepNMF, mu": lambda it: DeepNMF(
        n_components, init="nndsvda", solver="mu", max_iter=it, tol=0
    ),
}
iterations = [4, 12, 36, 108, 324]

curves = {}
for name, make in methods.items():
    times, errors = [], []
    for it in iterations:
        model = make(it)
        start = time.perf_counter()
        model.fit(patches)
        times.append(time.perf_counter() - start)
        errors.append(model.reconstruction_err_ / norm_X)
    curves[name] = (np.array(times), np.array(errors))

fig, ax = plt.subplots(figsize=(7, 4.5))
for name, (times, errors) in curves.items():
    ax.plot(times, errors, "o-", label=name)
ax.set_xscale("log")
ax.set_xlabel("fit time (s)")
ax.set_ylabel(r"relative error $\|X - WH\|_F / \|X\|_F$")
ax.set_title(f"{patches.shape[0]} x {patches.shape[1]} photo patches, k={n_components}")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()

# %%
# The same comparison as numbers: the target is scikit-learn ``cd``'s error after
# its last run, plus 1%; for each method, the shortest measured fit that reached
# it (``-`` when none of its runs did).
target = curves["scikit-learn NMF, cd"][1][-1] * 1.01
print(f"target relative error: {target:.4f}")
print(f"{'method':<24}{'final error':>12}{'time to target (s)':>20}")
for name, (times, errors) in curves.items():
    reached = times[errors <= target]
    to_target = f"{reached.min():.3f}" if reached.size else "-"
    print(f"{name:<24}{errors[-1]:>12.4f}{to_target:>20}")

# %%
# The components, side by side
# ----------------------------
# Same model, same update rule: started from the very same factors
# (``init="custom"``) and run with the multiplicative updates for the same number
# of iterations, both libraries should learn the same components. (Their
# ``"nndsvda"`` starts differ slightly: scikit-learn computes the SVD with a
# randomized algorithm.)
rng = np.random.default_rng(0)
scale = np.sqrt(patches.mean() / n_components)
W0 = (scale * rng.random((patches.shape[0], n_components))).astype(np.float32)
H0 = (scale * rng.random((n_components, patches.shape[1]))).astype(np.float32)
sk = NMF(n_components, init="custom", solver="mu", max_iter=200, tol=0)
sk.fit_transform(patches, W=W0.copy(), H=H0.copy())
dn = DeepNMF(n_components, init="custom", solver="mu", max_iter=200, tol=0)
dn.fit(patches, W=W0.copy(), H=H0.copy())


def unit_rows(a):
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


similarity = (unit_rows(sk.components_) * unit_rows(dn.components_)).sum(axis=1)
print(f"cosine similarity of the k-th components: min {similarity.min():.6f}")
print(
    f"reconstruction error: scikit-learn {sk.reconstruction_err_:.6g}, "
    f"DeepNMF {dn.reconstruction_err_:.6g}"
)


def show(ax_row, components, title):
    for ax, comp in zip(ax_row, components):
        patch = comp.reshape(8, 8, 3)
        ax.imshow(patch / max(patch.max(), 1e-12), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    ax_row[0].set_ylabel(title, rotation=0, ha="right", va="center")


fig, axes = plt.subplots(4, 16, figsize=(11, 3.6))
show(axes[0], sk.components_[:16], "scikit-learn")
show(axes[1], dn.components_[:16], "DeepNMF")
show(axes[2], sk.components_[16:], "scikit-learn")
show(axes[3], dn.components_[16:], "DeepNMF")
fig.suptitle("Components as 8x8 colour patches (each scaled to its maximum)")
fig.subplots_adjust(left=0.1, right=0.99, bottom=0.02, top=0.9, hspace=0.1, wspace=0.1)

# %%
# A cosine similarity of 1 means the same direction: from the same start, with the
# same update rule, the two implementations compute the same factorization up to
# floating-point rounding. What sets solvers apart is how fast they bring the
# error down, which the first figure shows.
plt.show()
