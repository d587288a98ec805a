"""MS-VAE: shapes for any T, subspace layout and swap, masked multi-task loss, ablation."""
import math

import pytest
import torch
import torch.nn.functional as F

from hldm.clinical.vocabulary import SUBSPACES, TIMINGS
from hldm.models.ms_vae import MSVAE, MSVAEConfig, kl_beta, subspace_slice, swap

TINY = dict(channels=(8, 16, 16), aux_hidden=8)


def tiny(**kw) -> MSVAE:
    torch.manual_seed(0)
    return MSVAE(MSVAEConfig(**{**TINY, **kw}))


def labels(B: int = 4, T: int = 37) -> dict:
    s = torch.zeros(B, T)
    s[:, 3:8] = 1.0
    s[:, 20:24] = 1.0
    s[1] = float("nan")  # segmentation unknown for item 1
    return {
        "heart_rate": torch.tensor([80.0, float("nan"), 120.0, 95.0]),
        "s1s2": s,
        "murmur": torch.tensor([0.0, 1.0, 1.0, -1.0]),
        "grade": torch.tensor([0, 3, -1, 2]),
        "timing": torch.tensor([-1, 3, 0, -1]),
        "noise_level": torch.tensor([0.1, float("nan"), 0.3, 0.2]),
    }


@pytest.mark.parametrize("T", [37, 40, 1, 125])
def test_shapes_for_any_length(T):
    vae = tiny().eval()
    feat = torch.randn(2, 129, T)
    mu, logvar = vae.encode(feat)
    L = math.ceil(T / 4)
    assert mu.shape == logvar.shape == (2, 16, L)
    out = vae(feat)
    assert out["recon"].shape == feat.shape
    assert vae.decode(mu).shape == (2, 129, 4 * L)
    assert vae.predict_s1s2(out["z"]).shape == (2, L)
    assert ((vae.predict_s1s2(out["z"]) >= 0) & (vae.predict_s1s2(out["z"]) <= 1)).all()
    assert out["aux"]["grade"].shape == (2, 7) and out["aux"]["timing"].shape == (2, len(TIMINGS))


def test_rhythm_subspace_is_coarser_in_time():
    vae = tiny().eval()
    mu, _ = vae.encode(torch.randn(2, 129, 64))  # L = 16
    r = mu[:, subspace_slice("rhythm")]
    assert torch.equal(r[..., 0::2], r[..., 1::2])
    assert not torch.equal(mu[:, 4:, 0::2], mu[:, 4:, 1::2])  # other subspaces keep full rate
    # the decoder only reads rhythm at the coarse scale: a zero-mean wiggle inside a pair is invisible
    wiggle = torch.zeros_like(mu)
    wiggle[:, subspace_slice("rhythm"), 0::2] = 1.0
    wiggle[:, subspace_slice("rhythm"), 1::2] = -1.0
    assert torch.allclose(vae.decode(mu + wiggle), vae.decode(mu), atol=1e-5)
    assert not torch.allclose(vae.decode(mu + wiggle.abs()), vae.decode(mu), atol=1e-3)


def test_swap_moves_only_the_chosen_subspace():
    z_a, z_b = torch.randn(2, 16, 9), torch.randn(2, 16, 9)
    for name in SUBSPACES:
        z = swap(z_a, z_b, name)
        sl = subspace_slice(name)
        assert torch.equal(z[:, sl], z_b[:, sl])
        keep = torch.ones(16, dtype=torch.bool)
        keep[sl] = False
        assert torch.equal(z[:, keep], z_a[:, keep])
    assert subspace_slice("murmur") == slice(8, 12)
    assert torch.equal(MSVAE.swap(z_a, z_b, "noise"), swap(z_a, z_b, "noise"))
    with pytest.raises(ValueError, match="rhythm, s1s2, murmur, noise"):
        swap(z_a, z_b, "pitch")
    with pytest.raises(ValueError, match="shape"):
        swap(z_a, z_b[..., :4], "noise")


def test_loss_finite_and_gradients_reach_every_parameter():
    vae = tiny().train()
    total, parts = vae.loss(torch.randn(4, 129, 37), labels(), 0.01)
    assert torch.isfinite(total)
    assert set(parts) == {"recon", "sharp", "kl", "beta", "corr", "hr", "s1s2", "murmur", "grade", "timing",
                          "noise", "disentangle", "total"}
    assert all(math.isfinite(v) for v in parts.values())
    assert parts["corr"] > 0 and parts["s1s2"] > 0
    total.backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_sharpness_charges_the_error_of_edges_and_texture_not_just_of_levels():
    vae = tiny().eval()
    feat = torch.randn(2, 129, 40)
    _, plain = vae.loss(feat, None, 0.0)
    vae.config.sharpness = 2.0
    _, sharp = vae.loss(feat, None, 0.0)
    assert plain["sharp"] == 0.0 and sharp["sharp"] > 0
    assert sharp["total"] == pytest.approx(plain["total"] + 2.0 * sharp["sharp"], rel=1e-5)
    # a level offset (the same error in every bin and frame) costs nothing extra; texture does
    recon = vae(feat)["recon"].detach()
    vae_out = vae.forward
    vae.forward = lambda x: {**vae_out(x), "recon": x - 0.3}
    _, level = vae.loss(feat, None, 0.0)
    vae.forward = lambda x: {**vae_out(x), "recon": x + 0.3 * torch.randn_like(x)}
    _, texture = vae.loss(feat, None, 0.0)
    vae.forward = vae_out
    assert level["sharp"] == pytest.approx(0.0, abs=1e-6) and texture["sharp"] > 0.3
    assert recon.shape == feat.shape


def test_unknown_labels_are_masked_out():
    vae = tiny().train()
    feat = torch.randn(4, 129, 37)
    torch.manual_seed(1)
    aux = vae(feat)["aux"]
    torch.manual_seed(1)  # same reparameterisation noise inside loss()
    _, parts = vae.loss(feat, labels(), 0.0)
    # grade known for items 0, 1, 3; item 2 is -1
    expect = F.cross_entropy(aux["grade"][[0, 1, 3]], torch.tensor([0, 3, 2]))
    assert parts["grade"] == pytest.approx(expect.item(), rel=1e-5)
    expect = F.cross_entropy(aux["timing"][[1, 2]], torch.tensor([3, 0]))
    assert parts["timing"] == pytest.approx(expect.item(), rel=1e-5)

    unknown = {"heart_rate": torch.full((4,), float("nan")), "s1s2": torch.full((4, 37), float("nan")),
               "murmur": torch.full((4,), -1.0), "grade": torch.full((4,), -1),
               "timing": torch.full((4,), -1), "noise_level": torch.full((4,), float("nan"))}
    for lab in (unknown, {}, None):
        total, parts = vae.loss(feat, lab, 0.0)
        assert torch.isfinite(total)
        assert all(parts[k] == 0.0 for k in ("hr", "s1s2", "murmur", "grade", "timing", "noise"))


def test_bad_labels_and_arguments_are_refused():
    vae = tiny()
    feat = torch.randn(4, 129, 37)
    bad = labels()
    bad["grade"] = torch.tensor([0, 9, 1, 2])
    with pytest.raises(ValueError, match="grade"):
        vae.loss(feat, bad, 0.0)
    bad = labels()
    bad["s1s2"] = bad["s1s2"][:, :30]
    with pytest.raises(ValueError, match="s1s2"):
        vae.loss(feat, bad, 0.0)
    with pytest.raises(ValueError, match="exactly one"):
        vae.loss(feat, labels())
    with pytest.raises(ValueError, match="step="):
        vae.loss(feat, labels(), 500)
    with pytest.raises(ValueError, match="feat"):
        vae.encode(torch.randn(2, 64, 37))


def test_kl_annealing():
    assert kl_beta(0, 0.02, 100) == 0.0
    assert kl_beta(50, 0.02, 100) == pytest.approx(0.01)
    assert kl_beta(10_000, 0.02, 100) == pytest.approx(0.02)
    vae = tiny(beta_max=0.02, kl_anneal_steps=100)
    _, parts = vae.loss(torch.randn(4, 129, 37), labels(), step=25)
    assert parts["beta"] == pytest.approx(0.005)


def _encoder_grads(vae, feat, lab, full: bool):
    vae.zero_grad()
    torch.manual_seed(2)
    if full:
        vae.loss(feat, lab, 0.01)[0].backward()
    else:
        out = vae(feat)
        kl = 0.5 * (out["mu"].pow(2) + out["logvar"].exp() - 1 - out["logvar"]).mean()
        ((out["recon"] - feat).abs().mean() + 0.01 * kl).backward()
    return [p.grad.clone() for p in vae.encoder.parameters()]


@pytest.mark.parametrize("disentangle", [True, False])
def test_disentangle_flag_controls_encoder_gradient(disentangle):
    vae = tiny(disentangle=disentangle).train()
    feat, lab = torch.randn(4, 129, 37), labels()
    same = all(torch.allclose(a, b, atol=1e-7) for a, b in zip(
        _encoder_grads(vae, feat, lab, True), _encoder_grads(vae, feat, lab, False)))
    assert same == (not disentangle)
    # the heads are trained either way (probes in the ablation)
    vae.zero_grad()
    vae.loss(feat, lab, 0.01)[0].backward()
    assert all(p.grad.abs().sum() > 0 for p in vae.heads.parameters())


def test_seeded_and_learns():
    a, b = tiny(), tiny()
    feat = torch.randn(4, 129, 37)
    assert torch.equal(a.eval()(feat)["recon"], b.eval()(feat)["recon"])
    # a learnable signal: beats = a spectral profile switched on by a time envelope
    t = torch.arange(37.0)
    env = (torch.sin(2 * math.pi * t / 12.0 + torch.arange(4.0)[:, None]) > 0.6).float()  # (4, 37)
    profile = torch.exp(-torch.arange(129.0) / 20.0)  # (129,)
    feat = -1.0 + 1.5 * profile[None, :, None] * env[:, None, :]
    vae = tiny().train()
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    first = None
    for step in range(30):
        opt.zero_grad()
        total, parts = vae.loss(feat, labels(), 0.001)
        total.backward()
        opt.step()
        first = first if first is not None else parts["recon"]
    assert parts["recon"] < 0.7 * first
