"""Encoders and the joint-fusion model: shapes, fusion parts, probes, param groups; the ResNets against
torchvision's (no weights are downloaded)."""
import pytest
import torch
import torchvision
from torch import nn

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


# ---- ResNets from torchvision's blocks ----------------------------------------------------------------

def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_resnet_trunks_have_torchvisions_parameter_counts(depth):
    reference = torchvision.models.get_model(f"resnet{depth}", weights=None)
    published = torchvision.models.get_model_weights(f"resnet{depth}").IMAGENET1K_V1.meta["num_params"]
    fc = reference.fc.weight.numel() + reference.fc.bias.numel()
    reference.fc = nn.Identity()
    assert _count(ResNet(depth, 3, 224)) == _count(reference) == published - fc
    # the small-input stem on one channel against torchvision's with its stem changed the same way
    reference.conv1, reference.maxpool = nn.Conv2d(1, 64, 3, 1, 1, bias=False), nn.Identity()
    assert _count(ResNet(depth, 1, 28)) == _count(reference)


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_is_torchvisions_weight_for_weight_at_the_same_seed(depth):
    torch.manual_seed(0)
    ours = ResNet(depth, 3, 224, feature_dim=10)
    torch.manual_seed(0)
    reference = torchvision.models.get_model(f"resnet{depth}", weights=None, num_classes=10)
    theirs = {"project." + k[3:] if k.startswith("fc.") else k: v for k, v in reference.state_dict().items()}
    assert list(ours.state_dict()) == list(theirs)
    assert all(torch.equal(value, theirs[key]) for key, value in ours.state_dict().items())
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(ours.eval()(x), reference.eval()(x))


def _basic_block_parameters(c_in: int, planes: int) -> int:
    """Two 3×3 convs, two BNs (weight and bias), and a 1×1 conv + BN shortcut where the width changes."""
    shortcut = c_in * planes + 2 * planes if c_in != planes else 0
    return 9 * c_in * planes + 9 * planes * planes + 4 * planes + shortcut


@pytest.mark.parametrize("depth,channels,size,widths", [(6, 3, 96, (8, 16)), (10, 1, 28, (8, 16, 32, 64))])
def test_shallow_resnet_parameter_counts(depth, channels, size, widths):
    kernel = 7 if size >= 64 else 3
    stem = kernel * kernel * channels * 8 + 2 * 8
    blocks = sum(_basic_block_parameters(c_in, planes) for c_in, planes in zip((8, *widths[:-1]), widths))
    head = widths[-1] * 16 + 16
    assert _count(ResNet(depth, channels, size, feature_dim=16, width=8)) == stem + blocks + head
