"""Medical Attention: the cardiac bias peaks one period apart and really steers attention."""
import pytest
import torch

from hldm.models.medical_attention import MedicalAttention, cardiac_mask, period_frames


def test_period_frames_matches_latent_rate():
    # 60 bpm = 1 s = 125 STFT frames = 31.25 latent frames at /4
    assert period_frames(torch.tensor([60.0]))[0].item() == pytest.approx(31.25)
    assert period_frames(torch.tensor([120.0]), time_downsample=2)[0].item() == pytest.approx(31.25)


def test_cardiac_mask_peaks_one_period_apart():
    m = cardiac_mask(80, torch.tensor([10.0, 16.0]), width=0.05, strength=3.0)
    assert m.shape == (2, 80, 80)
    assert torch.allclose(m, m.transpose(-1, -2))
    row = 30
    for b, p in enumerate((10, 16)):
        r = m[b, row]
        near = r[row - p // 2: row + p // 2 + 1]  # within half a period: no peak
        assert near.max() < 0.5 * r.max()
        assert r[row + p].item() == pytest.approx(3.0) and r[row - p].item() == pytest.approx(3.0)
        assert r[row + 2 * p].item() == pytest.approx(3.0)  # multiples of the period too
        assert r[row + p + p // 2].item() < 0.1
    assert not torch.equal(m[0], m[1])


def test_cardiac_mask_per_head_and_bad_period():
    m = cardiac_mask(20, torch.tensor([5.0]), width=torch.tensor([0.05, 0.3]), strength=torch.tensor([1.0, 2.0]))
    assert m.shape == (1, 2, 20, 20)
    assert m[0, 0].max().item() == pytest.approx(1.0) and m[0, 1].max().item() == pytest.approx(2.0)
    assert m[0, 1, 0, 7] > m[0, 0, 0, 7]  # the wider head spreads further off the peak
    for bad in (0.0, float("nan"), -3.0):
        with pytest.raises(ValueError, match="period"):
            cardiac_mask(20, torch.tensor([bad]))


def test_attention_shapes_mask_and_gradients():
    torch.manual_seed(0)
    att = MedicalAttention(16, heads=2)
    x = torch.randn(3, 16, 25)
    period = torch.tensor([6.0, 8.0, 11.0])
    y, mask = att(x, period)
    assert y.shape == x.shape and mask.shape == (3, 25, 25)
    assert torch.allclose(mask, att.bias(25, period).mean(dim=1))
    (y.square().mean() + 0 * mask.sum()).backward()
    for name, p in att.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_period_steers_output_only_with_cardiac_bias():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 30)
    med = MedicalAttention(16, heads=2)
    y1, _ = med(x, torch.tensor([5.0, 5.0]))
    y2, _ = med(x, torch.tensor([9.0, 9.0]))
    assert not torch.allclose(y1, y2)
    plain = MedicalAttention(16, heads=2, cardiac=False)
    assert {n for n, _ in plain.named_parameters()} & {"strength", "width_raw", "rel_bias"} == set()
    p1, m1 = plain(x, torch.tensor([5.0, 5.0]))
    p2, _ = plain(x, torch.tensor([9.0, 9.0]))
    assert torch.equal(p1, p2) and not m1.any()


def test_relative_bias_is_sparse():
    att = MedicalAttention(8, heads=2, window=3)
    with torch.no_grad():
        att.strength.zero_()
        att.rel_bias.fill_(1.0)
    b = att.bias(12, torch.tensor([4.0]))[0, 0]
    offset = (torch.arange(12)[None] - torch.arange(12)[:, None]).abs()
    assert torch.all(b[offset <= 3] == 1.0) and torch.all(b[offset > 3] == 0.0)


def _reference_attention(att: MedicalAttention, x: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(d) + M_cardiac) V written out, heads split as (3, H, d) over the qkv channels."""
    B, C, L = x.shape
    d = C // att.heads
    q, k, v = att.qkv(att.norm(x)).reshape(B, 3, att.heads, d, L).unbind(1)  # (B, H, d, L) each
    scores = q.transpose(-1, -2) @ k / d ** 0.5 + att.bias(L, period)  # (B, H, L, L)
    h = torch.softmax(scores, dim=-1) @ v.transpose(-1, -2)  # (B, H, L, d)
    return x + att.proj(h.transpose(-1, -2).reshape(B, C, L))


def test_sampling_reuses_the_bias_until_period_or_weights_change():
    torch.manual_seed(0)
    att = MedicalAttention(16, heads=2)
    x = torch.randn(2, 16, 30)
    p5, p9 = torch.tensor([5.0, 5.0]), torch.tensor([9.0, 9.0])
    with torch.inference_mode():
        y, _ = att(x, p5)
        first = att._reuse[1]
        assert torch.allclose(y, _reference_attention(att, x, p5), atol=1e-5)
        assert torch.equal(att(x, p5)[0], y) and att._reuse[1] is first  # same period: reused
        y9, _ = att(x, p9)
        assert att._reuse[1] is not first and torch.allclose(y9, _reference_attention(att, x, p9), atol=1e-5)
    with torch.no_grad():
        att.rel_bias.add_(0.5)  # a weight update (optimizer step, load_state_dict, EMA copy)
        y9b, _ = att(x, p9)
        assert torch.allclose(y9b, _reference_attention(att, x, p9), atol=1e-5) and not torch.allclose(y9b, y9)
    reused = att._reuse
    y, _ = att(x, p9)  # with gradients: built afresh, and the bias parameters get their gradient
    y.square().mean().backward()
    assert att._reuse is reused and att.rel_bias.grad.abs().sum() > 0
