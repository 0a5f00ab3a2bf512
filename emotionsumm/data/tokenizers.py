"""Tokenizers: a WordPiece or byte-level BPE trained offline on the training split, or a pretrained one.

A trained tokenizer travels as its JSON string (in the checkpoint and the run dir), so a
checkpoint alone is enough to rebuild it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ..models.pretrained import pretrained_source

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BART_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as in BART


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
    return _cached("wordpiece", [vocab_size, min_frequency, lowercase], texts, cache_dir,
                   lambda: train_wordpiece(texts, vocab_size, min_frequency, lowercase))


def _cached(kind: str, settings: list, texts: list[str], cache_dir: str | Path | None,
            train: Callable[[], str]) -> str:
    """`train()`, or the tokenizer JSON cached under a hash of `kind`, `settings` and `texts`."""
    if cache_dir is None:
        return train()
    digest = hashlib.sha256(json.dumps(settings).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    path = Path(cache_dir) / f"{kind}-{digest.hexdigest()[:16]}.json"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    from ..runs.atomic import atomic_write_text

    tokenizer_json = train()
    atomic_write_text(tokenizer_json, path)
    return tokenizer_json


def train_bpe(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
              keep_whole: str | None = r"#\w+#") -> str:
    """Train a byte-level BPE with BART's special tokens; returns its JSON serialisation.

    Strings matching `keep_whole` (speaker tags such as `#Person1#`) that occur at least
    `min_frequency` times become single added tokens, with and without a leading space, so
    the BPE never splits them and spends no merges on them. Encodings are `<s> … </s>`.
    """
    texts = list(texts)
    pattern = re.compile(keep_whole) if keep_whole else None
    whole: list[str] = []
    if pattern is not None:
        counts = Counter(m for text in texts for m in pattern.findall(text))
        whole = sorted(tag for tag, n in counts.items() if n >= min_frequency)
        texts = [pattern.sub(" ", text) for text in texts]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=BART_SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(prefix + tag, normalized=False) for tag in whole for prefix in ("", " ")])
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    tok.decoder = decoders.ByteLevel()
    return tok.to_str()


def train_bpe_cached(texts: list[str], cache_dir: str | Path | None, vocab_size: int = 8000,
                     min_frequency: int = 2, keep_whole: str | None = r"#\w+#") -> str:
    """`train_bpe`, cached by content like `train_wordpiece_cached` (reruns reproduce exactly)."""
    return _cached("bpe", [vocab_size, min_frequency, keep_whole], texts, cache_dir,
                   lambda: train_bpe(texts, vocab_size, min_frequency, keep_whole))


def from_json(tokenizer_json: str) -> PreTrainedTokenizerFast:
    """Wrap a serialised `tokenizers` tokenizer (WordPiece or BART-style BPE) as a transformers fast tokenizer."""
    tok = Tokenizer.from_str(tokenizer_json)
    if tok.token_to_id("<pad>") is not None:
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                       unk_token="<unk>", mask_token="<mask>")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )


def from_pretrained(name_or_path: str, key: str = "model.pretrained") -> PreTrainedTokenizerFast:
    """The tokenizer of a pretrained name or local directory; a missing directory names `key`."""
    return AutoTokenizer.from_pretrained(pretrained_source(name_or_path, key, required=None))


def build(tokenizer_json: str | None, name: str | None, train: Callable[[], str] | None,
          run_dir: str | Path | None) -> tuple[PreTrainedTokenizerFast, str | None]:
    """(tokenizer, its JSON): the checkpoint's JSON wins, then the pretrained `name` (data.tokenizer),
    else `train()` on the training split (None: no training split was read). A JSON tokenizer is
    saved to `<run_dir>/tokenizer`."""
    if tokenizer_json is None and name:
        return from_pretrained(name, key="data.tokenizer"), None
    if tokenizer_json is None:
        if train is None:
            raise ValueError("a tokenizer must be trained but no training split was read (data.files.train)")
        tokenizer_json = train()
    tokenizer = from_json(tokenizer_json)
    if run_dir is not None:
        tokenizer.save_pretrained(str(Path(run_dir) / "tokenizer"))
    return tokenizer, tokenizer_json


def pad_ids(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both [len(sequences), longest]: right-padded with `pad_id` (dynamic padding)."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask
