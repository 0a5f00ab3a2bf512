"""Precomputed-feature modalities: both storage layouts, the train-only normaliser and its checkpoint state,
masking of missing and non-finite values, shape errors that name the file, column and line, the encoders
(padding never changes an output), fusion with user-named modalities, and the export manifest of predict."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from emotionsumm.data.features import FeatureReadError, rebase
from emotionsumm.data.multimodal import MultimodalData
from emotionsumm.models.features import FeatureMLP, SequenceEncoder
from emotionsumm.models.fusion import FusionClassifier
from emotionsumm.training.optim import param_groups

from .conftest import make_cfg

FEATURES = {"face": {"column": "face_col"}, "voice": {}}


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def feature_set(tmp_path: Path) -> dict[str, np.ndarray]:
    """face: vectors [3] (train: one .npy array, rows by index; val: one .npz archive's only array);
    voice: sequences [T, 2] (train: one .npy per example; val: named arrays of one .npz)."""
    rng = np.random.default_rng(0)
    arrays = {"face_train": rng.normal(5.0, 2.0, (4, 3)).astype(np.float32),
              "face_val": rng.normal(0.0, 1.0, (2, 3)).astype(np.float32),
              "voice": [rng.normal(-1.0, 3.0, (t, 2)).astype(np.float32) for t in (2, 5, 3, 4, 6)]}
    np.save(tmp_path / "face_train.npy", arrays["face_train"])
    np.savez(tmp_path / "face_val.npz", arrays["face_val"])
    (tmp_path / "voice").mkdir()
    for i in range(3):
        np.save(tmp_path / "voice" / f"{i}.npy", arrays["voice"][i])
    np.savez(tmp_path / "voice_val.npz", utt_a=arrays["voice"][3], utt_b=arrays["voice"][4])
    write_manifest(tmp_path / "train.jsonl", [
        {"face_col": "face_train.npy#0", "voice": "voice/0.npy", "label": "pos"},
        {"face_col": "face_train.npy#1", "voice": None, "label": "neg"},
        {"face_col": "face_train.npy#2", "voice": "voice/1.npy", "label": "pos"},
        {"face_col": None, "voice": "voice/2.npy", "label": "neg"},
        {"face_col": "face_train.npy#3", "label": "neg"}])
    write_manifest(tmp_path / "val.jsonl", [
        {"face_col": "face_val.npz#1", "voice": "voice_val.npz#utt_b", "label": "pos"},
        {"face_col": "face_val.npz#0", "voice": "voice_val.npz#utt_a", "label": "neg"}])
    return arrays


def feature_data(tmp_path: Path, state: dict | None = None, **kwargs) -> MultimodalData:
    files = {"train": str(tmp_path / "train.jsonl"), "val": str(tmp_path / "val.jsonl")}
    return MultimodalData(files=kwargs.pop("files", files), features=kwargs.pop("features", FEATURES),
                          modalities=kwargs.pop("modalities", ["face", "voice"]), state=state, **kwargs)


def test_both_layouts_load_into_masked_padded_batches_normalised_by_train_statistics(tmp_path):
    arrays = feature_set(tmp_path)
    data = feature_data(tmp_path)
    data.setup(None, splits=("train", "val"))
    assert data.active == ["face", "voice"] and data.class_names == ["neg", "pos"]
    face, voice = data.features["face"], data.features["voice"]
    assert (face.dim, face.sequence, voice.dim, voice.sequence) == (3, False, 2, True)
    # the normalisers come from the training rows only: all face vectors, every frame of the train sequences
    train_frames = np.concatenate(arrays["voice"][:3])
    assert torch.allclose(face.mean, torch.tensor(arrays["face_train"].mean(0)), atol=1e-5)
    assert torch.allclose(face.std, torch.tensor(arrays["face_train"].std(0)), atol=1e-5)
    assert torch.allclose(voice.mean, torch.tensor(train_frames.mean(0)), atol=1e-5)

    train = data.collate([data.dataset("train")[i] for i in range(5)])
    assert train["face_mask"].tolist() == [True, True, True, False, True]
    assert train["voice_mask"].tolist() == [True, False, True, True, False]
    assert train["face_features"].shape == (5, 3) and not train["face_features"][3].any()
    assert train["voice_features"].shape == (5, 5, 2)  # padded to the longest sequence of the batch
    assert train["voice_frame_mask"].sum(1).tolist() == [2, 0, 5, 3, 0]
    assert not train["voice_features"][~train["voice_frame_mask"]].any()
    expected = (arrays["face_train"][2] - arrays["face_train"].mean(0)) / arrays["face_train"].std(0)
    assert np.allclose(train["face_features"][2].numpy(), expected, atol=1e-5)

    val = data.collate([data.dataset("val")[i] for i in range(2)])
    # .npz#<row> of the archive's only array, .npz#<name> of a named array; train statistics, not val's
    expected = (arrays["face_val"][1] - arrays["face_train"].mean(0)) / arrays["face_train"].std(0)
    assert np.allclose(val["face_features"][0].numpy(), expected, atol=1e-5)
    assert val["voice_frame_mask"].sum(1).tolist() == [6, 4]
    expected = (arrays["voice"][4] - train_frames.mean(0)) / train_frames.std(0)
    assert np.allclose(val["voice_features"][0].numpy(), expected, atol=1e-4)
    kwargs = data.model_kwargs()
    assert kwargs["encoder_kwargs"] == {"face": {"input_dim": 3, "sequence": False},
                                        "voice": {"input_dim": 2, "sequence": True}}
    assert kwargs["inputs"]["voice"] == {"features": "features", "frame_mask": "frame_mask"}


def test_the_normaliser_is_restored_from_the_checkpoint_state_without_reading_train(tmp_path):
    feature_set(tmp_path)
    data = feature_data(tmp_path)
    data.setup(None, splits=("train", "val"))
    buffer = io.BytesIO()
    torch.save(data.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # how checkpoints are read
    (tmp_path / "train.jsonl").unlink()  # the training split is not needed again
    restored = feature_data(tmp_path, state=state)
    restored.setup(None, splits=("val",))
    assert torch.equal(restored.features["face"].mean, data.features["face"].mean)
    before = data.collate([data.dataset("val")[i] for i in range(2)])
    after = restored.collate([restored.dataset("val")[i] for i in range(2)])
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_non_finite_values_are_masked_and_a_row_left_with_nothing_is_left_out(tmp_path):
    vectors = np.ones((3, 2), dtype=np.float32)
    vectors[1, 0] = np.nan
    np.save(tmp_path / "v.npy", vectors)
    frames = np.arange(8, dtype=np.float32).reshape(4, 2)
    frames[[0, 2]] = [np.inf, 0.0]
    frames[2, 1] = np.nan
    np.save(tmp_path / "s.npy", frames)
    np.save(tmp_path / "bad_s.npy", np.full((3, 2), np.nan, dtype=np.float32))
    rows = [{"face_col": "v.npy#0", "voice": "s.npy", "label": "a"},
            {"face_col": "v.npy#1", "voice": "s.npy", "label": "b"},  # NaN vector: face masked
            {"face_col": "v.npy#1", "voice": "bad_s.npy", "label": "a"},  # nothing usable: left out
            {"face_col": "v.npy#2", "voice": "bad_s.npy", "label": "b"}]  # all frames NaN: voice masked
    train = write_manifest(tmp_path / "train.jsonl", rows)
    data = feature_data(tmp_path, files={"train": str(train)}, features={"face": {"column": "face_col"},
                                                                         "voice": {"normalize": False}})
    data.setup(None, splits=("train",))
    dataset = data.dataset("train")
    assert len(dataset) == 3 and dataset.names[2].endswith("train.jsonl:4")
    batch = data.collate([dataset[i] for i in range(3)])
    assert batch["face_mask"].tolist() == [True, False, True]
    assert batch["voice_mask"].tolist() == [True, True, False]
    assert batch["voice_frame_mask"].sum(1).tolist() == [2, 2, 0]  # frames 0 and 2 dropped
    assert torch.equal(batch["voice_features"][0], torch.tensor([[2.0, 3.0], [6.0, 7.0]]))
    assert torch.isfinite(batch["face_features"]).all() and torch.isfinite(batch["voice_features"]).all()
    assert "non-finite values masked in 2 example(s)" in data.describe()


@pytest.mark.parametrize(("value", "message"), [
    ("face_train.npy#9", r"train.jsonl:1: column 'face_col' \(data.features.face\): row 9 is out of range: "
                         r".*face_train.npy holds 4 rows"),
    ("nowhere.npy", r"train.jsonl:1: column 'face_col' .*file not found: .*nowhere.npy"),
    ("face.txt", r"train.jsonl:1: column 'face_col' .*'face.txt' is not a feature reference; expected <file>.npy"),
    ("wide.npy", r"train.jsonl:1: .*wide.npy: shape \(5,\), but this modality holds \[3\] vectors"),
    ("seq.npy", r"train.jsonl:1: .*seq.npy: shape \(2, 3\), but this modality holds \[3\] vectors"),
    ("cube.npy", r"train.jsonl:1: .*cube.npy: shape \(2, 2, 3\); expected \[D\] \(a vector\) or \[T, D\]"),
    ("face_val.npz#x", r"train.jsonl:1: .*face_val.npz has no array 'x'"),
])
def test_a_bad_reference_or_shape_names_the_line_the_column_and_the_file(tmp_path, value, message):
    feature_set(tmp_path)
    np.save(tmp_path / "wide.npy", np.zeros(5, dtype=np.float32))
    np.save(tmp_path / "seq.npy", np.zeros((2, 3), dtype=np.float32))
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 3), dtype=np.float32))
    good = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    rows = [{**good, "face_col": value}, good]  # the good row (a [3] vector) fixes the dimension first
    rows.reverse()
    bad = write_manifest(tmp_path / "bad.jsonl", rows)
    with pytest.raises(FeatureReadError, match=message.replace("train.jsonl:1", "bad.jsonl:2")):
        feature_data(tmp_path, files={"train": str(bad)}).setup(None, splits=("train",))
    skipping = feature_data(tmp_path, files={"train": str(bad)}, on_error="skip")
    skipping.setup(None, splits=("train",))
    assert len(skipping.dataset("train")) == 1 and skipping.skipped == {"train": 1}


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"data.modalities=\['face', 'nose'\] must be a non-empty subset of "
                                         r"\['text', 'audio', 'image', 'face', 'voice'\]"):
        MultimodalData(features=FEATURES, modalities=["face", "nose"])
    with pytest.raises(ValueError, match="data.features.text: text is a media modality"):
        MultimodalData(features={"text": {}}, modalities=["text"])
    with pytest.raises(ValueError, match=r"data.features.face: unknown key\(s\) \['dims'\]"):
        MultimodalData(features={"face": {"dims": 3}}, modalities=["face"])
    with pytest.raises(ValueError, match="same batch key 'text_attention_mask'"):
        MultimodalData(features={"text_attention": {}}, modalities=["text_attention"])
    with pytest.raises(ValueError, match="data.features.2d: a feature modality's name must be a letter"):
        MultimodalData(features={"2d": {}}, modalities=["2d"])


@pytest.mark.parametrize("encoder", ["none", "gru", "transformer"])
@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_padding_does_not_change_a_sequence_encoders_output(encoder, pooling):
    torch.manual_seed(0)
    model = SequenceEncoder(num_classes=3, input_dim=5, hidden=16, encoder=encoder, num_layers=2, num_heads=2,
                            pooling=pooling).eval()
    lengths = [4, 7, 1]
    sequences = [torch.randn(n, 5) for n in lengths]

    def padded(total: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.full((3, total, 5), fill)
        mask = torch.zeros(3, total, dtype=torch.bool)
        for i, s in enumerate(sequences):
            x[i, : len(s)], mask[i, : len(s)] = s, True
        return x, mask

    with torch.no_grad():
        tight = model(*padded(7, 0.0))
        loose = model(*padded(12, 9.0))  # longer padding, filled with garbage
        alone = torch.cat([model(s[None], torch.ones(1, len(s), dtype=torch.bool)) for s in sequences])
        empty = model.features(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.bool))
    assert torch.allclose(tight, loose, atol=1e-5) and torch.allclose(tight, alone, atol=1e-5)
    assert torch.equal(empty, torch.zeros(2, 16))  # a missing example: zeros, never NaN
    assert not torch.allclose(tight[0], tight[1])


def test_each_encoder_names_the_config_for_the_other_kind_of_features():
    with pytest.raises(ValueError, match="use model@model.encoders.<name>=features_seq"):
        FeatureMLP(num_classes=2, input_dim=4, sequence=True)
    with pytest.raises(ValueError, match="use model@model.encoders.<name>=features_mlp"):
        SequenceEncoder(num_classes=2, input_dim=4, sequence=False)
    with pytest.raises(ValueError, match="model.encoder='lstm' is not allowed"):
        SequenceEncoder(num_classes=2, input_dim=4, encoder="lstm")
    mlp = FeatureMLP(num_classes=2, input_dim=4, hidden=8, num_layers=0)
    assert mlp.head[-1].in_features == 4 and mlp(torch.randn(3, 4)).shape == (3, 2)


def test_fusion_of_user_named_feature_modalities_trains_by_part(tmp_path):
    feature_set(tmp_path)
    data = feature_data(tmp_path)
    data.setup(None, splits=("train",))
    cfg = make_cfg(Path("unused"), ["experiment=emotion_features_demo", "+model@model.encoders.face=features_mlp",
                                    "+model@model.encoders.voice=features_seq", "group_lr={voice: 1e-4}"])
    model = instantiate(cfg.model, **data.model_kwargs())
    assert set(model.param_parts()) == {"face", "voice", "fusion"}
    policy = instantiate(cfg.policy, model=model, **data.policy_kwargs())
    groups = param_groups(policy, 0.0, dict(cfg.group_lr))
    lr_of = {id(p): g.get("lr", cfg.optimizer.lr) for g in groups for p in g["params"]}
    assert {lr_of[id(p)] for p in model.encoders.voice.project.parameters()} == {1e-4}
    assert {lr_of[id(p)] for p in model.encoders.face.parameters()} == {cfg.optimizer.lr}
    batch = data.collate([data.dataset("train")[i] for i in range(5)])
    loss = policy(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.encoders.voice.project[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():  # a row without a face ignores the face features
        changed = dict(batch, face_features=batch["face_features"] + 5)
        masked = ~batch["face_mask"]
        assert torch.allclose(model(**batch)[masked], model(**changed)[masked], atol=1e-6)


def test_a_feature_modality_without_an_encoder_or_inputs_says_what_to_add():
    with pytest.raises(ValueError, match=r"\+model@model.encoders.face=features_mlp \(vectors\) or features_seq"):
        FusionClassifier(num_classes=2, modalities=["face"], encoders={"visual_au": {}})
    mlp = {"_target_": "emotionsumm.models.features.FeatureMLP"}
    with pytest.raises(ValueError, match="modality 'face': the data gives no batch inputs for it"):
        FusionClassifier(num_classes=2, modalities=["face"], encoders={"face": mlp})
    with pytest.raises(ValueError, match="may not be called 'fusion'"):
        FusionClassifier(num_classes=2, modalities=["fusion"], encoders={"fusion": mlp},
                         inputs={"fusion": {"features": "features"}})


def test_the_export_manifest_keeps_every_row_and_rebases_its_paths(tmp_path):
    feature_set(tmp_path)
    data = feature_data(tmp_path, modalities=["voice"])
    data.setup(None, splits=("train",))
    source = tmp_path / "train.jsonl"
    predicted = data.predict_dataset(str(source))
    assert len(predicted) == 3  # the rows without a voice are not predicted
    out = tmp_path / "exported" / "deeper" / "train.jsonl"
    text = data.feature_manifest(str(source), predicted.names, tmp_path / "exported" / "emb.npy", "voice_emb", out)
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["voice_emb"] for r in rows] == ["../emb.npy#0", None, "../emb.npy#1", "../emb.npy#2", None]
    assert rows[0]["voice"] == "../../voice/0.npy" and rows[0]["face_col"] == "../../face_train.npy#0"
    assert rows[1]["voice"] is None and rows[4]["label"] == "neg"
    assert (out.parent / rows[2]["voice"]).resolve() == (tmp_path / "voice" / "1.npy").resolve()
    with pytest.raises(ValueError, match="embeddings_column=voice: .*train.jsonl:1 has a column 'voice' already"):
        data.feature_manifest(str(source), predicted.names, tmp_path / "emb.npy", "voice", out)
    assert rebase("/abs/x.npy#3", tmp_path, out.parent) == "/abs/x.npy#3"


def test_the_demo_corpus_holds_a_vector_view_and_a_sequence_view(tmp_path):
    cfg = make_cfg(tmp_path, ["experiment=emotion_features_demo"])
    data = instantiate(cfg.data)
    data.setup(None, splits=("train", "test"))
    visual, audio = data.features["visual_au"], data.features["audio_lld"]
    assert (visual.dim, visual.sequence, audio.dim, audio.sequence) == (17, False, 12, True)
    assert len(data.dataset("test")) == 160 and data.class_names == ["anger", "calm", "joy", "sadness"]
    manifest = [json.loads(line) for line in Path(cfg.data.files.train).read_text().splitlines()]
    assert all(r["visual_au"] or r["audio_lld"] for r in manifest)
    assert 0.05 < sum(r["visual_au"] is None for r in manifest) / len(manifest) < 0.15
    assert visual.masked_examples > 0 and audio.masked_frames > 0  # the NaNs the demo holds are masked


def test_input_dropout_and_noise_act_in_training_only_and_off_change_nothing():
    torch.manual_seed(0)
    plain = FeatureMLP(num_classes=3, input_dim=8, hidden=16)
    torch.manual_seed(0)
    regularised = FeatureMLP(num_classes=3, input_dim=8, hidden=16, input_dropout=0.5, input_noise=1.0)
    torch.manual_seed(0)
    off = FeatureMLP(num_classes=3, input_dim=8, hidden=16, input_dropout=0.0, input_noise=0.0)
    assert plain.state_dict().keys() == regularised.state_dict().keys()
    x = torch.randn(4, 8)
    for model in (plain, regularised, off):
        model.eval()
    assert torch.equal(plain(x), regularised(x))  # same weights, nothing added at evaluation
    plain.train(), off.train(), regularised.train()
    torch.manual_seed(1)
    a = plain(x)
    torch.manual_seed(1)
    assert torch.equal(off(x), a)  # 0 / 0 draws no random numbers: old configs train the same
    torch.manual_seed(1)
    assert not torch.equal(regularised(x), a)
    with pytest.raises(ValueError, match="model.input_noise"):
        FeatureMLP(num_classes=3, input_dim=8, input_noise=-0.1)


def speaker_manifest(tmp_path: Path, name: str, speakers: dict[str, tuple[float, float]],
                     rows: int = 4) -> tuple[Path, dict[str, np.ndarray]]:
    """`rows` face vectors [3] and voice sequences [T, 2] per speaker, each speaker's values at its own
    offset and scale (as voices differ); returns the manifest and each speaker's face vectors."""
    rng = np.random.default_rng(0)  # the same draws for the same speakers: only offset and scale differ
    lines, faces = [], {}
    for speaker, (offset, scale) in speakers.items():
        faces[speaker] = (offset + scale * rng.normal(size=(rows, 3))).astype(np.float32)
        np.save(tmp_path / f"{name}_{speaker}.npy", faces[speaker])
        for i in range(rows):
            frames = offset + scale * rng.normal(size=(2 + i, 2))
            np.save(tmp_path / f"{name}_{speaker}_{i}.npy", frames.astype(np.float32))
            lines.append({"face_col": f"{name}_{speaker}.npy#{i}", "voice": f"{name}_{speaker}_{i}.npy",
                          "label": ["neg", "pos"][i % 2], "speaker": speaker})
    return write_manifest(tmp_path / f"{name}.jsonl", lines), faces


def grouped_data(tmp_path: Path, manifest: Path, normalize="group", **kwargs) -> MultimodalData:
    features = {"face": {"column": "face_col", "normalize": normalize}, "voice": {"normalize": normalize}}
    return feature_data(tmp_path, files={}, file=str(manifest), split="group", group_column="speaker",
                        test_groups=["c"], features=features, **kwargs)


def test_normalize_group_standardises_each_speaker_by_its_own_clips_in_every_split_and_in_predict(tmp_path):
    speakers = {"a": (0.0, 1.0), "b": (10.0, 3.0), "c": (-5.0, 0.5)}
    manifest, faces = speaker_manifest(tmp_path, "all", speakers)
    data = grouped_data(tmp_path, manifest)
    data.setup(None, splits=("train", "test"))
    expected = {s: (v - v.mean(0)) / v.std(0) for s, v in faces.items()}
    train = data.collate([data.dataset("train")[i] for i in range(8)])
    # after each speaker's own standardisation the training split has mean 0 / std 1: the train step is identity
    assert np.allclose(train["face_features"].numpy(), np.concatenate([expected["a"], expected["b"]]), atol=1e-4)
    test = data.collate([data.dataset("test")[i] for i in range(4)])
    assert np.allclose(test["face_features"].numpy(), expected["c"], atol=1e-4)  # the unseen speaker: its own
    frames = test["voice_features"][test["voice_frame_mask"]]
    assert torch.allclose(frames.mean(0), torch.zeros(2), atol=1e-5)  # every frame of the speaker counts once
    assert torch.allclose(frames.std(0, unbiased=False), torch.ones(2), atol=1e-4)
    # the linear baseline keeps its fixed representation: the vectors as read, frames averaged
    assert np.allclose(data.baseline_views("test")["face"], faces["c"], atol=1e-5)
    assert np.allclose(data.baseline_views("train", [5])["face"], faces["b"][1:2], atol=1e-5)
    frame_means = [np.load(tmp_path / f"all_c_{i}.npy").mean(0) for i in range(4)]
    assert np.allclose(data.baseline_views("test")["voice"], frame_means, atol=1e-5)
    # a speaker's offset and scale do not reach the model: the same clips, moved and scaled, give the same batch
    moved, _ = speaker_manifest(tmp_path, "moved", {"c": (100.0, 7.0)})
    shifted = data.predict_dataset(str(moved))
    before = speaker_manifest(tmp_path, "same", {"c": (0.0, 1.0)})[0]
    reference = data.predict_dataset(str(before))
    for key in ("face_features", "voice_features"):
        assert torch.allclose(data.collate([shifted[i] for i in range(4)])[key],
                              data.collate([reference[i] for i in range(4)])[key], atol=1e-4)


def test_normalize_group_errors_name_the_key_and_the_fix(tmp_path):
    manifest, _ = speaker_manifest(tmp_path, "all", {"a": (0.0, 1.0), "b": (1.0, 1.0), "c": (2.0, 1.0)})
    with pytest.raises(ValueError, match=r"data.features.face.normalize='speaker': allowed are true .* group"):
        grouped_data(tmp_path, manifest, normalize="speaker")
    data = grouped_data(tmp_path, manifest)
    data.setup(None, splits=("train", "test"))
    lone, _ = speaker_manifest(tmp_path, "lone", {"d": (0.0, 1.0)}, rows=1)
    with pytest.raises(ValueError, match=r"normalize=group: group\(s\) \['d'\] of predict have fewer than 2 usable"):
        data.predict_dataset(str(lone))
    no_group = feature_data(tmp_path, files={"train": str(manifest)},
                            features={"face": {"column": "face_col", "normalize": "group"}}, modalities=["face"])
    with pytest.raises(ValueError, match=r"normalize=group: 12 row\(s\) of train have no group; set "
                                         r"data.group_column"):
        no_group.setup(None, splits=("train",))


def test_the_documented_small_recipe_with_speaker_normalisation_trains_and_scores_its_baseline(tmp_path):
    """docs/modalities.md "Few rows": emotion_features_small on a manifest split by speaker, normalize: group."""
    from emotionsumm.train import train

    manifest, _ = speaker_manifest(tmp_path, "all", {s: (float(i), 1.0 + i) for i, s in enumerate("abcd")}, rows=6)
    run_dir = tmp_path / "run"
    metrics = train(make_cfg(run_dir, [
        "experiment=emotion_features_small", "data.demo=false", f"data.file={manifest}", "data.split=group",
        "data.group_column=speaker", "data.val_groups=[c]", "data.test_groups=[d]",
        "~data.features.visual_au", "~data.features.audio_lld", "~model.encoders.visual_au",
        "~model.encoders.audio_lld", "+data.features.face={column: face_col, normalize: group}",
        "data.modalities=[face]", "+model@model.encoders.face=features_small", "trainer.max_epochs=2",
        "trainer.progress_bar=false", "baseline=linear"]))
    assert 0.0 <= metrics["test/acc"] <= 1.0 and 0.0 <= metrics["baseline/linear/test/acc"] <= 1.0
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    face = state["data"]["features"]["face"]
    # after each speaker's own standardisation the training split's statistics are the identity
    assert torch.allclose(face["mean"], torch.zeros(3), atol=1e-5)
    assert torch.allclose(face["std"], torch.ones(3), atol=1e-5)
