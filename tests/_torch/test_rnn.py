"""Tests of the pure-torch sequence classifier: packing, private randomness."""

import pytest
import torch

from sknmf._torch.rnn import PrivateDropout, SequenceClassifier


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_reaches_the_recurrence(cell, bidirectional):
    # Reference: each sequence run alone at its true length, no padding.
    module = SequenceClassifier(
        3, 4, hidden_size=5, cell=cell, num_layers=2, bidirectional=bidirectional
    ).eval()
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([4, 1, 3])
    X = torch.rand(3, 4, 3, generator=gen)
    garbage = X.clone()
    for i, n in enumerate(lengths):
        garbage[i, n:] = 1e3  # whatever sits in the padding must not matter
    with torch.no_grad():
        batch = module(garbage, lengths)
        alone = torch.cat(
            [
                module(X[i : i + 1, :n], lengths[i : i + 1])
                for i, n in enumerate(lengths)
            ]
        )
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-6)
    assert module.embed(X, lengths).shape == (3, 5 * (2 if bidirectional else 1))


def test_same_seed_same_parameters_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a = SequenceClassifier(3, 2, hidden_size=4, dropout=0.5, seed=7)
    b = SequenceClassifier(3, 2, hidden_size=4, dropout=0.5, seed=7)
    c = SequenceClassifier(3, 2, hidden_size=4, dropout=0.5, seed=8)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not all(
        torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters())
    )
    a.train()
    a(torch.rand(2, 3, 3, generator=torch.Generator()), torch.tensor([3, 2]))
    assert torch.equal(state, torch.random.get_rng_state())


def test_private_dropout_is_inverted_dropout():
    drop = PrivateDropout(0.25, seed=0)
    x = torch.ones(20000)
    out = drop(x)
    kept = out != 0
    # Kept values are scaled by 1/(1 - p); about 1 - p of them are kept.
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.02
    assert torch.equal(drop.eval()(x), x)


def test_unknown_cell_is_a_clear_error():
    with pytest.raises(ValueError, match="cell='tcn'"):
        SequenceClassifier(3, 2, cell="tcn")


def test_linear_path_alone_before_training():
    # With a linear path the read-out of the recurrence starts at zero: the untrained
    # module is exactly the given linear model, whatever the frames say.
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    bias = torch.randn(3, generator=gen, dtype=torch.float64)
    module = SequenceClassifier(
        2, 3, hidden_size=5, skip_weight=weight.numpy(), skip_bias=bias.numpy()
    ).eval()
    X = torch.rand(6, 4, 2, generator=gen)
    lengths = torch.tensor([4, 1, 3, 2, 4, 4])
    skip = torch.randn(6, 4, generator=gen)
    expected = skip.double() @ weight.T + bias  # independent float64 reference
    with torch.no_grad():
        out = module(X, lengths, skip)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    # Buffers, not parameters: no optimizer can move the linear model.
    names = {name for name, _ in module.named_parameters()}
    assert not any(name.startswith("skip") for name in names)
    assert {"skip_weight", "skip_bias"} <= set(module.state_dict())
    assert module.n_skip == 4


def test_linear_path_input_is_checked():
    module = SequenceClassifier(2, 3, hidden_size=4, skip_weight=torch.zeros(3, 4))
    X, lengths = torch.rand(2, 3, 2), torch.tensor([3, 2])
    with pytest.raises(ValueError, match=r"shape \(batch=2, 4"):
        module(X, lengths)
    with pytest.raises(ValueError, match="skip must be"):
        module(X, lengths, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="no linear path"):
        SequenceClassifier(2, 3, hidden_size=4)(X, lengths, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"skip_weight must have shape \(n_classes=3"):
        SequenceClassifier(2, 3, skip_weight=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"skip_bias must have shape \(3,\)"):
        SequenceClassifier(2, 3, skip_weight=torch.zeros(3, 4), skip_bias=[0.0])
