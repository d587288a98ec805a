"""Conditional U-Net and structured noise head: shapes, gradients, determinism, ablation flags."""
import pytest
import torch

from hldm.models.ms_vae import MSVAE, MSVAEConfig
from hldm.models.structured_noise import StructuredNoiseHead
from hldm.models.unet import ConditionalUNet1D, UNetConfig, timestep_embedding

TINY = dict(channels=(16, 32, 32), heads=2, cond_dim=8, time_embed_dim=8, emb_dim=16,
            attention_levels=(1,), dropout=0.0)


def tiny(seed: int = 0, **kw) -> ConditionalUNet1D:
    torch.manual_seed(seed)
    return ConditionalUNet1D(UNetConfig(**{**TINY, **kw}))


def inputs(B: int = 2, L: int = 13, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 16, L, generator=g), torch.tensor([10, 700][:B]),
            torch.randn(B, 8, generator=g), torch.tensor([70.0, 140.0][:B]))


@pytest.mark.parametrize("L", [13, 16, 1, 78])
def test_shapes_for_any_length(L):
    out = tiny().eval()(*inputs(L=L))
    assert out["eps"].shape == (2, 16, L)
    assert out["w"].shape == (2, 4) and torch.allclose(out["w"].sum(-1), torch.ones(2))
    assert out["eps_i"].shape == (2, 4, 16, L)
    assert torch.allclose(out["eps"], torch.einsum("bi,bicl->bcl", out["w"], out["eps_i"]), atol=1e-6)
    L2 = -(-L // 4) * 2  # padded to a multiple of 4, attention at level 1 (L/2)
    assert [m.shape for m in out["attn"]] == [(2, L2, L2)] * 2


def test_gradients_reach_every_parameter():
    net = tiny().train()
    out = net(*inputs())
    (out["eps"].square().mean() + out["eps_i"].square().mean()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_seeded_and_deterministic():
    x = inputs()
    a, b = tiny(seed=3).eval(), tiny(seed=3).eval()
    assert torch.equal(a(*x)["eps"], b(*x)["eps"])
    assert torch.equal(a(*x)["eps"], a(*x)["eps"])
    assert not torch.equal(a(*x)["eps"], tiny(seed=4).eval()(*x)["eps"])
    drop = tiny(seed=3, dropout=0.5).train()
    torch.manual_seed(9)
    y1 = drop(*x)["eps"]
    torch.manual_seed(9)
    assert torch.equal(y1, drop(*x)["eps"])


def test_timestep_and_condition_change_the_output():
    net = tiny().eval()
    z, t, c, hr = inputs()
    base = net(z, t, c, hr)["eps"]
    assert not torch.allclose(base, net(z, t + 100, c, hr)["eps"])
    assert not torch.allclose(base, net(z, t, c + 1.0, hr)["eps"])
    one = net(z[:1], torch.tensor(10), c[:1], torch.tensor(70.0))["eps"]  # scalar t and hr broadcast
    assert torch.allclose(one, base[:1], atol=1e-5)
    emb = timestep_embedding(torch.tensor([0, 999]), 8)
    assert emb.shape == (2, 8) and not torch.equal(emb[0], emb[1])


def test_medical_attention_flag_removes_the_cardiac_bias():
    z, t, c, hr = inputs()
    med = tiny().eval()
    assert any(n.endswith("strength") for n, _ in med.named_parameters())
    out = med(z, t, c, hr)
    assert all(m.abs().sum() > 0 for m in out["attn"])
    assert not torch.allclose(out["eps"], med(z, t, c, hr * 1.3)["eps"])  # heart rate steers attention

    plain = tiny(medical_attention=False).eval()
    names = {n.rsplit(".", 1)[-1] for n, _ in plain.named_parameters()}
    assert not names & {"strength", "width_raw", "rel_bias"}
    out = plain(z, t, c, hr)
    assert len(out["attn"]) == 2 and all(not m.any() for m in out["attn"])
    assert torch.equal(out["eps"], plain(z, t, c, hr * 1.3)["eps"])


def test_structured_noise_flag_gives_a_single_plain_head():
    z, t, c, hr = inputs()
    plain = tiny(structured_noise=False).eval()
    assert not any(".weights." in n for n, _ in plain.named_parameters())
    out = plain(z, t, c, hr)
    assert torch.equal(out["w"], torch.full((2, 4), 0.25))
    assert all(torch.equal(out["eps_i"][:, i], out["eps"]) for i in range(4))
    structured = tiny().eval()(z, t, c, hr)
    assert not torch.allclose(structured["w"][0], structured["w"][1])  # w depends on c
    assert not torch.allclose(structured["eps_i"][:, 0], structured["eps_i"][:, 1])


def test_noise_head_weights_depend_only_on_condition():
    torch.manual_seed(0)
    head = StructuredNoiseHead(16, cond_dim=8)
    c = torch.randn(2, 8)
    _, w1, _ = head(torch.randn(2, 16, 5), c)
    _, w2, _ = head(torch.randn(2, 16, 9), c)
    assert torch.equal(w1, w2)


def test_bad_inputs_are_refused():
    net = tiny().eval()
    z, t, c, hr = inputs()
    with pytest.raises(ValueError, match="z_t"):
        net(z[:, :8], t, c, hr)
    with pytest.raises(ValueError, match="c: expected"):
        net(z, t, torch.randn(2, 5), hr)
    with pytest.raises(ValueError, match="hr"):
        net(z, t, c, torch.tensor([80.0, float("nan")]))
    with pytest.raises(ValueError, match="t: expected"):
        net(z, torch.tensor([1, 2, 3]), c, hr)
    with pytest.raises(ValueError, match="attention_levels"):
        UNetConfig(attention_levels=(3,))


def test_default_configs_fit_the_checkpoint_budget():
    # shipped checkpoint < 40 MB in float32 including the conditioner: keep VAE + U-Net under 9 M
    n_unet = sum(p.numel() for p in ConditionalUNet1D(UNetConfig()).parameters())
    n_vae = sum(p.numel() for p in MSVAE(MSVAEConfig()).parameters())
    assert n_unet + n_vae < 9_000_000
    assert UNetConfig.from_dict(UNetConfig().to_dict()) == UNetConfig()
    assert MSVAEConfig.from_dict(MSVAEConfig().to_dict()) == MSVAEConfig()


def test_scale_shift_block_scales_the_normalised_features():
    from hldm.models.blocks import ResBlock1D

    torch.manual_seed(0)
    block = ResBlock1D(8, 8, emb_dim=4, scale_shift=True).eval()
    lin = block.emb[1]
    assert lin.out_features == 16  # (scale, shift) per channel
    with torch.no_grad():  # scale = -1, shift = 0: the normalised features are cancelled
        lin.weight.zero_()
        lin.bias.copy_(torch.cat([-torch.ones(8), torch.zeros(8)]))
    emb = torch.randn(2, 4)
    x1, x2 = torch.randn(2, 8, 20), torch.randn(2, 8, 20)
    r1, r2 = block(x1, emb) - x1, block(x2, emb) - x2  # residual branch only
    assert torch.allclose(r1, r2, atol=1e-6)
    plain = ResBlock1D(8, 8, emb_dim=4, scale_shift=False)
    assert plain.emb[1].out_features == 8  # the paper's bias-only block


@pytest.mark.parametrize("scale_shift", [True, False])
def test_both_adaptive_blocks_run_and_use_the_condition(scale_shift):
    net = tiny(scale_shift=scale_shift).eval()
    z, t, c, hr = inputs()
    assert not torch.allclose(net(z, t, c, hr)["eps"], net(z, t, 2 * c, hr)["eps"])
