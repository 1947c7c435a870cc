"""The bit accounting reproduces the paper's numbers, and the formula's edge cases."""
import hypothesis.strategies as st
import pytest
from hypothesis import given

from vqswitch import SwitchableTokenQuantizer, bits_per_image, bpp, index_bits

# (tokenizer, T, K, M, bits per image, bpp at 256x256 to 4 decimals), from the paper's tables
PAPER = [
    ("TiTok-S", 128, 4096, 1, 1536, 0.0234),
    ("TiTok-S", 128, 1024, 16, 1284, 0.0196),
    ("TiTok-S", 128, 256, 256, 1032, 0.0157),
    ("TiTok-L", 32, 4096, 1, 384, 0.0059),
    ("TiTok-L", 32, 256, 256, 264, 0.0040),
    ("MaskGIT-VQGAN", 256, 4096, 1, 3072, 0.0469),
    ("MaskGIT-VQGAN", 256, 1024, 16, 2564, 0.0391),
]


@pytest.mark.parametrize("name,T,K,M,bits,rate", PAPER)
def test_paper_numbers(name, T, K, M, bits, rate):
    q = SwitchableTokenQuantizer(num_tokens=T, codebook_size=K, dim=4, num_groups=M, token_specific=False,
                                 router_hidden_dim=4)
    assert q.bits_per_image == bits == bits_per_image(T, K, M)
    assert round(q.bpp(256, 256), 4) == rate


@given(st.integers(1, 2**40))
def test_index_bits_is_exact_ceil_log2(n):
    b = index_bits(n)
    assert 2 ** b >= n and (b == 0 or 2 ** (b - 1) < n)


def test_edge_cases_and_errors():
    assert index_bits(1) == 0 and index_bits(2) == 1 and index_bits(3) == 2 and index_bits(4096) == 12
    assert bits_per_image(1, 1, 1) == 0
    assert bpp(1032, 256, 256) == 1032 / 65536
    with pytest.raises(ValueError, match="codebook_size"):
        bits_per_image(4, 0, 1)
    with pytest.raises(TypeError, match="num_groups"):
        bits_per_image(4, 2, 1.5)
    with pytest.raises(ValueError, match="height"):
        bpp(10, 0, 4)
