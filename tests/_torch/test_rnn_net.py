"""Tests of the skorch callbacks of the sequence classifier."""

import numpy as np
import torch
from skorch import NeuralNetClassifier

from sknmf._torch.rnn_net import BatchAccuracy


class _Logits(torch.nn.Module):
    """Predicts class 1 when the first feature is positive (fixed, untrained)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, X):
        return torch.stack([-X[:, 0], X[:, 0]], dim=1) + 0 * self.dummy


def test_batch_accuracy_counts_every_training_sample_once():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(50, 2)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    y[:10] = 1 - y[:10]  # 10 wrong labels: accuracy 0.8 whatever the batches
    net = NeuralNetClassifier(
        _Logits,
        max_epochs=2,
        lr=0.0,
        batch_size=7,
        train_split=None,
        callbacks=[("acc", BatchAccuracy("acc"))],
        verbose=0,
    ).fit(X, y)
    np.testing.assert_allclose(net.history[:, "acc"], [0.8, 0.8])
