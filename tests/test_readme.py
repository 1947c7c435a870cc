"""The README's quickstart runs as written, and its bits table matches the code."""
import json
import re
from pathlib import Path

import pytest
import torch

from hubcache import make_cached_repo
from vqswitch import bits_per_image, bpp

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no python block"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert "1284 0.0196" in capsys.readouterr().out


def test_bits_table_matches_the_formula():
    rows = re.findall(r"^\| ([\w-]+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| ([\d.]+) \|$", README, flags=re.M)
    assert len(rows) == 8  # every row `vqswitch bits` prints (IBQ included)
    for _, T, K, M, bits, rate in rows:
        b = bits_per_image(int(T), int(K), int(M))
        assert b == int(bits) and f"{bpp(b, 256, 256):.4f}" == rate


@pytest.mark.parametrize("command", ["HF_HUB_OFFLINE=1 python -m pytest -q tests"])
def test_ci_runs_the_readme_test_command(command):
    assert command in README
    assert command in (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()


# ---------------------------------------------------------------- the adapter sections
def _diffusers_repo(root):
    from diffusers import VQModel

    torch.manual_seed(0)  # the CompVis VQ-f4 layout (3 latent channels, 8192 codes), shrunk in width
    model = VQModel(block_out_channels=(32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
                    up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=3, num_vq_embeddings=8192,
                    sample_size=256, norm_num_groups=8)
    model.save_pretrained(root / "vqvae")
    return "CompVis/ldm-celebahq-256", ["vqvae/config.json", "vqvae/diffusion_pytorch_model.safetensors"], (-1.0, 1.0)


def _maskgit_repo(root):
    from vqswitch.adapters.models.maskgit_vqgan import MaskGitVQGAN

    torch.manual_seed(0)  # f16 at 256 px with the public 1024 codes, shrunk in width
    model = MaskGitVQGAN(hidden_channels=32, channel_mult=(1, 1, 1, 1, 1), num_res_blocks=1, z_channels=32,
                         quantized_embed_dim=32)
    torch.save(model.state_dict(), root / "maskgit-vqgan-imagenet-f16-256.bin")
    (root / "config.json").write_text(json.dumps(dict(model.config, _class_name="MaskGitVQGAN")))
    return "fun-research/TiTok", ["maskgit-vqgan-imagenet-f16-256.bin", "config.json"], (0.0, 1.0)


def _titok_repo(root):
    from vqswitch.adapters.models.titok import TiTok

    torch.manual_seed(0)  # TiTok-S-128's tokens (T=128, D=12, l2-normalised), legacy stage-2, shrunk in width;
    # its codebook has 1024 codes (the real one 4096) so that the README's K=1024 is a copy, not a 20 s k-means
    config = {"model": {"vq_model": {
        "codebook_size": 1024, "token_size": 12, "use_l2_norm": True, "commitment_cost": 0.25,
        "vit_enc_model_size": "tiny", "vit_dec_model_size": "tiny", "vit_enc_patch_size": 16, "vit_dec_patch_size": 16,
        "num_latent_tokens": 128, "finetune_decoder": True, "is_legacy": True}},
        "dataset": {"preprocessing": {"crop_size": 256}}}
    overrides = {"model_size_table": {"tiny": {"width": 32, "num_layers": 1, "num_heads": 2}},
                 "legacy_decoder_output_channels": 32,
                 "pixel_decoder_config": {"channel_mult": [1, 1, 1, 1, 1], "num_resolutions": 5, "dropout": 0.0,
                                          "hidden_channels": 32, "num_channels": 3, "num_res_blocks": 1,
                                          "resolution": 256, "z_channels": 32},
                 "pixel_quantizer": {"num_embeddings": 32, "embedding_dim": 32, "commitment_cost": 0.25}}
    TiTok.from_config(config, overrides).save_pretrained(root)
    return ("yucornetto/tokenizer_titok_s128_imagenet", ["config.json", "model.safetensors", "overrides.json"],
            (0.0, 1.0))


def _ibq_repo(root):
    import yaml

    from vqswitch.adapters.models.ibq import IBQ

    torch.manual_seed(0)  # IBQ-1024's f16 grid and 1024 codes, shrunk in width and depth
    ddconfig = dict(double_z=False, z_channels=32, resolution=256, in_channels=3, out_ch=3, ch=32,
                    ch_mult=[1, 1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[16], dropout=0.0)
    init = dict(ddconfig=ddconfig, n_embed=1024, embed_dim=32, beta=0.25, use_entropy_loss=True)
    model = IBQ.from_config({**ddconfig, **{k: v for k, v in init.items() if k != "ddconfig"}})
    torch.save({"state_dict": model.state_dict()}, root / "imagenet256_1024.ckpt")
    (root / "config.yaml").write_text(yaml.safe_dump({"model": {"class_path": "src.IBQ.models.ibqgan.IBQ",
                                                                "init_args": init}}))
    return "TencentARC/IBQ-Tokenizer-1024", ["imagenet256_1024.ckpt", "config.yaml"], (-1.0, 1.0)


STAND_INS = {"diffusers-vqmodel": _diffusers_repo, "maskgit-vqgan": _maskgit_repo, "titok": _titok_repo,
             "ibq": _ibq_repo}
ADAPTER_BLOCKS = dict(re.findall(r"```python adapter=(\S+)\n(.*?)```", README, flags=re.S))


def test_every_adapter_section_is_tested():
    assert sorted(ADAPTER_BLOCKS) == sorted(STAND_INS)


@pytest.mark.slow  # 256-px models (diffusers': a VQModel of tens of seconds); the fast tier checks the blocks exist
@pytest.mark.parametrize("name", sorted(STAND_INS))
def test_adapter_section_runs(name, tmp_path, offline_cache):
    """Each adapter section runs as written against a random-weight stand-in for the public checkpoint,
    cached offline under the real repo id."""
    code = ADAPTER_BLOCKS[name]
    assert len(code.strip().splitlines()) == 5  # import torch, import, load + swap, images = ..., recon = ...
    repo_id, files, (lo, hi) = STAND_INS[name](tmp_path)
    make_cached_repo(offline_cache, repo_id, tmp_path, files=files)
    torch.manual_seed(0)
    scope = {}  # the snippet defines its own images, as a reader copying it needs
    exec(compile(code, f"README.md ({name})", "exec"), scope)
    images = scope["images"]
    assert images.shape == (2, 3, 256, 256) and lo <= float(images.min()) and float(images.max()) <= hi
    assert scope["recon"].shape == images.shape
    with torch.no_grad():
        out = scope["model"](images)
    ref = out.sample if name == "diffusers-vqmodel" else out[0]
    # decode from codes (exact codes) vs the forward pass (straight-through z + (q - z)): rounding only, which the
    # decoder amplifies by an amount that depends on the CPU's kernels (TiTok's: 2.9e-5 of the range on an AMD
    # EPYC, under 1e-5 on another machine); a wrong code would move pixels by a large fraction of the range
    torch.testing.assert_close(scope["recon"], ref, rtol=0, atol=1e-4 * float(ref.abs().max()))
