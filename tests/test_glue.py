"""GLUE: the nine tasks' distributed TSV formats read by `data=glue_<task>`, the official metrics, sentence-pair
encoding, the regression policy (STS-B) and the GLUE table of a sweep report.

Every format is written here by hand, line by line as the real files are (not by the demo generator), so a
reader that drifted from the distributed format fails.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from emotionsumm.data.glue import GlueData
from emotionsumm.metrics.classification import average_ranks, matthews_corrcoef, pearson, positive_f1, spearman
from emotionsumm.policies.classification import ClassificationPolicy
from emotionsumm.report import write_report

from .conftest import SHARED, make_cfg

T = "\t"
MNLI_TRAIN = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse "
              "sentence2_parse sentence1 sentence2 label1 gold_label").split()
MNLI_DEV = [*MNLI_TRAIN[:-2], "label1", "label2", "label3", "label4", "label5", "gold_label"]


def write(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(T.join(row) + "\n" for row in rows), encoding="utf-8")


def glue_data(tmp_path: Path, task: str, *overrides: str) -> GlueData:
    cfg = make_cfg(tmp_path / "run", [f"data=glue_{task}", f"paths.glue_dir={tmp_path / 'glue'}",
                                      f"data.tokenizer_cache_dir={tmp_path / 'tok'}", *overrides])
    return instantiate(cfg.data)


def loaded(tmp_path: Path, task: str, *overrides: str) -> GlueData:
    data = glue_data(tmp_path, task, *overrides)
    data.setup(None)
    return data


def texts_labels(data: GlueData, split: str) -> tuple[list[str], list]:
    dataset = data.dataset(split)
    return dataset.texts, dataset.labels


# ---- the distributed formats -------------------------------------------------------------------------------
def test_cola_has_no_header_and_four_columns_with_quotes_as_text(tmp_path):
    rows = [["gj04", "1", "", 'Our friends won\'t buy this analysis, let alone the next one we propose.'],
            ["gj04", "0", "*", 'They drank the pub "dry.'],
            ["clc95", "1", "", 'He said "hello" and left.']]
    write(tmp_path / "glue/CoLA/train.tsv", rows)
    write(tmp_path / "glue/CoLA/dev.tsv", rows[:2])
    data = loaded(tmp_path, "cola")
    texts, labels = texts_labels(data, "train")
    assert texts == [row[3] for row in rows]  # the unbalanced quote is text, the first row is data
    assert labels == [1, 0, 1]
    assert data.class_names == ["unacceptable", "acceptable"]
    assert data.dataset("test") is None and len(data.dataset("val")) == 2


def test_sst2_mrpc_qnli_rte_wnli_headers_and_label_mapping(tmp_path):
    write(tmp_path / "glue/SST-2/train.tsv", [["sentence", "label"], ["it 's a charming \" film ", "1"],
                                              ["a dull , lifeless mess ", "0"]])
    write(tmp_path / "glue/MRPC/train.tsv", [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                                             ["1", "702876", "702977", 'Amrozi accused his brother , whom he called '
                                              '" the witness " , of lying .', "Referring to him as only \" the "
                                              "witness \" , Amrozi accused his brother ."],
                                             ["0", "2108705", "2108831", "Yucaipa owned Dominick 's .", "It sold."]])
    write(tmp_path / "glue/QNLI/train.tsv", [["index", "question", "sentence", "label"],
                                             ["0", "What came into force?", "The law came into force.", "entailment"],
                                             ["1", "Who won?", "Nobody \"knows.", "not_entailment"]])
    for task, (yes, no) in {"RTE": ("entailment", "not_entailment"), "WNLI": ("1", "0")}.items():
        write(tmp_path / f"glue/{task}/train.tsv", [["index", "sentence1", "sentence2", "label"],
                                                    ["0", "A dog ran.", "An animal ran.", yes],
                                                    ["1", "A cat sat.", "A dog sat.", no]])
    for folder in ("SST-2", "MRPC", "QNLI", "RTE", "WNLI"):
        (tmp_path / f"glue/{folder}/dev.tsv").write_text((tmp_path / f"glue/{folder}/train.tsv").read_text())
    expected = {"sst2": ([1, 0], ["negative", "positive"]), "mrpc": ([1, 0], ["not_equivalent", "equivalent"]),
                "qnli": ([0, 1], ["entailment", "not_entailment"]), "rte": ([0, 1], ["entailment", "not_entailment"]),
                "wnli": ([1, 0], ["not_entailment", "entailment"])}
    for task, (ids, classes) in expected.items():
        data = loaded(tmp_path, task)
        assert data.class_names == classes, task
        assert data.dataset("val").labels == ids, task
    mrpc = loaded(tmp_path, "mrpc")
    assert mrpc.dataset("train").texts[0].endswith('" the witness " , of lying .')
    assert "token_type_ids" in mrpc.dataset("train")[0]  # sentence pairs
    assert loaded(tmp_path, "sst2").dataset("train").texts[0] == "it 's a charming \" film "


def test_mnli_twelve_column_train_sixteen_column_dev_and_mismatched_as_test(tmp_path):
    def row(i: int, gold: str, votes: list[str]) -> list[str]:
        return [str(i), "31193", f"31193{gold[0]}", "government", "( ( Conceptually cream ) skimming )",
                "( Product ( and geography ) )", "(ROOT (S (NP (JJ Conceptually))))", "(ROOT (S (NP (NN Product))))",
                'Conceptually cream "skimming has two basic dimensions.',
                "Product and geography are what make it work.", *votes, gold]

    write(tmp_path / "glue/MNLI/train.tsv", [MNLI_TRAIN, row(0, "neutral", ["neutral"]),
                                             row(1, "entailment", ["entailment"]),
                                             row(2, "contradiction", ["contradiction"])])
    write(tmp_path / "glue/MNLI/dev_matched.tsv", [MNLI_DEV, row(0, "contradiction", ["contradiction", "neutral",
                                                                                     "contradiction", "contradiction",
                                                                                     "contradiction"])])
    write(tmp_path / "glue/MNLI/dev_mismatched.tsv", [MNLI_DEV, row(0, "entailment", ["entailment"] * 5),
                                                      row(1, "neutral", ["neutral"] * 5)])
    data = loaded(tmp_path, "mnli")
    assert data.class_names == ["entailment", "neutral", "contradiction"]
    assert data.dataset("train").labels == [1, 0, 2]
    assert data.dataset("val").labels == [2]
    assert data.dataset("test").labels == [0, 1]  # dev_mismatched: the test split
    assert data.dataset("train").texts[0] == 'Conceptually cream "skimming has two basic dimensions.'


QQP_HEADER = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]


def test_qqp_malformed_rows_are_skipped_and_counted_or_raise_naming_the_line(tmp_path, caplog):
    train = tmp_path / "glue/QQP/train.tsv"
    train.parent.mkdir(parents=True)
    train.write_text(T.join(QQP_HEADER) + "\n"
                     + T.join(["0", "1", "2", "How do I learn \"Python?", "What is the best way to learn Python?", "1"])
                     + "\n" + T.join(["1", "3", "4", "Why is the sky", ""]) + "\n"  # broken by a newline:
                     + T.join(["blue?", "0"]) + "\n"                                    # two short rows
                     + T.join(["2", "5", "6", "Is this real?", "Is it fake?", "0"]) + "\n", encoding="utf-8")
    write(tmp_path / "glue/QQP/dev.tsv", [QQP_HEADER, ["9", "1", "2", "a?", "b?", "0"]])
    with caplog.at_level("WARNING"):
        data = loaded(tmp_path, "qqp")  # glue_qqp.yaml: on_error=skip
    assert data.dataset("train").texts == ['How do I learn "Python?', "Is this real?"]
    assert data.dataset("train").labels == [1, 0]
    assert data.skipped == {"train": 2}
    assert "skipped 2 of 4 row(s)" in caplog.text and f"{train}:3: 5 field(s) where the header has 6" in caplog.text
    with pytest.raises(ValueError, match=rf"{train}:3: 5 field\(s\) where the header has 6.*data.on_error=skip"):
        loaded(tmp_path, "qqp", "data.on_error=raise")


def test_stsb_ten_columns_is_regression_with_float_labels(tmp_path):
    header = "index genre filename year old_index source1 source2 sentence1 sentence2 score".split()
    rows = [["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.",
             "An air plane is taking off.", "5.000"],
            ["1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", 'A man "plays a flute.',
             "A man is playing a flute.", "3.800"],
            ["2", "main-news", "headlines", "2013", "0010", "none", "none", "Stocks fall.", "Cats sleep.", "0.250"]]
    write(tmp_path / "glue/STS-B/train.tsv", [header, *rows])
    write(tmp_path / "glue/STS-B/dev.tsv", [header, *rows[:2]])
    data = loaded(tmp_path, "stsb")
    assert data.dataset("train").labels == [5.0, 3.8, 0.25]
    assert data.model_kwargs()["num_classes"] == 1
    kwargs = data.policy_kwargs()
    assert kwargs["task"] == "regression" and kwargs["score_metrics"] == ["pearson", "spearman"]
    batch = data.collate([data.dataset("train")[i] for i in range(3)])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == pytest.approx([5.0, 3.8, 0.25])
    write(tmp_path / "glue/STS-B/train.tsv", [header, [*rows[0][:-1], "n/a"]])
    with pytest.raises(ValueError, match=r"STS-B/train.tsv:2: label 'n/a' is not a finite number"):
        loaded(tmp_path, "stsb")


def test_a_missing_file_names_it_and_paths_glue_dir(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"GLUE rte: .*RTE/train.tsv not found .*paths.glue_dir=.*data.demo=true"):
        loaded(tmp_path, "rte")


def test_demo_files_of_all_nine_tasks_read_with_their_configs(tmp_path):
    sizes = {}
    for task in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"):
        data = loaded(tmp_path, task, "data.demo=true", f"data.demo_dir={tmp_path / 'demo'}")
        sizes[task] = {split: len(data.dataset(split)) for split in ("train", "val", "test") if data.dataset(split)}
        labels = data.dataset("train").labels
        assert len(set(labels)) > 2 if task == "stsb" else set(labels) == set(range(len(data.class_names))), task
    assert sizes["mnli"] == {"train": 320, "val": 80, "test": 80}
    assert sizes["qqp"]["train"] == 319  # the one row broken by a newline is skipped
    assert all(s == {"train": 320, "val": 80} for t, s in sizes.items() if t not in ("mnli", "qqp"))


# ---- sentence pairs ------------------------------------------------------------------------------------------
def check_pair(tokenizer, example: dict, max_length: int, short_side: int = 1) -> None:
    """`example` encodes 40 words and "short pair" (the pair when `short_side` is 1, else the text) in
    `max_length` tokens: the long side was cut, the short one kept whole."""
    ids, types = example["input_ids"], example["token_type_ids"]
    assert len(ids) == max_length
    short = [i for i, t in zip(ids, types) if t == short_side]
    assert tokenizer.decode(short, skip_special_tokens=True) == "short pair"
    assert types == sorted(types) and types[0] == 0  # [CLS] text [SEP] are 0, pair [SEP] are 1


def test_pair_encoding_with_the_trained_wordpiece_truncates_the_longer_side(tmp_path):
    train = [[str(i), "alpha beta gamma", "short pair", "entailment"] for i in range(4)]
    write(tmp_path / "glue/RTE/train.tsv", [["index", "sentence1", "sentence2", "label"], *train])
    write(tmp_path / "glue/RTE/dev.tsv", [["index", "sentence1", "sentence2", "label"],
                                          ["0", " ".join(["alpha"] * 40), "short pair", "not_entailment"],
                                          ["1", "beta", "gamma", "entailment"]])
    data = loaded(tmp_path, "rte", "data.max_length=16")
    val = data.dataset("val")
    check_pair(data.tokenizer, val[0], 16)
    check_pair(data.tokenizer, data.encode_inputs(["short pair\t" + " ".join(["alpha"] * 40)])[0], 16, short_side=0)
    batch = data.collate([val[0], val[1]])
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    assert batch["token_type_ids"][1].tolist()[:5] == [0, 0, 0, 1, 1]  # [CLS] beta [SEP] gamma [SEP]
    assert batch["attention_mask"][1].sum() == 5


@pytest.mark.skipif(not (SHARED / "models/all-MiniLM-L6-v2").is_dir(), reason="all-MiniLM-L6-v2 not in ../shared")
def test_pair_encoding_with_a_pretrained_tokenizer(tmp_path):
    minilm = str(SHARED / "models/all-MiniLM-L6-v2")
    write(tmp_path / "glue/RTE/train.tsv", [["index", "sentence1", "sentence2", "label"],
                                            ["0", " ".join(["alpha"] * 40), "short pair", "entailment"]])
    write(tmp_path / "glue/RTE/dev.tsv", [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "entailment"]])
    data = loaded(tmp_path, "rte", f"data.tokenizer={minilm}", "data.max_length=16")
    check_pair(data.tokenizer, data.dataset("train")[0], 16)


# ---- metrics --------------------------------------------------------------------------------------------------
def test_official_metrics_against_hand_computed_values():
    binary = torch.tensor([[5.0, 1.0], [2.0, 4.0]])  # [true, predicted]: tn 5, fp 1, fn 2, tp 4
    assert matthews_corrcoef(binary) == pytest.approx(18 / math.sqrt(5 * 6 * 6 * 7))
    assert positive_f1(binary) == pytest.approx(8 / 11)
    three = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0]])
    assert matthews_corrcoef(three) == pytest.approx(36 / 66)  # (c*s - t.p) / (s^2 - p.p), t = p here
    assert matthews_corrcoef(torch.tensor([[6.0, 0.0], [4.0, 0.0]])) == 0.0  # one predicted class: undefined -> 0
    x, y = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 4.0, 5.0, 4.0])
    assert pearson(x, y) == pytest.approx(3.5 / math.sqrt(5 * 4.75))
    assert average_ranks(y).tolist() == [1.0, 2.5, 4.0, 2.5]
    assert spearman(x, y) == pytest.approx(3 / math.sqrt(5 * 4.5))
    assert pearson(x, torch.ones(4)) == 0.0


# ---- the policy: regression and the task score ------------------------------------------------------------------
class Scores(nn.Module):
    """One output per example from a feature: y = 2 * feature (what `logits` returns)."""

    def __init__(self, outputs: int = 1) -> None:
        super().__init__()
        self.lin = nn.Linear(1, outputs, bias=False)
        nn.init.constant_(self.lin.weight, 2.0)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.lin(feature[:, None])


def test_regression_policy_loss_metrics_and_predictions():
    policy = ClassificationPolicy(Scores(), class_names=[], task="regression", score_metrics=["pearson", "spearman"])
    batches = [{"feature": torch.tensor([0.5, 1.0]), "labels": torch.tensor([1.0, 2.5])},
               {"feature": torch.tensor([2.0, 1.5]), "labels": torch.tensor([3.0, 3.5])}]
    loss = policy(batches[0])
    assert float(loss.detach()) == pytest.approx(((1.0 - 1.0) ** 2 + (2.0 - 2.5) ** 2) / 2)
    loss.backward()  # MSE trains the one output
    assert float(policy.model.lin.weight.grad) == pytest.approx(2 * (0.5 * 0.0 + 1.0 * -0.5) / 2)
    state = policy.eval_state()
    with torch.no_grad():  # as in an evaluation pass
        for batch in batches:
            policy.evaluation_step(batch, state)
    metrics = policy.compute_metrics(state)
    predictions, targets = torch.tensor([1.0, 2.0, 4.0, 3.0]), torch.tensor([1.0, 2.5, 3.0, 3.5])
    assert metrics["pearson"] == pytest.approx(pearson(predictions, targets))
    assert metrics["spearman"] == pytest.approx(0.8)  # ranks [1,2,4,3] vs [1,2,3,4]: 1 - 6*2/(4*15)
    assert metrics["mse"] == pytest.approx((0 + 0.25 + 1 + 0.25) / 4) == metrics["loss"]
    assert metrics["score"] == pytest.approx((metrics["pearson"] + metrics["spearman"]) / 2)
    assert policy.predict_rows(batches[1]) == ["4.0000", "3.0000"]


def test_classification_score_metrics_and_unchanged_defaults():
    model = Scores(outputs=2)
    batch = {"feature": torch.tensor([1.0, -1.0, 2.0]), "labels": torch.tensor([1, 0, 0])}
    plain = ClassificationPolicy(model, class_names=["no", "yes"])
    state = plain.eval_state()
    with torch.no_grad():
        plain.evaluation_step(batch, state)
    assert not {"mcc", "f1", "score"} & set(plain.compute_metrics(state))  # nothing new unless asked for
    scored = ClassificationPolicy(model, class_names=["no", "yes"], score_metrics=["f1", "acc"])
    metrics = scored.compute_metrics(state)
    assert metrics["f1"] == pytest.approx(positive_f1(state["confusion"]))
    assert metrics["score"] == pytest.approx((metrics["f1"] + metrics["acc"]) / 2)
    with pytest.raises(ValueError, match=r"score_metrics='pearson' is not allowed"):
        ClassificationPolicy(model, class_names=["no", "yes"], score_metrics=["pearson"])
    with pytest.raises(ValueError, match=r"f1 \(the F1 of class 1\) needs two classes"):
        ClassificationPolicy(model, class_names=["a", "b", "c"], score_metrics=["f1"])
    with pytest.raises(ValueError, match=r"policy.class_weights and policy.label_smoothing apply to classification"):
        ClassificationPolicy(Scores(), class_names=[], task="regression", label_smoothing=0.1)


def test_regression_is_refused_by_a_modality_without_it(tmp_path):
    from emotionsumm.data.image import ImageClassificationData

    with pytest.raises(ValueError, match=r"data.task='regression' is not allowed; choose one of \['classification'\]"):
        ImageClassificationData(root=str(tmp_path), task="regression")


# ---- the GLUE table of a sweep report -----------------------------------------------------------------------------
def _job(sweep: Path, number: int, task: str, metrics: dict[str, float], official: list[str]) -> None:
    import yaml

    job = sweep / f"{number}-0000000{number}"
    (job / ".hydra").mkdir(parents=True)
    config = {"data": {"glue_task": task, "score_metrics": official},
              "trainer": {"monitor": "val/score", "mode": "max"}}
    (job / ".hydra/config.yaml").write_text(yaml.safe_dump(config))
    (job / ".hydra/overrides.yaml").write_text(yaml.safe_dump([f"data=glue_{task}"]))
    (job / "metrics.json").write_text(json.dumps(metrics))


def test_sweep_report_has_the_glue_table_and_average(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, "cola", {"val/mcc": 0.40, "val/acc": 0.7, "val/score": 0.40}, ["mcc"])
    _job(sweep, 1, "mrpc", {"val/f1": 0.80, "val/acc": 0.70, "val/score": 0.75}, ["f1", "acc"])
    _job(sweep, 2, "stsb", {"val/pearson": 0.50, "val/spearman": 0.30, "val/score": 0.40}, ["pearson", "spearman"])
    _job(sweep, 3, "mnli", {"val/acc": 0.60, "test/acc": 0.62, "val/score": 0.60}, ["acc"])
    report = write_report(sweep).read_text()
    glue = report[report.index("## GLUE"):report.index("## Jobs")]
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in glue.splitlines() if line.startswith("| ") and not line.startswith("| task")}
    # columns: mcc f1 acc pearson spearman score jobs
    assert lines["CoLA"] == ["0.4000", "", "", "", "", "0.4000", "1"]  # CoLA's acc is not official: not shown
    assert lines["MRPC"] == ["", "0.8000", "0.7000", "", "", "0.7500", "1"]
    assert lines["STS-B"] == ["", "", "", "0.5000", "0.3000", "0.4000", "1"]
    assert lines["MNLI-m"][2] == "0.6000" and lines["MNLI-mm (test split, not averaged)"][2] == "0.6200"
    assert lines["GLUE average (4 of 9 tasks)"][5] == f"{(0.40 + 0.75 + 0.40 + 0.60) / 4:.4f}"
    assert "Best job" not in report  # scores of different tasks are not compared
    assert (sweep / "report_glue.csv").read_text().splitlines()[0] == "task,mcc,f1,acc,pearson,spearman,score,jobs"


# ---- the configs -----------------------------------------------------------------------------------------------
TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


def test_make_glue_runs_every_task_config_and_experiment_glue_monitors_the_task_score(tmp_path):
    from emotionsumm.config.core import PROJECT_ROOT, validate_config

    makefile = (PROJECT_ROOT / "Makefile").read_text()
    listed = re.search(r"^GLUE_TASKS \?= (\S+)$", makefile, re.M).group(1).split(",")
    configs = sorted(p.stem for p in (PROJECT_ROOT / "conf/data").glob("glue_*.yaml") if p.stem != "glue_base")
    assert sorted(listed) == configs == sorted(f"glue_{t}" for t in TASKS)
    assert "--multirun experiment=glue data=$(GLUE_TASKS) $(ARGS)" in makefile
    for task in TASKS:
        cfg = make_cfg(tmp_path, ["experiment=glue", f"data=glue_{task}"])
        validate_config(cfg)
        assert (cfg.trainer.monitor, cfg.trainer.mode, cfg.data.glue_task) == ("val/score", "max", task)
        assert Path(cfg.data.glue_dir) == Path(cfg.paths.shared_dir) / "data/glue"  # paths.glue_dir
