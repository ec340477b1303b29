"""
=========================================
Choosing the layers with a grid search
=========================================

:class:`sknmf.DeepNMF` is a scikit-learn transformer, so its depth and ranks are
hyper-parameters that :class:`~sklearn.model_selection.GridSearchCV` can tune
like any other. Two searches on the handwritten digits:

* **supervised**: ``DeepNMF`` feeds a logistic regression in a
  :class:`~sklearn.pipeline.Pipeline`, and the search keeps the factorization whose
  codes classify best;
* **unsupervised**: no labels, the search compares models by ``DeepNMF.score``,
  the negative loss of encoding and decoding held-out data (higher is better).
"""

# %%
# Supervised: the factorization that classifies best
# --------------------------------------------------
# Each candidate of ``n_components`` is one depth and set of ranks; an integer is a
# one-layer model. The codes are standardized before the classifier.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sknmf import DeepNMF

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, stratify=y, random_state=0
)

pipe = Pipeline(
    [
        # The deep candidates' fine-tuning needs up to ~300 iterations on these
        # 900-row folds: max_iter=400 lets every fit converge.
        ("nmf", DeepNMF(max_iter=400, random_state=0)),
        ("scale", StandardScaler()),
        ("clf", LogisticRegression(max_iter=2000)),
    ]
)
candidates = [8, 16, 32, (32, 16), (32, 16, 8)]
search = GridSearchCV(pipe, {"nmf__n_components": candidates}, cv=3)
search.fit(X_train, y_train)

results = pd.DataFrame(search.cv_results_)
results["n_components"] = [str(c) for c in results["param_nmf__n_components"]]
print(
    results[["n_components", "mean_test_score", "std_test_score", "mean_fit_time"]]
    .round(3)
    .to_string(index=False)
)
print(f"best: {search.best_params_}")
print(
    f"test accuracy of the refitted best pipeline: {search.score(X_test, y_test):.3f}"
)

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.bar(
    results["n_components"],
    results["mean_test_score"],
    yerr=results["std_test_score"],
    capsize=4,
    color="tab:blue",
)
low = (results["mean_test_score"] - results["std_test_score"]).min()
ax.set_ylim(max(0.0, low - 0.05), 1.0)
ax.set_xlabel("n_components (ranks of the layers)")
ax.set_ylabel("cross-validated accuracy")
ax.set_title("DeepNMF + logistic regression on the digits")
fig.tight_layout()

# %%
# Unsupervised: comparing models by ``score``
# -------------------------------------------
# Without a scorer, ``GridSearchCV`` uses ``DeepNMF.score``. On held-out folds it
# measures how well a model encodes and rebuilds data it has not seen.
unsupervised = GridSearchCV(
    DeepNMF(random_state=0),
    {"n_components": [2, 4, 8, 16, 32]},
    cv=3,
)
unsupervised.fit(X_train)

ranks = np.array(unsupervised.param_grid["n_components"])
scores = unsupervised.cv_results_["mean_test_score"]
for rank, score in zip(ranks, scores):
    print(f"n_components={rank:>2}: held-out score {score:.4g}")
print(f"best: {unsupervised.best_params_}")

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.errorbar(ranks, scores, yerr=unsupervised.cv_results_["std_test_score"], marker="o")
ax.set_xscale("log", base=2)
ax.set_xticks(ranks, [str(r) for r in ranks])
ax.set_xlabel("n_components")
ax.set_ylabel("held-out DeepNMF.score (higher is better)")
ax.set_title("Unsupervised search by score")
fig.tight_layout()

# %%
# A reconstruction score tends to improve with the rank, so on its own it favours
# large models: read ``best`` above with that in mind, and look for the rank where
# the curve flattens. Between settings that keep the size of the model and the
# divergence it is measured with (``alpha_W``, ``l1_ratio``, ``loss="layer"`` or
# ``"data"``), ``score`` is a fair judge.
plt.show()
