"""``DeepFactorChain``: the factors as parameters, and dropping the codes."""

import pickle

import torch

from sknmf._torch.modules import DeepFactorChain


def _chain(n=500, ranks=(6, 3), m=10, dtype=torch.float64):
    widths = [m, *ranks[:-1]]
    Ws = [torch.rand(n, r, dtype=dtype) for r in ranks]
    Hs = [torch.rand(r, w, dtype=dtype) for r, w in zip(ranks, widths)]
    return DeepFactorChain(Ws, Hs), Ws, Hs


def test_factors_are_parameters_without_gradients():
    chain, Ws, Hs = _chain()
    assert chain.n_layers == 2
    params = list(chain.parameters())
    assert len(params) == 4 and not any(p.requires_grad for p in params)
    # The tensors given are the ones held (no copy): solvers update .data.
    assert all(W.data_ptr() == P.data_ptr() for W, P in zip(Ws, chain.W))
    assert all(H.data_ptr() == P.data_ptr() for H, P in zip(Hs, chain.H))


def test_drop_codes_keeps_the_weights_only():
    chain, Ws, Hs = _chain(dtype=torch.float32)
    before = len(pickle.dumps(chain.state_dict()))
    chain.drop_codes()
    for W, r in zip(chain.W, (6, 3)):
        assert W.shape == (0, r) and W.dtype == torch.float32
        assert isinstance(W, torch.nn.Parameter) and not W.requires_grad
    for H, H0 in zip(chain.H, Hs):
        assert torch.equal(H, H0)
    assert chain.n_layers == 2
    # What is saved shrinks to the weights: 500 x 9 codes are gone.
    after = len(pickle.dumps(chain.state_dict()))
    assert before - after >= 500 * 9 * 4
    # Dropping twice is harmless.
    chain.drop_codes()
    assert all(W.shape[0] == 0 for W in chain.W)


def test_drop_codes_keeps_the_device():
    chain, _, _ = _chain()
    chain.drop_codes()
    assert all(W.device == H.device for W, H in zip(chain.W, chain.H))
