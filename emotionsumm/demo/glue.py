"""Small demo files of the nine GLUE tasks in their distributed TSV formats, so `data=glue_<task> data.demo=true`
and `make glue ARGS="data.demo=true"` run without GLUE.

Each task folder (CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI, RTE, WNLI) gets `train.tsv` and `dev.tsv`
(MNLI: `dev_matched.tsv` and `dev_mismatched.tsv`) with the exact columns, header (CoLA has none) and label
values of the real files, template sentences whose label the text decides (so a model can learn it), quote
characters that are text and not CSV quoting, and in QQP's training file one row broken by a newline, as the
real QQP has. A format check, not a benchmark.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from ..runs.atomic import atomic_write_text
from .store import write_directory_once

SIZES = {"train": 320, "dev": 80}

_SUBJECTS = ["the cat", "the teacher", "my neighbour", "the old man", "a student", "the pilot", "her brother",
             "the doctor", "our coach", "the farmer", "a tourist", "the singer"]
_VERBS = [("reads", "read"), ("paints", "paint"), ("cooks", "cook"), ("repairs", "repair"), ("sells", "sell"),
          ("watches", "watch"), ("carries", "carry"), ("cleans", "clean"), ("builds", "build"), ("finds", "find")]
_OBJECTS = ["the book", "a boat", "the soup", "an old bike", "the fence", "a letter", "the garden", "a kite",
            "the piano", "a map", "the window", "a cake"]
# what STS-B's second sentence says instead of a part it does not share (the fewer kept, the lower the score)
_OTHER_SUBJECTS = ["a robot", "the queen", "some children", "a parrot", "the mayor", "two sailors"]
_OTHER_VERBS = ["ignores", "throws", "hides", "forgets", "breaks", "steals"]
_OTHER_OBJECTS = ["a violin", "the moon", "some rice", "a hammer", "the clock", "a helmet"]
_PLACES = ["in the park", "at home", "near the river", "in the city", "after lunch", "on sunday"]
_GOOD = ["moving", "brilliant", "funny", "charming", "gripping", "heartfelt", "clever", "beautiful"]
_BAD = ["dull", "clumsy", "boring", "tedious", "lifeless", "messy", "shallow", "annoying"]
_SYNONYMS = {"reads": "looks through", "paints": "colours", "cooks": "prepares", "repairs": "fixes",
             "sells": "trades", "watches": "observes", "carries": "holds", "cleans": "washes", "builds": "makes",
             "finds": "discovers"}
# MNLI genres: the matched dev set shares the training genres, the mismatched one has others
_GENRES = {"matched": ["fiction", "government", "slate", "telephone", "travel"],
           "mismatched": ["facetoface", "letters", "nineeleven", "oup", "verbatim"]}
_NLI = ["entailment", "neutral", "contradiction"]


def _clause(rng: random.Random) -> tuple[str, tuple[str, str], str]:
    return rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)


def _quoted(rng: random.Random, text: str) -> str:
    """Now and then a quote character that is text: an unbalanced `"` or a `'` (read with no CSV quoting)."""
    roll = rng.random()
    if roll < 0.1:
        return f'"{text}'
    if roll < 0.2:
        return text.replace("the ", "the '", 1)
    return text


def _parse(sentence: str) -> tuple[str, str]:
    """A binary parse and a parse in MNLI's bracket notation (flat: only the format matters here)."""
    words = sentence.split()
    return "( " + " ".join(f"( {w} )" for w in words) + " )", "(ROOT (S " + " ".join(f"(NN {w})" for w in words) + "))"


# ---- one row per task: its fields ----------------------------------------------------------------------
def _cola(rng: random.Random, i: int) -> list[str]:
    subject, (verb, _), obj = _clause(rng)
    acceptable = i % 2 == 0
    sentence = f"{subject} {verb} {obj} ." if acceptable else rng.choice(
        [f"{subject} {obj} {verb} .", f"{verb} {subject} the {obj} .", f"{subject} {verb} {verb} {obj} ."])
    return [f"demo{i % 7:02d}", "1" if acceptable else "0", "" if acceptable else "*", _quoted(rng, sentence)]


def _sst2(rng: random.Random, i: int) -> list[str]:
    positive = i % 2 == 0
    words = rng.sample(_GOOD if positive else _BAD, 2)
    other = rng.choice(_BAD if positive else _GOOD)
    sentence = rng.choice([f"a {words[0]} and {words[1]} film ", f"the plot is {words[0]} , never {other} ",
                           f"it 's {words[0]} from start to finish "])
    return [_quoted(rng, sentence), "1" if positive else "0"]


def _paraphrase(rng: random.Random, same: bool) -> tuple[str, str]:
    subject, (verb, _), obj = _clause(rng)
    place = rng.choice(_PLACES)
    first = f"{subject} {verb} {obj} {place} ."
    if same:
        return first, f"{place} , {subject} {_SYNONYMS[verb]} {obj} ."
    other_obj = rng.choice([o for o in _OBJECTS if o != obj])
    return first, f"{subject} {verb} {other_obj} {rng.choice(_PLACES)} ."


def _mrpc(rng: random.Random, i: int) -> list[str]:
    same = rng.random() < 0.68  # MRPC is about two-thirds paraphrases
    first, second = _paraphrase(rng, same)
    return ["1" if same else "0", str(100000 + 2 * i), str(100001 + 2 * i), _quoted(rng, first), second]


def _qqp(rng: random.Random, i: int) -> list[str]:
    duplicate = rng.random() < 0.37
    _, (verb, base), obj = _clause(rng)
    other = rng.choice([o for o in _OBJECTS if o != obj])
    question1 = f"how do i {base} {obj} ?"
    question2 = rng.choice([f"what is the best way to {base} {obj if duplicate else other} ?",
                            f"how can i {base} {obj if duplicate else other} quickly ?"])
    return [str(i), str(2 * i + 1), str(2 * i + 2), _quoted(rng, question1), question2, "1" if duplicate else "0"]


def _stsb(rng: random.Random, i: int) -> list[str]:
    subject, (verb, _), obj = _clause(rng)
    shared = rng.randint(0, 3)  # how many of subject, verb, object the second sentence keeps
    parts = [subject, verb, obj]
    replacements = [rng.choice(_OTHER_SUBJECTS), rng.choice(_OTHER_VERBS), rng.choice(_OTHER_OBJECTS)]
    kept = rng.sample(range(3), shared)
    second = [p if k in kept else r for k, (p, r) in enumerate(zip(parts, replacements))]
    score = min(5.0, max(0.0, 5 * shared / 3 + rng.uniform(-0.4, 0.4)))
    return [str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none",
            _quoted(rng, " ".join(parts) + " ."), " ".join(second) + " .", f"{score:.3f}"]


def _nli_pair(rng: random.Random, label: str) -> tuple[str, str]:
    subject, (verb, base), obj = _clause(rng)
    premise = f"{subject} {verb} {obj} {rng.choice(_PLACES)} ."
    hypothesis = {"entailment": f"{subject} {verb} {obj} .",
                  "contradiction": f"{subject} does not {base} {obj} .",
                  "neutral": f"{subject} {verb} {obj} because it is {rng.choice(_GOOD)} ."}[label]
    return premise, hypothesis


def _mnli(rng: random.Random, i: int, dev: str | None) -> list[str]:
    """Train rows have 12 columns (label1, gold_label); dev rows 16 (label1..label5, gold_label)."""
    label = _NLI[i % 3]
    premise, hypothesis = _nli_pair(rng, label)
    premise = _quoted(rng, premise)
    genre = rng.choice(_GENRES[dev or "matched"])
    votes = [label] if dev is None else [label, *(rng.choice([label, label, rng.choice(_NLI)]) for _ in range(4))]
    (binary1, parse1), (binary2, parse2) = _parse(premise), _parse(hypothesis)
    pair_id = f"{30000 + i}{label[0]}"  # as in MNLI: the prompt id and e/n/c
    return [str(i), str(30000 + i), pair_id, genre, binary1, binary2, parse1, parse2, premise, hypothesis, *votes,
            label]


def _qnli(rng: random.Random, i: int) -> list[str]:
    subject, (verb, base), obj = _clause(rng)
    answered = i % 2 == 0
    who = subject if answered else rng.choice([s for s in _SUBJECTS if s != subject])
    sentence = f"{who} {verb} {obj} {rng.choice(_PLACES)} ." if answered else f"{who} {verb} nothing at all ."
    return [str(i), f"what does {subject} {base} ?", _quoted(rng, sentence),
            "entailment" if answered else "not_entailment"]


def _rte(rng: random.Random, i: int) -> list[str]:
    label = rng.choice(["entailment", "contradiction"])
    premise, hypothesis = _nli_pair(rng, label)
    return [str(i), _quoted(rng, premise), hypothesis, "entailment" if label == "entailment" else "not_entailment"]


def _wnli(rng: random.Random, i: int) -> list[str]:
    subject, (verb, _), obj = _clause(rng)
    other = rng.choice([s for s in _SUBJECTS if s != subject])
    entailed = i % 2 == 0
    meant = subject if entailed else other
    sentence1 = f"{subject} {verb} {obj} for {other} because he was {rng.choice(_GOOD)} ."
    return [str(i), _quoted(rng, sentence1), f"{meant} was {rng.choice(_GOOD)} .", "1" if entailed else "0"]


RowMaker = Callable[[random.Random, int], list[str]]
# folder -> (header or None, row maker); MNLI is written by `_write_mnli`
TASKS: dict[str, tuple[list[str] | None, RowMaker]] = {
    "CoLA": (None, _cola),
    "SST-2": (["sentence", "label"], _sst2),
    "MRPC": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], _mrpc),
    "QQP": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], _qqp),
    "STS-B": (["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
               "score"], _stsb),
    "QNLI": (["index", "question", "sentence", "label"], _qnli),
    "RTE": (["index", "sentence1", "sentence2", "label"], _rte),
    "WNLI": (["index", "sentence1", "sentence2", "label"], _wnli),
}
MNLI_COLUMNS = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]


def _tsv(path: Path, header: list[str] | None, rows: list[list[str]]) -> None:
    lines = (["\t".join(header)] if header else []) + ["\t".join(row) for row in rows]
    atomic_write_text("\n".join(lines) + "\n", path)


def _write_task(root: Path, folder: str, seed: int) -> None:
    header, make = TASKS[folder]
    for offset, (split, size) in enumerate(SIZES.items()):
        rng = random.Random(f"{seed}-{folder}-{offset}")
        rows = [make(rng, i) for i in range(size)]
        if folder == "QQP" and split == "train":  # as in the real file: a question broken by a newline
            broken = rows[7]
            rows[7:8] = [broken[:4] + [broken[4][:10]], [broken[4][10:], broken[5]]]
        _tsv(root / folder / f"{split}.tsv", header, rows)


def _write_mnli(root: Path, seed: int) -> None:
    files = [("train", None, SIZES["train"]), ("dev_matched", "matched", SIZES["dev"]),
             ("dev_mismatched", "mismatched", SIZES["dev"])]
    for offset, (name, dev, size) in enumerate(files):
        rng = random.Random(f"{seed}-MNLI-{offset}")
        labels = ["label1"] if dev is None else [f"label{k}" for k in range(1, 6)]
        _tsv(root / "MNLI" / f"{name}.tsv", [*MNLI_COLUMNS, *labels, "gold_label"],
             [_mnli(rng, i, dev) for i in range(size)])


def make_glue(directory: str | Path, seed: int = 0) -> Path:
    """Write the nine task folders into `directory` (once; a complete set is reused); return the dir."""

    def fill(root: Path) -> None:
        for folder in TASKS:
            _write_task(root, folder, seed)
        _write_mnli(root, seed)

    return write_directory_once(directory, fill, "GLUE demo files in the distributed formats (emotionsumm.demo.glue)")
