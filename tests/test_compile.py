"""torch.compile: the search is a custom op, so models using the quantizer compile with no graph break."""
import pytest
import torch
import torch.nn as nn

from vqswitch import SwitchableTokenQuantizer
from vqswitch.kernels import nearest_codeword, nearest_group

pytestmark = pytest.mark.slow  # dynamo traces and inductor's C++ compiles: seconds per test


class TinyTokenizer(nn.Module):
    def __init__(self, **qkw):
        super().__init__()
        self.enc = nn.Linear(6, 4)
        self.quantizer = SwitchableTokenQuantizer(num_tokens=5, codebook_size=16, dim=4, router_hidden_dim=8, **qkw)
        self.dec = nn.Linear(4, 6)

    def forward(self, x):
        out = self.quantizer(self.enc(x))
        return self.dec(out.quantized), out.loss, out.indices, out.groups


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("metric", ["l2", "cosine", "dot"])
def test_search_ops_compile_fullgraph(metric):
    z, cb = torch.randn(3, 5, 4), torch.randn(2, 5, 16, 4)
    groups = torch.tensor([1, 0, 1])

    def f(z):
        a = nearest_codeword(z, cb, groups, metric)
        b = nearest_group(z, cb, metric)
        return a.indices, a.distances, b.groups, b.group_errors

    got = torch.compile(f, fullgraph=True, backend="eager")(z)
    want = f(z)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    explain = torch._dynamo.explain(f)(z)
    assert explain.graph_break_count == 0 and explain.graph_count == 1


@pytest.mark.parametrize("kw", [dict(num_groups=1), dict(num_groups=3),
                                dict(num_groups=3, metric="cosine", train_selection="nearest")])
@pytest.mark.parametrize("training", [True, False])
def test_model_with_quantizer_compiles_fullgraph(kw, training):
    torch.manual_seed(0)
    model = TinyTokenizer(**kw).train(training)
    x = torch.randn(4, 5, 6)
    eager = model(x)
    usage = model.quantizer.usage.clone()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    assert torch.equal(got[2], eager[2]) and torch.equal(got[3], eager[3])
    assert torch.allclose(got[0], eager[0], atol=1e-6) and torch.allclose(got[1], eager[1], atol=1e-6)
    if training:  # usage counting ran inside the compiled graph too
        assert model.quantizer.usage.sum() == 2 * usage.sum() > 0
        got[1].backward()
        assert model.quantizer.codebooks.grad is not None and model.enc.weight.grad is not None


def test_inductor_compiles_the_quantizer_on_cpu():
    torch.manual_seed(0)
    model = TinyTokenizer(num_groups=2).eval()
    x = torch.randn(4, 5, 6)
    got = torch.compile(model, fullgraph=True)(x)
    want = model(x)
    assert torch.equal(got[2], want[2]) and torch.allclose(got[0], want[0], atol=1e-5)


def test_nan_still_raises_inside_a_compiled_graph():
    model = TinyTokenizer(num_groups=2).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = torch.randn(2, 5, 6)
    compiled(x)
    x[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        compiled(x)
    # regression: raising inside a no_grad block of a compiled graph used to leave grad mode off
    assert torch.is_grad_enabled()
    with pytest.raises(ValueError, match="NaN or Inf"):
        torch.compile(model.quantizer.encode, backend="eager")(torch.full((1, 5, 4), float("inf")))
    assert torch.is_grad_enabled()
