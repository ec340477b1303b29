r"""
==================================
What each layer of Deep NMF learns
==================================

A three-layer :class:`sknmf.DeepNMF` factorizes the handwritten digits as
:math:`X \approx W_3 H_3 H_2 H_1`. Each layer factorizes the codes of the layer
above, so the first layer learns parts of the digits (strokes), and deeper layers
learn how parts combine. Drawing the rows of :math:`H_1`, :math:`H_2 H_1` and
:math:`H_3 H_2 H_1` as 8×8 images shows that progression.
"""

# %%
# Fit a three-layer model
# -----------------------
# The 1,797 digits of scikit-learn are 8×8 images with values 0–16, one image per
# row. The layers have 32, 16 and 8 components.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from sknmf import DeepNMF

X, y = load_digits(return_X_y=True)
model = DeepNMF(n_components=(32, 16, 8), random_state=0)
# The default fit converges (its fine-tuning stops on ``tol`` before ``max_iter``).
model.fit(X)
print(f"fine-tuning iterations: {model.n_iter_}")

for layer, err in enumerate(model.layer_errors_, start=1):
    print(f"layer {layer} error: {err:.4g}")
print(f"reconstruction error of the whole model: {model.reconstruction_err_:.4g}")

# %%
# The components of every layer, as images
# ----------------------------------------
# Layer :math:`l` expresses its components in pixels through the product
# :math:`H_l \cdots H_1`; the last one is ``components_``.
products = []
product = None
for H in model.layer_components_:
    product = H if product is None else H @ product
    products.append(product)
assert np.allclose(products[-1], model.components_)

fig = plt.figure(figsize=(8, 8.5))
rows_per_layer = [len(p) // 8 for p in products]
subfigs = fig.subfigures(len(products), 1, height_ratios=rows_per_layer)
for layer, (subfig, comps) in enumerate(zip(subfigs, products), start=1):
    axes = subfig.subplots(len(comps) // 8, 8, squeeze=False)
    for ax, comp in zip(axes.ravel(), comps):
        ax.imshow(comp.reshape(8, 8), cmap="gray_r", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    names = " ".join(f"H{k}" for k in range(layer, 0, -1))
    subfig.suptitle(f"layer {layer}: rows of {names} ({len(comps)} components)")

# %%
# Read the figure from top to bottom: the first layer's components cover a few
# pixels each (dots and short strokes); each deeper product adds such pieces up,
# so its components cover more of the 8×8 frame, towards whole digit shapes in the
# last row.
#
# What the deepest codes say about the digits
# -------------------------------------------
# ``transform`` returns the codes :math:`W_3` of the deepest layer. Averaging them
# over the images of each digit (each code column scaled to its maximum) shows how
# the eight deepest components share out the ten digits.
W = model.transform(X)
W = W / np.maximum(W.max(axis=0), 1e-12)
means = np.stack([W[y == digit].mean(axis=0) for digit in range(10)])

fig, ax = plt.subplots(figsize=(6, 5))
im = ax.imshow(means, cmap="viridis", aspect="auto")
ax.set_xlabel("deepest component")
ax.set_ylabel("digit")
ax.set_yticks(range(10))
ax.set_xticks(range(means.shape[1]))
fig.colorbar(im, label="mean code (scaled)")
ax.set_title("Mean deepest code of each digit")
fig.tight_layout()

# %%
# A bright cell means that images of that digit use that deepest component a lot.
# A row with one bright cell is a digit that the deepest layer captures with a
# single component; the labels were never shown to the model.
plt.show()
