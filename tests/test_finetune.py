"""Three-stage fine-tuning: what each stage trains and freezes, its losses, the latent cache, checkpoints,
resume after a real kill, NaN stops, and DDP on two gloo processes (slow: the real kill and the processes)."""
from __future__ import annotations

import copy
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from vqswitch._io import temp_prefix
from vqswitch.adapters import load_pretrained, load_swapped, swap_quantizer, swapped_quantizer
from vqswitch.train.finetune import FinetuneConfig, Finetuner, StageConfig, TrainingDiverged

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "maskgit_vqgan_tiny"
TITOK = Path(__file__).parent / "fixtures" / "upstream" / "titok_tiny"


@functools.lru_cache(maxsize=1)
def _swapped_fixture():
    base = load_pretrained(FIXTURE, adapter="maskgit-vqgan")
    torch.manual_seed(0)  # the router's initialisation
    return swap_quantizer(base, num_groups=4, codebook_size=16, token_specific=False, router_hidden_dim=16)


def make_model():
    """A fresh copy of one swapped tiny MaskGIT-VQGAN (the swap's k-means runs once per process)."""
    return copy.deepcopy(_swapped_fixture())


def make_data(n=24, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def config(steps=(3, 3, 3), **kw):
    kw.setdefault("progress", False)
    return FinetuneConfig(stage1=StageConfig(steps=steps[0], lr=1e-2, batch_size=8),
                          stage2=StageConfig(steps=steps[1], lr=1e-2, batch_size=8),
                          stage3=StageConfig(steps=steps[2], lr=1e-3, batch_size=4), log_every=1, **kw)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before, after, prefix):
    keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


# ---------------------------------------------------------------- what each stage trains
def test_stage1_trains_group_codebooks_and_router_only(tmp_path):
    model = make_model()
    before = snapshot(model)
    Finetuner(model, make_data(), tmp_path, config(stages=(1,))).run()
    after = snapshot(model)
    assert changed(before, after, "quantize.quantizer.codebooks")
    assert changed(before, after, "quantize.quantizer.router.")
    assert not changed(before, after, "encoder.") and not changed(before, after, "decoder.")
    assert not swapped_quantizer(model).token_specific
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and all(r["stage"] == 1 for r in lines)
    r = lines[-1]
    q = swapped_quantizer(model)
    # the stage-1/2 loss is the quantizer's: codebook + beta * commitment + weighted router losses
    expected = (r["codebook"] + q.commitment_weight * r["commitment"] + q.balance_weight * r["router_balance"]
                + q.decision_weight * r["router_decision"] + q.quality_weight * r["router_quality"])
    assert r["loss"] == pytest.approx(expected, rel=1e-5)
    assert r["bpp"] == pytest.approx(q.bits_per_image / (32 * 32))


def test_stage2_starts_from_copies_of_the_group_codebooks(tmp_path):
    model = make_model()
    seen = {}

    def grab(ft, stage, step, record):
        if stage == 1 and step == 2:
            seen["groups"] = ft.quantizer.codebooks.detach().clone()

    Finetuner(model, make_data(), tmp_path, config(steps=(2, 0, 0), stages=(1, 2)), callback=grab).run()
    q = swapped_quantizer(model)
    assert q.token_specific and q.codebooks.shape == (4, 64, 16, 32)
    assert torch.equal(q.codebooks, seen["groups"].expand_as(q.codebooks))  # 0 steps: exact copies per token
    model2 = make_model()
    Finetuner(model2, make_data(), tmp_path / "b", config(steps=(2, 2, 0), stages=(1, 2))).run()
    books = swapped_quantizer(model2).codebooks
    assert not torch.equal(books[:, 0], books[:, 1])  # trained per token


def test_stage2_ends_with_the_final_codes_counted(tmp_path):
    model = make_model()
    data = make_data()
    Finetuner(model, data, tmp_path, config(steps=(2, 2, 0), stages=(1, 2))).run()
    q = swapped_quantizer(model)
    from vqswitch.adapters import encode_latents

    codes = q.encode(encode_latents(model, data))
    T, K, M = q.num_tokens, q.codebook_size, q.num_groups
    expected = torch.zeros(M, T, K, dtype=torch.long)
    for g, row in zip(codes.groups.tolist(), codes.indices):
        expected[g, torch.arange(T), row] += 1
    assert torch.equal(q.usage, expected)  # not the sum over training steps (that would count 2 * 8 images)
    assert torch.equal(q.group_counts, torch.bincount(codes.groups, minlength=M))


@pytest.mark.slow  # trains the decoder for several steps
def test_stage3_trains_the_decoder_only(tmp_path):
    model = make_model()
    Finetuner(model, make_data(), tmp_path / "a", config(steps=(2, 2, 0), stages=(1, 2))).run()
    before = snapshot(model)
    Finetuner(model, make_data(), tmp_path / "b", config(stages=(3,))).run()
    after = snapshot(model)
    assert changed(before, after, "decoder.")
    assert not changed(before, after, "encoder.") and not changed(before, after, "quantize.")
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == pytest.approx(r["l2"], rel=1e-6) for r in lines)  # only the L2 weight is set


def test_stage1_refuses_a_token_specific_quantizer(tmp_path):
    model = make_model()
    swapped_quantizer(model).to_token_specific()
    with pytest.raises(ValueError, match="token-shared"):
        Finetuner(model, make_data(), tmp_path, config(stages=(1,))).run()


@pytest.mark.parametrize("make, error, match", [
    (lambda: config(stages=(2, 1)), ValueError, "stages"),
    (lambda: config(stages=()), ValueError, "stages"),
    (lambda: config(stages=(True, 2)), ValueError, "stages"),
    (lambda: config(stages=(1, 4)), ValueError, "stages"),
    (lambda: FinetuneConfig(stage1=StageConfig(steps=-1)), ValueError, "stage1.steps"),
    (lambda: FinetuneConfig(stage2=StageConfig(batch_size=0)), ValueError, "stage2.batch_size"),
    (lambda: FinetuneConfig(stage2=StageConfig(batch_size=2.5)), TypeError, "stage2.batch_size"),
    (lambda: FinetuneConfig(stage3=StageConfig(lr=float("nan"))), ValueError, "stage3.lr"),
    (lambda: FinetuneConfig(stage3=StageConfig(identity_weight=-1)), ValueError, "stage3.identity_weight"),
    (lambda: FinetuneConfig(stage1=StageConfig(weight_decay="0")), TypeError, "stage1.weight_decay"),
    (lambda: FinetuneConfig(stage1={"steps": 1}), TypeError, "stage1 must be a StageConfig"),
    (lambda: FinetuneConfig(seed=-1), ValueError, "seed"),
    (lambda: FinetuneConfig(log_every=True), TypeError, "log_every"),
    (lambda: FinetuneConfig(checkpoint_every=1.0), TypeError, "checkpoint_every"),
])
def test_bad_configurations_are_refused_without_a_model(tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        make().check()
    with pytest.raises(error, match=match):  # the Finetuner checks its config before it looks at the model
        Finetuner(None, None, tmp_path, make())


def test_configuration_check_normalises_and_returns_itself():
    import numpy as np

    cfg = FinetuneConfig(stages=[np.int64(1), 3], stage1=StageConfig(steps=np.int64(2), lr=np.float32(0.5)),
                         seed=np.int64(7))
    assert cfg.check() is cfg
    assert cfg.stages == (1, 3) and type(cfg.stage1.steps) is int and type(cfg.seed) is int
    assert cfg.stage1.lr == 0.5 and type(cfg.stage1.lr) is float
    json.dumps(cfg.to_dict())  # what a checkpoint records
    assert StageConfig().check() == StageConfig()
    with pytest.raises(ValueError, match=r"^stage\.steps"):
        StageConfig(steps=-1).check()
    with pytest.raises(TypeError, match="config must be a FinetuneConfig"):
        Finetuner(None, None, "unused", {"stages": (1,)})


def test_bad_model_and_data(tmp_path):
    base = load_pretrained(FIXTURE, adapter="maskgit-vqgan")
    with pytest.raises(ValueError, match="swap_quantizer first"):
        Finetuner(base, make_data(), tmp_path)
    torch.manual_seed(0)
    model = swap_quantizer(base, num_groups=4, codebook_size=16, token_specific=False, router_hidden_dim=16)
    with pytest.raises(TypeError, match="floating-point"):
        Finetuner(model, iter([torch.zeros(3, 4, 4, dtype=torch.long)]), tmp_path)
    with pytest.raises(ValueError, match=r"data must have shape \(B, C, H, W\)"):
        Finetuner(model, torch.zeros(4, 3, 8), tmp_path)
    with pytest.raises(ValueError, match="data is empty"):
        Finetuner(model, iter([]), tmp_path)
    with pytest.raises(ValueError, match="autocast_dtype"):
        Finetuner(model, make_data(), tmp_path, autocast_dtype=torch.float32)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Finetuner(model, make_data(), tmp_path / "empty", config(), resume=True)


# ---------------------------------------------------------------- latent cache, checkpoints
def test_latent_cache_is_built_once_and_reused(tmp_path):
    calls = []

    def counted():
        model = make_model()
        orig = model.encoder.forward

        def counting(x):
            calls.append(x.shape[0])
            return orig(x)

        model.encoder.forward = counting
        return model

    Finetuner(counted(), make_data(), tmp_path, config(steps=(4, 4, 0), stages=(1, 2))).run()
    assert sum(calls) == 24  # each image encoded once for both stages
    assert (tmp_path / "latents.npy").is_file() and (tmp_path / "latents.json").is_file()
    calls.clear()
    Finetuner(counted(), make_data(), tmp_path / "other",
              config(steps=(1, 0, 0), stages=(1,), cache_latents=False)).run()
    assert sum(calls) == 8  # without the cache: one encoder pass per batch
    calls.clear()
    Finetuner(counted(), make_data(), tmp_path, config(steps=(2, 0, 0), stages=(1,))).run()
    assert calls == []  # a matching cache is reused


def test_model_digest_is_exact_and_leaves_out_the_excluded_modules():
    from vqswitch.train.latents import model_digest

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    twin = copy.deepcopy(net)
    assert model_digest(net) == model_digest(twin)
    with torch.no_grad():
        net[0].weight[0, :2] = net[0].weight[0, :2].flip(0).clone()  # the same sum, another model
    assert model_digest(net) != model_digest(twin)
    net = copy.deepcopy(twin)
    net[1].running_mean[0] += 1.0  # a buffer
    assert model_digest(net) != model_digest(twin)
    net = copy.deepcopy(twin)
    with torch.no_grad():
        net[2].weight.add_(1.0)
    assert model_digest(net) != model_digest(twin)
    assert model_digest(net, exclude=[net[2]]) == model_digest(twin, exclude=[twin[2]])


def test_latent_cache_is_rebuilt_when_a_frozen_tensor_beside_the_encoder_changes(tmp_path):
    """The key is a digest of every tensor the encoder path may read: TiTok's ``latent_tokens`` (a parameter of
    the model, not of its encoder) and any buffer count, the quantizer's and the decoder's (which training
    changes) do not. A key summing ``encoder.parameters()`` reused a stale cache here."""
    torch.manual_seed(0)
    model = swap_quantizer(load_pretrained(TITOK, adapter="titok"), num_groups=2, codebook_size=16,
                           token_specific=False, router_hidden_dim=8)
    model.register_buffer("probe", torch.zeros(3))  # a buffer outside the encoder
    encoded = []
    model.encoder.register_forward_hook(lambda module, args, out: encoded.append(out.shape[0]))
    data = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    cfg = FinetuneConfig(stages=(1,), stage1=StageConfig(steps=1, lr=1e-2, batch_size=4), log_every=0,
                         progress=False)

    def encoder_passes():
        encoded.clear()
        Finetuner(model, data, tmp_path, cfg).run()  # also trains the quantizer: not part of the key
        return sum(encoded)

    assert encoder_passes() == 4
    assert encoder_passes() == 0  # reused
    with torch.no_grad():
        model.latent_tokens.add_(1e-3)
    assert encoder_passes() == 4
    assert encoder_passes() == 0
    model.probe.fill_(1.0)
    assert encoder_passes() == 4


@pytest.mark.slow  # trains the decoder for several steps
def test_latent_cache_stays_valid_across_a_resume_in_stage3(tmp_path, monkeypatch):
    cfg = config(steps=(1, 1, 6), checkpoint_every=2)  # stage 3 sees 6 x 4 = 24 images: it reads the cache

    def stop(finetuner, stage, step, record):
        if stage == 3 and step == 3:  # the decoder and the quantizer have trained since the cache was built
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Finetuner(make_model(), make_data(), tmp_path, cfg, callback=stop).run()
    encoded = []
    real = Finetuner._encode
    monkeypatch.setattr(Finetuner, "_encode", lambda self, x: encoded.append(len(x)) or real(self, x))
    resumed = Finetuner(make_model(), make_data(), tmp_path, cfg, resume=True)
    assert (resumed.stage_index, resumed.step) == (2, 2)
    resumed.run()
    assert encoded == []  # the resumed stage 3 read the cache the killed run built


@pytest.mark.slow  # trains the decoder for several steps
def test_checkpoints_after_each_stage_load_back(tmp_path):
    model = Finetuner(make_model(), make_data(), tmp_path, config(checkpoint_every=2)).run()
    root = tmp_path / "checkpoints"
    names = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert names == ["latest", "periodic-stage3-step0000002", "stage1", "stage2", "stage3"]
    assert (root / "latest").read_text() == "stage3"
    again = load_swapped(root / "stage3" / "model")
    sa, sb = model.state_dict(), again.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- resume after a real kill
KILLED_RUN = r"""
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
from test_finetune import config, make_data, make_model
from vqswitch.train.finetune import Finetuner
torch.set_num_threads(1)

def die(ft, stage, step, record):
    if stage == 2 and step == 3:  # after the periodic checkpoint of step 2, before stage 2 ends
        os.kill(os.getpid(), signal.SIGKILL)

Finetuner(make_model(), make_data(), {run!r}, config(steps=(3, 4, 3), checkpoint_every=2), callback=die).run()
"""


@pytest.mark.slow
def test_resume_after_kill_reaches_the_same_weights(tmp_path):
    torch.set_num_threads(1)
    reference = Finetuner(make_model(), make_data(), tmp_path / "ref", config(steps=(3, 4, 3))).run()
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), run=str(tmp_path / "run"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    latest = (tmp_path / "run" / "checkpoints" / "latest").read_text()
    assert latest == "periodic-stage2-step0000002"
    resumed = Finetuner(make_model(), make_data(), tmp_path / "run", config(steps=(3, 4, 3), checkpoint_every=2),
                        resume=True).run()
    ra, rb = reference.state_dict(), resumed.state_dict()
    assert ra.keys() == rb.keys()
    for k in ra:
        assert torch.equal(ra[k], rb[k]), k


def test_resume_refuses_another_configuration(tmp_path):
    Finetuner(make_model(), make_data(), tmp_path, config(steps=(1, 0, 0), stages=(1,))).run()
    with pytest.raises(ValueError, match=r"settings the run started with.*stage1\.steps: 1 -> 2"):
        Finetuner(make_model(), make_data(), tmp_path, config(steps=(2, 0, 0), stages=(1,)), resume=True)


# ---------------------------------------------------------------- NaN stops the run
@pytest.mark.slow  # trains the decoder for several steps
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(ft, stage, step, record):
        if stage == 3 and step == 3:  # after the periodic checkpoint of step 2
            with torch.no_grad():
                next(ft.model.decoder.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"stage 3, step 4: the loss is nan.*periodic-stage3-step0000002"):
        Finetuner(make_model(), make_data(), tmp_path, config(steps=(1, 1, 6), checkpoint_every=2),
                  callback=poison).run()
    assert (tmp_path / "checkpoints" / "latest").read_text() == "periodic-stage3-step0000002"
    good = load_swapped(tmp_path / "checkpoints" / "periodic-stage3-step0000002" / "model")
    assert all(bool(torch.isfinite(p).all()) for p in good.parameters())


@pytest.mark.slow  # trains the decoder for several steps
def test_non_finite_weights_are_never_checkpointed(tmp_path):
    def poison(ft, stage, step, record):
        if stage == 3 and step == 2:  # just before the periodic checkpoint of step 2
            with torch.no_grad():
                next(ft.model.decoder.parameters()).fill_(float("inf"))

    with pytest.raises(TrainingDiverged, match="weights became NaN or Inf.*decoder"):
        Finetuner(make_model(), make_data(), tmp_path, config(steps=(1, 1, 6), checkpoint_every=2),
                  callback=poison).run()
    assert (tmp_path / "checkpoints" / "latest").read_text() == "stage2"


# ---------------------------------------------------------------- DDP, two CPU ranks
def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = Finetuner(make_model(), make_data(), os.path.join(out_dir, "run"), config(steps=(2, 2, 2))).run()
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, os.path.join(out_dir, f"r{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_ranks_end_with_identical_weights():
    with tempfile.TemporaryDirectory() as d:
        for attempt in range(2):  # one retry for a rank killed by a signal (see tests/test_router.py)
            try:
                mp.start_processes(_ddp_worker, args=(2, os.path.join(d, f"init{attempt}"), d), nprocs=2, join=True,
                                   start_method="spawn")
                break
            except mp.ProcessExitedException:
                if attempt:
                    raise
        r0, r1 = (torch.load(os.path.join(d, f"r{i}.pt")) for i in range(2))
        start = make_model().state_dict()
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert not torch.equal(r0["decoder.conv_in.weight"], start["decoder.conv_in.weight"])
    # stage 2 ends by recounting the codes of the training set: each image once, over both ranks' shares
    assert int(r0["quantize.quantizer.group_counts"].sum()) == len(make_data())
    assert int(r0["quantize.quantizer.usage"].sum()) == len(make_data()) * 64


# ---------------------------------------------------------------- a resume cleans up after the killed run
@pytest.mark.slow  # trains the decoder for several steps
def test_resume_cleans_stale_temporaries_and_truncates_the_log(tmp_path):
    torch.set_num_threads(1)
    cfg = config(steps=(3, 4, 1), checkpoint_every=2)
    reference = tmp_path / "ref"
    Finetuner(make_model(), make_data(), reference, cfg).run()

    def die(finetuner, stage, step, record):
        if stage == 2 and step == 3:  # after the periodic checkpoint of step 2, and after step 3 was logged
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Finetuner(make_model(), make_data(), run, cfg, callback=die).run()
    root = run / "checkpoints"
    # what a kill at the wrong moment leaves: atomic_write_bytes' temporary of `latest`, a half-written
    # checkpoint folder (vqswitch._io's temporaries, of a process that no longer runs), and a torn last line of the log
    dead = _dead_pid()
    (root / f"{temp_prefix('latest', dead)}k1ll3d.tmp").write_bytes(b"periodic-stage2-step0000004")
    (root / f"{temp_prefix('periodic-stage2-step0000004', dead)}k1ll3d.tmp" / "model").mkdir(parents=True)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"stage": 2, "st')
    resumed = Finetuner(make_model(), make_data(), run, cfg, resume=True)
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []
    resumed.run()

    def steps(path):
        return [(r["stage"], r["step"]) for r in map(json.loads, (path / "metrics.jsonl").read_text().splitlines())]

    got = steps(run)
    assert len(got) == len(set(got)), got  # no (stage, step) twice
    assert got == steps(reference)
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_resume_restores_a_checkpoint_caught_between_its_two_renames(tmp_path):
    cfg = config(steps=(2, 0, 0), stages=(1,))
    Finetuner(make_model(), make_data(), tmp_path, cfg).run()
    root = tmp_path / "checkpoints"
    os.replace(root / "stage1", root / ".stage1.old")  # killed after moving the old one aside
    resumed = Finetuner(make_model(), make_data(), tmp_path, cfg, resume=True)
    assert (root / "stage1" / "trainer.pt").is_file() and not (root / ".stage1.old").exists()
    assert resumed.stage_index == 1
