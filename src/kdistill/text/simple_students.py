"""Students that are not transformers: a BiLSTM and a CNN over word-piece embeddings, as in
distilling BERT into simple networks (Tang et al. 2019, arXiv:1903.12136).

They read the same batches as a Hugging Face model (`input_ids`, `attention_mask`) and return
logits. `save_pretrained` / `from_pretrained` come from `huggingface_hub.PyTorchModelHubMixin`
(config.json + model.safetensors), so a saved student loads back with that library alone.
`vocab_size` is the tokenizer's; give it, or `tokenizer` (a local folder or `minilm`) to read it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kdistill.errors import BadInput

try:
    from huggingface_hub import PyTorchModelHubMixin
except ImportError:  # the `nlp` extra is not installed: the models work, saving them in this layout does not
    class PyTorchModelHubMixin:  # type: ignore[no-redef]
        def save_pretrained(self, *_: object, **__: object) -> None:
            raise BadInput("save_pretrained needs huggingface_hub: pip install 'kdistill[nlp]'")


def _mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()


class TextBiLSTM(nn.Module, PyTorchModelHubMixin):
    """Embeddings -> bidirectional LSTM over the real tokens -> masked max-pool -> MLP head."""

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 128, hidden: int = 128,
                 num_layers: int = 1, dropout: float = 0.1, pad_id: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=num_layers, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: object) -> torch.Tensor:
        mask = _mask(input_ids, attention_mask)
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.dropout(self.embed(input_ids)), lengths, batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
        pooled = out.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
        return self.head(self.dropout(pooled))


class TextCNN(nn.Module, PyTorchModelHubMixin):
    """Embeddings -> 1-D convolutions of several widths -> masked max-pool over time -> linear (Kim 2014)."""

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 128, channels: int = 100,
                 widths: tuple[int, ...] = (3, 4, 5), dropout: float = 0.5, pad_id: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, w, padding=w // 2) for w in widths)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels * len(widths), num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: object) -> torch.Tensor:
        mask = _mask(input_ids, attention_mask)
        x = self.embed(input_ids).transpose(1, 2)  # (B, E, L)
        pooled = []
        for conv in self.convs:
            y = torch.relu(conv(x))[..., : input_ids.shape[1]]  # even widths give one extra position
            pooled.append(y.masked_fill(~mask[:, None, :], float("-inf")).amax(dim=2))
        return self.head(self.dropout(torch.cat(pooled, dim=1)))


def vocabulary(vocab_size: int | None, tokenizer: str | None) -> tuple[int, int]:
    """(vocabulary size, padding id) from the option given."""
    if tokenizer is not None:
        from kdistill.text.local_models import model_dir
        from kdistill.text.tokenize import load_tokenizer

        tok = load_tokenizer(model_dir(tokenizer))
        return len(tok), tok.pad_token_id or 0
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 2:
        raise BadInput(f"vocab_size: give the tokenizer's vocabulary size, or `tokenizer` (got {vocab_size!r})")
    return vocab_size, 0


def text_bilstm(num_classes: int, vocab_size: int | None = None, tokenizer: str | None = None,
                embed_dim: int = 128, hidden: int = 128, num_layers: int = 1, dropout: float = 0.1) -> TextBiLSTM:
    size, pad = vocabulary(vocab_size, tokenizer)
    return TextBiLSTM(size, num_classes, embed_dim, hidden, num_layers, dropout, pad)


def text_cnn(num_classes: int, vocab_size: int | None = None, tokenizer: str | None = None, embed_dim: int = 128,
             channels: int = 100, widths: list[int] | None = None, dropout: float = 0.5) -> TextCNN:
    size, pad = vocabulary(vocab_size, tokenizer)
    return TextCNN(size, num_classes, embed_dim, channels, tuple(widths or (3, 4, 5)), dropout, pad)


__all__ = ["TextBiLSTM", "TextCNN", "text_bilstm", "text_cnn"]
