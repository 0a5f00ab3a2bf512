"""Pretrained `transformers` vision backbones (model=image_hf) and the input their processors expect.

Tiny randomly initialised ViT and ConvNeXt models are saved with their image processors to a temp dir
(nothing is downloaded), then built through the shipped configs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from emotionsumm.config.core import validate_config
from emotionsumm.data.image_processor import processor_input
from emotionsumm.models.image import HFImageClassifier
from emotionsumm.training.optim import param_groups

from .conftest import make_cfg

VIT_MEAN, VIT_STD = [0.1, 0.2, 0.3], [0.5, 0.6, 0.7]


def save_tiny_vit(directory: Path) -> Path:
    """A 2-layer ViT pretrained at 32x32 whose processor asks for 40x40 (position embeddings interpolate)."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    if not (directory / "config.json").is_file():
        torch.manual_seed(0)
        ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32)).save_pretrained(directory)
        ViTImageProcessor(size={"height": 40, "width": 40}, image_mean=VIT_MEAN,
                          image_std=VIT_STD).save_pretrained(directory)
    return directory


def save_tiny_convnext(directory: Path) -> Path:
    """A 2-stage ConvNeXt whose processor resizes to a 36-pixel shortest edge (a 36x36 crop)."""
    from transformers import ConvNextConfig, ConvNextImageProcessor, ConvNextModel

    if not (directory / "config.json").is_file():
        torch.manual_seed(0)
        ConvNextModel(ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1])).save_pretrained(directory)
        ConvNextImageProcessor(size={"shortest_edge": 36}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="module")
def convnext(tmp_path_factory) -> Path:
    return save_tiny_convnext(tmp_path_factory.mktemp("convnext"))


def trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


# ---- the processor's input -------------------------------------------------------------------
def test_processor_input_is_the_crop_or_resize_size_and_the_mean_std(vit, convnext, tmp_path):
    from transformers import BitImageProcessor

    assert processor_input(str(vit)).size == (40, 40)
    assert processor_input(str(vit)).mean == tuple(VIT_MEAN) and processor_input(str(vit)).std == tuple(VIT_STD)
    assert processor_input(str(convnext)).size == (36, 36)
    assert processor_input(str(convnext)).mean == (0.5, 0.5, 0.5)
    cropping = tmp_path / "bit"
    BitImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 24, "width": 20},
                      do_center_crop=True).save_pretrained(cropping)
    assert processor_input(str(cropping)).size == (24, 20)
    plain = tmp_path / "plain"
    BitImageProcessor(size={"shortest_edge": 30}, do_center_crop=False, do_normalize=False).save_pretrained(plain)
    assert processor_input(str(plain)) == type(processor_input(str(plain)))((30, 30), None, None)
    with pytest.raises(FileNotFoundError, match=r"data.processor: no image processor \(preprocessor_config.json\)"):
        processor_input(str(tmp_path / "missing"))


def setup_data(run: Path, overrides: list[str]):
    cfg = make_cfg(run, ["data=image_demo", *overrides])
    validate_config(cfg)
    data = instantiate(cfg.data)
    data.setup(None, ("train",))
    return cfg, data


def test_image_hf_alone_gives_rgb_faces_at_the_processors_size_and_statistics(vit, tmp_path):
    cfg, data = setup_data(tmp_path / "run", ["model=image_hf", f"model.pretrained={vit}"])
    assert (cfg.data.channels, cfg.data.image_size, cfg.data.normalize) == (3, "processor", "processor")
    assert data.pipeline.size == (40, 40) and data.pipeline.channels == 3
    assert data.pipeline.mean == VIT_MEAN and data.pipeline.std == VIT_STD
    assert data.state_dict()["mean"] == VIT_MEAN  # stored in the checkpoint like train-fitted statistics
    train = data.dataset("train")
    raw = train.sources[0]  # the grey demo face, decoded once: repeated into RGB at 40x40
    assert raw.shape == (3, 40, 40) and torch.equal(raw[0], raw[1]) and torch.equal(raw[1], raw[2])
    pixels = train.pipeline(raw)  # the evaluation transform: no augmentation
    expected = (raw.float() / 255 - torch.tensor(VIT_MEAN).view(3, 1, 1)) / torch.tensor(VIT_STD).view(3, 1, 1)
    torch.testing.assert_close(pixels, expected)
    assert data.model_kwargs()["in_channels"] == 3


def test_explicit_data_overrides_win_over_the_processor(vit, tmp_path):
    _, data = setup_data(tmp_path / "run", ["model=image_hf", f"model.pretrained={vit}", "data.image_size=24",
                                            "data.normalize=train", "data.channels=1"])
    assert data.pipeline.size == (24, 24) and data.pipeline.channels == 1
    images = torch.stack(list(data.dataset("train").sources)).double() / 255
    assert data.pipeline.mean == pytest.approx([images.mean().item()], abs=1e-6)  # fitted on the training faces


def test_resnet18_config_feeds_imagenet_statistics_at_112_unless_overridden():
    cfg = make_cfg(Path("/nonexistent/compose-only"), ["experiment=emotion_image", "model=image_resnet18"])
    assert (cfg.data.channels, cfg.data.image_size, cfg.data.normalize) == (1, 112, "imagenet")
    cfg = make_cfg(Path("/nonexistent/compose-only"), ["experiment=emotion_image", "model=image_resnet18",
                                                        "data.image_size=64", "data.normalize=train"])
    assert (cfg.data.image_size, cfg.data.normalize) == (64, "train")
    cfg = make_cfg(Path("/nonexistent/compose-only"), ["experiment=emotion_image"])  # the small CNN: as before
    assert (cfg.data.channels, cfg.data.image_size, cfg.data.normalize, cfg.data.processor) == (1, 48, "train", None)


def test_processor_modes_without_a_processor_name_the_missing_key(tmp_path):
    from emotionsumm.data.image_transforms import ImagePipeline

    with pytest.raises(ValueError, match=r"data.image_size=processor needs data.processor"):
        ImagePipeline(3, "processor")
    with pytest.raises(ValueError, match=r"data.normalize=processor needs data.processor"):
        ImagePipeline(3, 8).choose_normalization("processor", None)


# ---- the model -------------------------------------------------------------------------------
def test_vit_and_convnext_pool_what_the_backbone_gives(vit, convnext):
    from transformers import AutoModel

    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 40, 40)
    model = HFImageClassifier(num_classes=5, pretrained=str(vit)).eval()
    reference = AutoModel.from_pretrained(str(vit)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model.features(pixels),
                                   reference(pixel_values=pixels, interpolate_pos_encoding=True).pooler_output)
        assert model(pixels).shape == (2, 5)
        mean = HFImageClassifier(num_classes=5, pretrained=str(vit), pooling="mean").eval()
        torch.testing.assert_close(mean.features(pixels), reference(
            pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state.mean(1))
        cls = HFImageClassifier(num_classes=5, pretrained=str(vit), pooling="cls").eval()
        torch.testing.assert_close(cls.features(pixels), reference(
            pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0])
        grey = torch.randn(2, 1, 40, 40)  # data.channels=1: repeated over the model's 3 channels
        torch.testing.assert_close(model.features(grey), model.features(grey.expand(-1, 3, -1, -1)))
        conv = HFImageClassifier(num_classes=4, pretrained=str(convnext)).eval()
        assert conv.head[-1].in_features == 16 and conv(torch.randn(2, 3, 36, 36)).shape == (2, 4)
        with pytest.raises(ValueError, match="model.pooling=cls: ConvNextModel is a conv net"):
            HFImageClassifier(num_classes=4, pretrained=str(convnext), pooling="cls")(torch.randn(1, 3, 36, 36))


def test_freezing_freezes_the_whole_backbone_and_unfreezes_top_layers_on_schedule(vit, convnext):
    model = HFImageClassifier(num_classes=3, pretrained=str(vit), freeze_backbone=True,
                              unfreeze_at_epochs={1: 1, 3: -1})
    assert trainable(model) == {"head.1.weight", "head.1.bias"}
    assert model.on_epoch_start(0) is False and model.on_epoch_start(1) is True
    backbone = {n.removeprefix("backbone.model.") for n in trainable(model) if n.startswith("backbone.")}
    assert {n.split(".")[0] for n in backbone} == {"layers", "layernorm", "pooler"}
    assert {n.split(".")[1] for n in backbone if n.startswith("layers.")} == {"1"}  # the top layer only
    assert model.on_epoch_start(3) is True and trainable(model) == {n for n, _ in model.named_parameters()}
    model.on_epoch_start(1)  # computed from the epoch alone: what a resumed run gets
    assert not any("embeddings" in n or "layers.0." in n for n in trainable(model))

    conv = HFImageClassifier(num_classes=3, pretrained=str(convnext), freeze_backbone=True,
                             unfreeze_at_epochs={2: 1})
    conv.on_epoch_start(2)
    assert {n.removeprefix("backbone.model.").split(".")[0] + "." + n.removeprefix("backbone.model.").split(".")[2]
            for n in trainable(conv) if n.startswith("backbone.model.encoder")} == {"encoder.1"}
    assert any(n.startswith("backbone.model.layernorm") for n in trainable(conv))
    assert not any(n.startswith("backbone.model.embeddings") for n in trainable(conv))


def test_mean_pooling_keeps_the_unused_pooler_frozen_even_when_all_trains(vit):
    model = HFImageClassifier(num_classes=3, pretrained=str(vit), pooling="mean")
    assert not any(n.startswith("backbone.model.pooler") for n in trainable(model))
    assert trainable(model) == {n for n, _ in model.named_parameters() if ".pooler." not in n}


def test_backbone_lr_is_the_default_of_its_part_and_group_lr_overrides_it(vit):
    model = HFImageClassifier(num_classes=3, pretrained=str(vit), lr=2e-5)
    assert model.param_lrs() == {"backbone": 2e-5}
    lr_of = {id(p): g.get("lr") for g in param_groups(model, 0.01) for p in g["params"]}
    assert {lr_of[id(p)] for p in model.backbone.parameters()} == {2e-5}
    assert {lr_of[id(p)] for p in model.head.parameters()} == {None}  # optimizer.lr
    lr_of = {id(p): g.get("lr") for g in param_groups(model, 0.01, {"backbone": 1e-3}) for p in g["params"]}
    assert {lr_of[id(p)] for p in model.backbone.parameters()} == {1e-3}
    with pytest.raises(ValueError, match=r"model.lr=0 is out of range"):
        HFImageClassifier(num_classes=3, pretrained=str(vit), lr=0)


def test_bad_pretrained_values_name_the_key(vit, tmp_path):
    from transformers import BertConfig, BertModel

    with pytest.raises(FileNotFoundError, match=r"model.pretrained: no pretrained model \(config.json\)"):
        HFImageClassifier(num_classes=3, pretrained=str(tmp_path / "nothing"))
    text = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8)).save_pretrained(text)
    with pytest.raises(ValueError, match=r"model.pretrained=.*bert is a BertModel \(bert\), not a vision model"):
        HFImageClassifier(num_classes=3, pretrained=str(text))
    with pytest.raises(ValueError, match=r"model.pooling='max' is not allowed"):
        HFImageClassifier(num_classes=3, pretrained=str(vit), pooling="max")


def test_a_model_without_a_layer_list_freezes_as_one_stage(vit, caplog):
    from emotionsumm.models import image

    with caplog.at_level(logging.WARNING):
        original = image.STAGE_LISTS
        image.STAGE_LISTS = ("no_such_list",)
        try:
            model = HFImageClassifier(num_classes=3, pretrained=str(vit), freeze_backbone=True,
                                      unfreeze_at_epochs={1: 1})
        finally:
            image.STAGE_LISTS = original
    assert "freezes and unfreezes as one stage" in caplog.text
    assert trainable(model) == {"head.1.weight", "head.1.bias"}
    model.on_epoch_start(1)
    assert trainable(model) == {n for n, _ in model.named_parameters()}


def test_the_experiment_without_model_pretrained_asks_for_it(tmp_path):
    cfg = make_cfg(tmp_path / "run", ["experiment=emotion_image_hf", "data=image_demo"])
    validate_config(cfg)
    with pytest.raises(Exception, match=r"data.image_size=processor needs data.processor.*set model.pretrained="):
        instantiate(cfg.data)
    with pytest.raises(ValueError, match=r"model.pretrained is not set"):
        HFImageClassifier(num_classes=3, pretrained=None)
