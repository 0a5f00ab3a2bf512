"""A tiny task for trainer tests without Hydra: variable-length token sequences whose label is their
first token's parity, a data object and a policy that satisfy `emotionsumm.interfaces`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from emotionsumm.metrics.classification import confusion_matrix
from emotionsumm.tracking.loggers import NullLogger

VOCAB, CLASSES = 16, 2


class Sequences(Dataset):
    """`n` sequences of 2..12 tokens (fixed by `seed`); with `noise`, training examples get a random
    float feature drawn from the global torch RNG (an augmentation whose randomness a test can see)."""

    def __init__(self, n: int, seed: int = 0, noise: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.tokens = [torch.randint(1, VOCAB, (int(torch.randint(2, 13, (), generator=g)),), generator=g).tolist()
                       for _ in range(n)]
        self.noise = noise

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, Any]:
        tokens = self.tokens[i]
        example = {"ids": tokens, "label": tokens[0] % 2, "index": i}
        if self.noise:
            example["noise"] = float(torch.rand(()))
        return example


class SequencesWithLengths(Sequences):
    def lengths(self) -> list[int]:
        return [len(t) for t in self.tokens]


class TinyData:
    def __init__(self, splits: dict[str, Dataset], batch_size: int = 4, eval_batch_size: int = 8,
                 num_workers: int = 0) -> None:
        self.splits, self.batch_size, self.eval_batch_size = splits, batch_size, eval_batch_size
        self.num_workers = num_workers
        self.collated: list[list[int]] = []  # the example indices of every batch collated in this process

    def dataset(self, split: str) -> Dataset | None:
        return self.splits.get(split)

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        longest = max(len(ex["ids"]) for ex in examples)
        ids = torch.zeros(len(examples), longest, dtype=torch.long)
        for row, ex in enumerate(examples):
            ids[row, : len(ex["ids"])] = torch.tensor(ex["ids"])
        batch = {"ids": ids, "labels": torch.tensor([ex["label"] for ex in examples]),
                 "index": torch.tensor([ex["index"] for ex in examples])}
        if "noise" in examples[0]:
            batch["noise"] = torch.tensor([ex["noise"] for ex in examples])
        return batch

    def train_batches(self) -> None:
        return None

    def sample_weights(self) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}


class TinyPolicy(nn.Module):
    """Mean-pooled embeddings (padding masked) -> BatchNorm -> linear; evaluation keeps per-example lists."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, hidden, padding_idx=0)
        self.norm = nn.BatchNorm1d(hidden)
        self.head = nn.Linear(hidden + 1, CLASSES)
        self.padded_tokens = 0  # tokens of padding seen by evaluation (what length-sorting saves)

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        mask = (batch["ids"] != 0).float()
        pooled = (self.embed(batch["ids"]) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        noise = batch.get("noise", torch.zeros(len(mask)))
        return self.head(torch.cat([self.norm(pooled), noise[:, None].float()], dim=1))

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(self.logits(batch), batch["labels"])

    def eval_state(self) -> dict[str, Any]:
        return {"confusion": torch.zeros(CLASSES, CLASSES, dtype=torch.float64),
                "loss_sum": torch.zeros((), dtype=torch.float64), "index": [], "predictions": []}

    def evaluation_step(self, batch: dict[str, Any], state: dict[str, Any]) -> None:
        self.padded_tokens += int((batch["ids"] == 0).sum())
        logits = self.logits(batch)
        state["loss_sum"] += F.cross_entropy(logits, batch["labels"], reduction="sum").double()
        state["confusion"] += confusion_matrix(logits.argmax(-1), batch["labels"], CLASSES)
        state["index"] += batch["index"].tolist()
        state["predictions"] += logits.argmax(-1).tolist()

    def compute_metrics(self, state: dict[str, Any]) -> dict[str, float]:
        total = state["confusion"].sum().clamp_min(1)
        return {"acc": float(state["confusion"].diag().sum() / total), "loss": float(state["loss_sum"] / total)}

    def log_artifacts(self, state: dict[str, Any], logger: Any, prefix: str, step: int, run_dir: Any) -> None:
        getattr(logger, "artifacts", []).append((prefix, step, list(state["index"])))

    def summary_metrics(self) -> tuple[str, ...]:
        return ("acc", "loss")

    def on_epoch_start(self, epoch: int) -> bool:
        return False

    def param_parts(self) -> dict[str, tuple[str, ...]]:
        return {}

    def param_lrs(self) -> dict[str, float]:
        return {}


class RecordingLogger(NullLogger):
    """A MetricLogger that keeps what it is given: scalars per step and the artifacts' example order."""

    logs_scalars = True

    def __init__(self, **_: Any) -> None:
        self.scalars: dict[int, dict[str, float]] = {}
        self.artifacts: list[tuple[str, int, list[int]]] = []

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self.scalars.setdefault(step, {}).update(scalars)

    def tags_at(self, step: int) -> set[str]:
        return set(self.scalars.get(step, {}))


def tiny_data(n_train: int = 64, n_val: int = 24, noise: bool = False, lengths: bool = True,
              **kwargs: Any) -> TinyData:
    kind = SequencesWithLengths if lengths else Sequences
    return TinyData({"train": kind(n_train, seed=1, noise=noise), "val": kind(n_val, seed=2),
                     "test": kind(n_val, seed=3)}, **kwargs)


def fit_tiny(run_dir: Any, data: TinyData | None = None, seed: int = 0, **trainer_kwargs: Any) -> tuple[Any, dict]:
    """Train TinyPolicy with AdamW on `data`; returns (trainer, metrics). The logger is a RecordingLogger."""
    from emotionsumm.training.ema import EMA
    from emotionsumm.training.trainer import Trainer

    torch.manual_seed(seed)
    data = data or tiny_data()
    policy = TinyPolicy()
    options = {"max_steps": 6, "progress_bar": False, "accelerator": "cpu", "log_every_n_steps": 1,
               "ema": lambda module: EMA(module, decay=0.9), "logger": RecordingLogger, "seed": seed,
               **trainer_kwargs}
    trainer = Trainer(run_dir=run_dir, **options)
    metrics = trainer.fit(policy, data, torch.optim.AdamW(policy.parameters(), lr=1e-2))
    return trainer, metrics
