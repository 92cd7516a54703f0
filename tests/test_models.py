"""Encoders and the joint-fusion model: shapes, fusion parts, probes, param groups; the ResNets against
torchvision's, and torchvision models as encoders (no weights are downloaded: files are saved here)."""
import pytest
import torch
import torchvision
from torch import nn

from milesbook.errors import UserError
from milesbook.models import ResNet, build_encoder, build_model, parse_encoder_spec

from .fixtures import CraftedPayload


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
def test_resnet_is_torchvisions_architecture(depth):
    """The same modules as torchvision's ResNet (names and shapes, `fc` named `project`): with its
    weights loaded, the same outputs."""
    ours = ResNet(depth, 3, 224, feature_dim=10)
    reference = torchvision.models.get_model(f"resnet{depth}", weights=None, num_classes=10)
    theirs = {"project." + k[3:] if k.startswith("fc.") else k: v for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.items()}
    ours.load_state_dict(theirs)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(ours.eval()(x), reference.eval()(x))


def test_resnet_initialization_is_the_default_in_the_encoders_order():
    """PyTorch's default initialization, drawn stem, then each block's convolutions and BNs, then its
    shortcut, then the head — the order of the encoder's first version, so earlier runs keep their
    numbers (torchvision draws the shortcut first and then re-draws every convolution)."""
    torch.manual_seed(0)
    ours = ResNet(6, 1, 28, feature_dim=16, width=8)
    torch.manual_seed(0)
    expected = [nn.Conv2d(1, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),             # stem
                nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),             # layer1 block
                nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),           # layer2 block
                nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16),              # its shortcut
                nn.Linear(16, 16)]                                                   # the head
    drawn = [p for module in expected for p in module.parameters()]
    mine = [ours.conv1.weight, ours.bn1.weight, ours.bn1.bias,
            *[p for block in (ours.layer1[0], ours.layer2[0]) for p in
              (block.conv1.weight, block.bn1.weight, block.bn1.bias, block.conv2.weight, block.bn2.weight, block.bn2.bias)],
            *ours.layer2[0].downsample.parameters(), *ours.project.parameters()]
    assert len(drawn) == len(mine) and all(torch.equal(a, b) for a, b in zip(drawn, mine))


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


# ---- torchvision models as encoders --------------------------------------------------------------------

def test_a_torchvision_encoder_trains_in_a_model():
    torch.manual_seed(0)
    model = build_model({"image": (1, 28, 28), "audio": (4,)}, num_classes=3, encoder="image=torchvision:resnet18",
                        feature_dim=16)
    net = model.encoders["image"].net
    assert (net.conv1.in_channels, net.fc.in_features, net.fc.out_features) == (1, 512, 16)
    before = net.layer1[0].conv1.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model({"image": torch.randn(4, 1, 28, 28), "audio": torch.randn(4, 4)})
    assert out.features["image"].shape == (4, 16)
    nn.functional.cross_entropy(out.fusion, torch.tensor([0, 1, 2, 0])).backward()
    assert net.conv1.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(net.layer1[0].conv1.weight, before)


def test_any_torchvision_classifier_ending_in_a_linear_gets_a_new_head():
    encoder = build_encoder("torchvision:mobilenet_v3_small", (2, 32, 32), 16)
    assert encoder.net.features[0][0].in_channels == 2
    assert (encoder.net.classifier[3].in_features, encoder.net.classifier[3].out_features) == (1024, 16)
    assert encoder(torch.randn(2, 2, 32, 32)).shape == (2, 16)


def test_torchvision_weights_come_from_a_local_state_dict(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(num_classes=10)  # a fine-tuned model's file: its head is dropped
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    net = build_encoder(f"torchvision:resnet18@{path}", (1, 28, 28), 16).net
    assert torch.equal(net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert net.fc.weight.shape == (16, 512)  # a new head, not the file's
    # one channel: a gray image gets the response the RGB model gives to it as three equal channels
    net.fc, reference.fc = nn.Identity(), nn.Identity()
    gray = torch.randn(2, 1, 28, 28)
    assert torch.allclose(net.eval()(gray), reference.eval()(gray.expand(-1, 3, -1, -1)), atol=1e-5)


def test_torchvision_weights_files_that_do_not_fit_are_one_line(tmp_path):
    def refusal(path) -> str:
        with pytest.raises(UserError) as error:
            build_encoder(f"torchvision:resnet18@{path}", (3, 32, 32), 16)
        assert "\n" not in str(error.value)
        return str(error.value)

    assert refusal(tmp_path / "absent.pt").startswith(f"no weights file {tmp_path / 'absent.pt'} for torchvision "
                                                      "model 'resnet18'; save one with torch.save(")
    state = torchvision.models.resnet18().state_dict()
    del state["layer1.0.conv1.weight"]
    state["bn1.weight"] = torch.ones(3)
    torch.save(state, tmp_path / "other.pt")
    assert "does not fit torchvision model 'resnet18': keys 1 missing (e.g. layer1.0.conv1.weight), 1 of another " \
           "shape (e.g. bn1.weight)" in refusal(tmp_path / "other.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    assert "holds a Tensor, not a state dict of tensors" in refusal(tmp_path / "tensor.pt")
    marker = tmp_path / "payload-ran"
    torch.save({"conv1.weight": CraftedPayload(marker)}, tmp_path / "crafted.pt")
    assert "crafted.pt holds more than tensors and plain values" in refusal(tmp_path / "crafted.pt")
    assert not marker.exists()


def test_torchvision_kinds_that_cannot_be_built_are_one_line():
    with pytest.raises(UserError, match=r"unknown torchvision classification model 'resnet19'; see the names with "
                                        r".*list_models\(tv.models\)"):
        build_encoder("torchvision:resnet19", (3, 32, 32), 16)
    with pytest.raises(UserError, match=r"'squeezenet1_1' ends in AdaptiveAvgPool2d \(classifier.3\), not in a Linear"):
        build_encoder("torchvision:squeezenet1_1", (3, 32, 32), 16)
    with pytest.raises(UserError, match=r"needs \(channels, height, width\) samples, got shape \(16,\)"):
        build_encoder("torchvision:resnet18", (16,), 16)


def test_encoder_spec_keeps_a_torchvision_weights_path():
    spec = "image=torchvision:resnet18@/w/run=1.pt,audio=cnn"
    assert parse_encoder_spec(spec, ["image", "audio"]) == {"image": "torchvision:resnet18@/w/run=1.pt",
                                                            "audio": "cnn"}
