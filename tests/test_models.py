"""Encoders and the joint-fusion model: shapes, fusion parts, probes, param groups."""
import pytest
import torch

from milesbook.errors import UserError
from milesbook.models import ResNet, build_encoder, build_model


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_parts_sum_to_fusion_logits(fusion):
    torch.manual_seed(0)
    model = build_model({"image": (1, 8, 8), "audio": (1, 39, 13)}, num_classes=10, fusion=fusion)
    x = {"image": torch.randn(5, 1, 8, 8), "audio": torch.randn(5, 1, 39, 13)}
    out = model(x)
    assert out.fusion.shape == (5, 10)
    assert set(out.heads) == set(out.parts) == {"image", "audio"}
    assert torch.allclose(out.parts["image"] + out.parts["audio"], out.fusion, atol=1e-5)
    # the fusion logits are those of the linear head on the fused features
    model.eval()
    z = {m: model.encoders[m](x[m]) for m in x}
    fused = torch.cat([z["image"], z["audio"]], 1) if fusion == "concat" else z["image"] + z["audio"]
    assert torch.allclose(model.eval()(x).fusion, model.fusion_head(fused), atol=1e-5)


def test_concat_part_uses_its_own_weight_columns():
    model = build_model({"a": (4,), "b": (4,)}, num_classes=3, fusion="concat", feature_dim=8)
    x = {"a": torch.randn(2, 4), "b": torch.randn(2, 4)}
    out = model(x)
    z_b = model.encoders["b"](x["b"])
    w, bias = model.fusion_head.weight, model.fusion_head.bias
    assert torch.allclose(out.parts["b"], z_b @ w[:, 8:].t() + bias / 2, atol=1e-6)


def test_detached_heads_are_probes():
    model = build_model({"a": (4,), "b": (4,)}, num_classes=3)
    out = model({"a": torch.randn(6, 4), "b": torch.randn(6, 4)}, detach_heads=True)
    out.heads["a"].sum().backward()
    assert all(p.grad is None for p in model.encoders["a"].parameters())
    assert model.heads["a"].weight.grad is not None


def test_param_groups_named_and_complete():
    model = build_model({"image": (1, 8, 8), "audio": (1, 39, 13)}, num_classes=10)
    groups = model.param_groups(lr=0.01)
    assert [g["name"] for g in groups] == ["fusion", "image", "audio"]
    grouped = sum(len(g["params"]) for g in groups)
    assert grouped == len(list(model.parameters()))


@pytest.mark.parametrize("depth,size", [(6, 96), (10, 28), (18, 32), (50, 32)])
def test_resnet_depths(depth, size):
    encoder = ResNet(depth, in_channels=3, input_size=size, feature_dim=32)
    assert encoder(torch.randn(2, 3, size, size)).shape == (2, 32)


def test_resnet_conv_count_matches_depth():
    for depth in (6, 10, 18):
        convs = [m for m in ResNet(depth, 1, 28).modules() if isinstance(m, torch.nn.Conv2d)
                 and m.kernel_size != (1, 1)]
        assert len(convs) + 1 == depth  # convolutions + the linear head that follows


def test_unknown_names_list_the_choices():
    with pytest.raises(UserError, match="unknown fusion 'late'.*concat, sum"):
        build_model({"a": (4,)}, num_classes=2, fusion="late")
    with pytest.raises(UserError, match="unknown encoder 'vgg'"):
        build_encoder("vgg", (1, 8, 8), 16)
    with pytest.raises(UserError, match="ResNet depth 12"):
        ResNet(12, 1, 28)
    with pytest.raises(UserError, match="shape"):
        build_encoder("cnn", (16,), 16)
