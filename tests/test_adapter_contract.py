"""The adapter contract itself (vqswitch.adapters.contract): the Adapter ABC, each shim's settings declared once,
the router-loss term added in one place. Fast: no tokenizer is built, only quantizers and stand-in modules."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from vqswitch import SwitchableTokenQuantizer
from vqswitch.adapters import Adapter, QuantizerShim, adapters
from vqswitch.adapters.contract import GridAdapter
from vqswitch.adapters.diffusers_vq import VQModelQuantizerShim
from vqswitch.adapters.generic import GenericQuantizerShim
from vqswitch.adapters.ibq import IBQQuantizerShim
from vqswitch.adapters.maskgit import MaskGitQuantizerShim
from vqswitch.adapters.titok import TiTokQuantizerShim

SHIMS = [VQModelQuantizerShim, MaskGitQuantizerShim, TiTokQuantizerShim, IBQQuantizerShim, GenericQuantizerShim]


def quantizer(**kw) -> SwitchableTokenQuantizer:
    return SwitchableTokenQuantizer(num_tokens=4, codebook_size=8, dim=3, **kw)


def test_adapter_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        Adapter()

    class Incomplete(GridAdapter):  # a family that forgot down_factor and the rest
        name = "incomplete"

        def matches(self, model):
            return False

    with pytest.raises(TypeError, match="down_factor"):
        Incomplete()
    for adapter in adapters().values():  # every registered family implements the whole contract
        assert isinstance(adapter, Adapter) and not getattr(type(adapter), "__abstractmethods__", None)


@pytest.mark.parametrize("shim_class", SHIMS, ids=lambda c: c.__name__)
def test_settings_are_declared_once(shim_class):
    q = quantizer()
    shim = shim_class(q)
    assert shim.settings() == dict(shim_class.SETTINGS)  # the defaults, as attributes
    assert shim_class.settings_of(shim) == shim.settings()
    assert shim_class.settings_of(nn.Identity()) == dict(shim_class.SETTINGS)  # an upstream module lacking them all
    with pytest.raises(TypeError, match="no setting"):
        shim_class(q, not_a_setting=1)


def test_settings_come_from_the_upstream_quantizer():
    upstream = nn.Module()
    upstream.beta, upstream.use_entropy_loss, upstream.entropy_temperature = 0.5, 1, 0.02  # types follow the defaults
    shim = IBQQuantizerShim.from_upstream(quantizer(metric="dot"), upstream)
    assert shim.settings() == {"beta": 0.5, "use_entropy_loss": True, "entropy_temperature": 0.02,
                               "sample_minimization_weight": 1.0, "batch_maximization_weight": 1.0}
    assert type(shim.use_entropy_loss) is bool and type(shim.beta) is float
    assert IBQQuantizerShim(quantizer(metric="dot"), **shim.settings()).settings() == shim.settings()  # a saved config


def test_generic_shim_settings_are_checked():
    with pytest.raises(ValueError, match="layout"):
        GenericQuantizerShim(quantizer(), layout="(B, H, W, D)")
    with pytest.raises(ValueError, match="straight_through"):
        GenericQuantizerShim(quantizer(), straight_through="nope")
    assert GenericQuantizerShim(quantizer(), layout="(b,n,d)").layout == "(B, N, D)"


def test_router_loss_is_added_once_in_the_base():
    loss = torch.tensor(1.5)
    plain = QuantizerShim(quantizer())
    assert plain.add_router_loss(loss, None) is loss  # no router: upstream's loss itself
    q = quantizer(num_groups=2, router_hidden_dim=4, balance_weight=0.5, decision_weight=0.25, quality_weight=2.0)
    shim = QuantizerShim(q)
    out = q(torch.randn(3, 4, 3))
    want = loss + (0.5 * out.router_balance_loss + 0.25 * out.router_decision_loss + 2.0 * out.router_quality_loss)
    assert torch.equal(shim.add_router_loss(loss, out), want)
