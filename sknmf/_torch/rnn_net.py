"""skorch pieces for the sequence classifier (no scikit-learn imports here)."""

from __future__ import annotations

import torch
from skorch.callbacks import Callback


class BatchAccuracy(Callback):
    """Record the epoch's accuracy from the logits the training batches produced.

    skorch's ``EpochScoring`` goes through a scikit-learn scorer every epoch, which
    costs more than a whole epoch of a small recurrent network; counting correct
    arg-maxes as the batches go by is free. Like any on-the-fly training accuracy, it is
    measured while the weights still change within the epoch.

    Parameters
    ----------
    name : str, default="train_acc"
        Key written to the net's history.
    on_train : bool, default=True
        Count training batches (``True``) or validation batches (``False``).
    """

    def __init__(self, name: str = "train_acc", on_train: bool = True) -> None:
        self.name = name
        self.on_train = on_train

    def on_epoch_begin(self, net, **kwargs) -> None:
        self.correct_ = 0
        self.total_ = 0

    def on_batch_end(self, net, batch=None, training=None, **kwargs) -> None:
        if training != self.on_train or kwargs.get("y_pred") is None:
            return
        y_pred = kwargs["y_pred"]
        if isinstance(y_pred, tuple | list):
            y_pred = y_pred[0]
        y_true = batch[1]
        with torch.no_grad():
            hits = (y_pred.argmax(dim=1).cpu() == torch.as_tensor(y_true).cpu()).sum()
        self.correct_ += int(hits)
        self.total_ += len(y_true)

    def on_epoch_end(self, net, **kwargs) -> None:
        if self.total_:
            net.history.record(self.name, self.correct_ / self.total_)
