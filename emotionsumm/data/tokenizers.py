"""Tokenizers: a WordPiece trained offline on the training split, or a pretrained one.

A trained tokenizer travels as its JSON string (in the checkpoint and the run dir), so a
checkpoint alone is enough to rebuild it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
                    lowercase: bool = True) -> str:
    """Train a BERT-style WordPiece tokenizer; returns its JSON serialisation."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL)
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    return tok.to_str()


def train_wordpiece_cached(texts: list[str], cache_dir: str | Path | None, vocab_size: int = 8000,
                           min_frequency: int = 2, lowercase: bool = True) -> str:
    """`train_wordpiece`, reusing a tokenizer trained before on the same texts and settings.

    The `tokenizers` trainer breaks ties in hash-map order, which changes from process to
    process; caching by content makes reruns with the same seed reproduce exactly (and skips
    retraining).
    """
    if cache_dir is None:
        return train_wordpiece(texts, vocab_size, min_frequency, lowercase)
    digest = hashlib.sha256(json.dumps([vocab_size, min_frequency, lowercase]).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    path = Path(cache_dir) / f"wordpiece-{digest.hexdigest()[:16]}.json"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    from ..checkpoint import atomic_write_text

    tokenizer_json = train_wordpiece(texts, vocab_size, min_frequency, lowercase)
    atomic_write_text(tokenizer_json, path)
    return tokenizer_json


def from_json(tokenizer_json: str) -> PreTrainedTokenizerFast:
    """Wrap a serialised `tokenizers` tokenizer as a transformers fast tokenizer."""
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json),
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )


def from_pretrained(name_or_path: str, key: str = "model.pretrained") -> PreTrainedTokenizerFast:
    """The tokenizer of a pretrained name or local directory; a missing directory names `key`."""
    looks_local = name_or_path.startswith((".", "/", "~")) or Path(name_or_path).exists()
    if looks_local and not Path(name_or_path).expanduser().is_dir():
        raise FileNotFoundError(f"{key}: pretrained directory not found: {name_or_path}")
    return AutoTokenizer.from_pretrained(str(Path(name_or_path).expanduser()) if looks_local else name_or_path)
