"""AIM-R (a reconstruction of AIM from its abstract; spec shared/reference/aim.md): each formula on a
hand-computed case, the auxiliary blocks' gradient routing (spec §8), and whole runs that resume."""
import math

import pytest
import torch
import torch.nn.functional as F

import milesbook as mb
from milesbook.datasets import MultimodalDataset, Split
from milesbook.errors import UserError
from milesbook.methods.aim_r import (ChannelUnit, auxiliary_parameters, channel_units, dam_strength, dap_probabilities,
                                     dap_score, depth_pairs, descriptor, encoder_stages, lowest_fraction_mask)
from milesbook.models import MLPEncoder, ResNet, SmallCNN
from milesbook.train import Trainer

from .conftest import killed_and_resumed, without_seconds


def _trainer(tmp_path, digits, **knobs):
    config = mb.TrainConfig(method="aim-r", epochs=2, device="cpu", **knobs)
    return Trainer(config, tmp_path, dataset=digits, progress=False)


def _batch(trainer, n=64):
    inputs, labels = trainer.splits["train"]
    return {m: trainer._input(m, x[:n]) for m, x in inputs.items()}, labels[:n]


# ---- depths ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoder,shape,depths", [
    (lambda: SmallCNN(1, 32), (1, 12, 12), 3),
    (lambda: MLPEncoder(2 * 5 * 5, 32), (2, 5, 5), 3),
    (lambda: ResNet(10, 1, 16, 32, width=8), (1, 16, 16), 4),
    (lambda: ResNet(18, 1, 16, 32, width=8), (1, 16, 16), 4),
])
def test_stages_compose_to_the_encoder(encoder, shape, depths):
    torch.manual_seed(0)
    net = encoder().eval()
    x = torch.randn(5, *shape)
    split = encoder_stages(net)
    assert len(split.stages) == depths
    h = x
    for stage in split.stages:
        h = stage(h)
    assert torch.allclose(split.rest(h), net(x), atol=1e-6)


def test_channel_units_pair_each_conv_with_its_batchnorm():
    cnn = encoder_stages(SmallCNN(1, 32, width=4))
    assert channel_units(cnn.stages[1]) == [ChannelUnit("3.weight", ("4.weight", "4.bias"), 8)]
    mlp = encoder_stages(MLPEncoder(10, 6, hidden=7))
    assert channel_units(mlp.stages[0]) == [ChannelUnit("1.weight", ("1.bias",), 7)]  # 0 is the Flatten
    resnet = encoder_stages(ResNet(18, 1, 16, 32, width=8))
    first, second = channel_units(resnet.stages[0]), channel_units(resnet.stages[1])
    assert [u.weight for u in first][:2] == ["0.0.weight", "1.conv1.weight"]  # the stem belongs to stage 1
    assert first[1].shared == ("1.bn1.weight", "1.bn1.bias")
    assert len(first) == 5 and len(second) == 5  # stem + 2 blocks × 2; 2 blocks × 2 + the shortcut conv
    assert ChannelUnit("0.downsample.0.weight", ("0.downsample.1.weight", "0.downsample.1.bias"), 16) in second


def test_depths_of_different_encoders_are_matched_by_relative_depth():
    assert depth_pairs(3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert depth_pairs(4, 2) == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert depth_pairs(3, 4) == [(0, 0), (1, 1), (2, 2), (2, 3)]


# ---- pace and masks --------------------------------------------------------------------------------

def test_masks_are_the_lowest_pace_fraction_of_each_tensor():
    pace = torch.tensor([0.3, 0.1, 0.5, 0.2])
    assert lowest_fraction_mask(pace, 0.5).tolist() == [False, True, False, True]
    assert lowest_fraction_mask(pace, 0.25).tolist() == [False, True, False, False]
    assert lowest_fraction_mask(pace, 0.1).tolist() == [False, True, False, False]  # at least one channel
    assert lowest_fraction_mask(torch.tensor([0.2, 0.1, 0.1]), 0.34).tolist() == [False, True, False]  # tie: lower index


def test_method_masks_follow_given_paces_and_are_shared_by_bias_and_batchnorm(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, aim_fraction=0.25)
    method = trainer.method
    assert all(mask.all() for mask in method.masks["image"][0])  # all ones before the first refresh
    pace = torch.arange(16.0).flip(0)  # channel 15 slowest … channel 0 fastest
    pace[3] = -1.0                     # and channel 3 slowest of all
    method.pace["image"][0][0].copy_(pace)
    method.refresh_masks()
    mask = method.masks["image"][0][0]
    assert mask.nonzero().flatten().tolist() == [3, 13, 14, 15]  # round(0.25 · 16) = 4 lowest

    stage, units = method.depths["image"].stages[0], method.units["image"][0]
    assert units == [ChannelUnit("0.weight", ("1.weight", "1.bias"), 16)]
    gamma = 0.75
    params = auxiliary_parameters(stage, units, [mask], gamma)
    for name in ("0.weight", "1.weight", "1.bias"):  # the conv weight and its BatchNorm's γ, β
        p = stage.get_parameter(name)
        kept = params[name][mask]
        degraded = params[name][~mask]
        assert torch.equal(kept, p[mask].detach()) and torch.allclose(degraded, (1 - gamma) * p[~mask].detach())
        grad, = torch.autograd.grad(params[name].sum(), p)
        per_channel = grad.flatten(1).abs().sum(1) if grad.dim() > 1 else grad.abs()
        assert torch.equal(per_channel > 0, mask)


def test_pace_is_the_ema_of_the_relative_channel_step(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, aim_pace_momentum=0.9)
    method = trainer.method
    weight = method.depths["audio"].stages[1].get_parameter("3.weight")
    method.after_backward(None, None, epoch=1)  # the snapshot before the step
    step = torch.zeros_like(weight)
    step[5] = 0.01
    step[7] = -0.03
    with torch.no_grad():
        weight.add_(step)
    method.after_step(epoch=1)
    before = weight.detach() - step
    pace = method.pace["audio"][1][0]
    expected = torch.zeros(32)
    for c in (5, 7):
        expected[c] = 0.1 * step[c].norm() / before[c].norm()
    assert torch.allclose(pace, expected, atol=1e-7) and pace[5] > 0 and pace[7] > 0
    assert all(p.abs().sum() == 0 for p in method.pace["image"][0])  # nothing else moved


# ---- DAP and DAM -----------------------------------------------------------------------------------

def test_dap_score_is_the_true_class_probability_of_standardised_cosines():
    h = torch.zeros(2, 2, 3, 3)
    h[0, 0], h[0, 1] = 3.0, 4.0   # GAP → (3, 4) → û = (0.6, 0.8)
    h[1, 1] = 2.0                 # û = (0, 1)
    u = descriptor(h)
    assert torch.allclose(u, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # sample 0: c = (0.6, 0.8, −0.6), mean 4/15, population std σ; sample 1: c = (0, 1, 0)
    c0 = [0.6, 0.8, -0.6]
    mean0 = sum(c0) / 3
    std0 = math.sqrt(sum((c - mean0) ** 2 for c in c0) / 3)
    z0 = [(c - mean0) / (std0 + 1e-6) for c in c0]
    q0 = math.exp(z0[0]) / sum(math.exp(z) for z in z0)            # true class 0
    z1 = [(-1 / 3) / math.sqrt(2 / 9), (2 / 3) / math.sqrt(2 / 9), (-1 / 3) / math.sqrt(2 / 9)]
    q1 = math.exp(z1[1]) / sum(math.exp(z) for z in z1)            # true class 1
    probs = dap_probabilities(u, prototypes)
    assert probs[0, 0].item() == pytest.approx(q0, rel=1e-5) and probs[1, 1].item() == pytest.approx(q1, rel=1e-5)
    assert dap_score(u, prototypes, torch.tensor([0, 1])).item() == pytest.approx((q0 + q1) / 2, rel=1e-5)
    # standardising makes the score blind to the cosines' scale (the "depth-adaptive" part), where a
    # plain softmax of cosines would sharpen
    assert torch.allclose(dap_probabilities(u, 3 * prototypes), probs, atol=1e-5)
    assert not torch.allclose((3 * u @ prototypes.t()).softmax(1), (u @ prototypes.t()).softmax(1), atol=1e-2)


def test_dam_strength_has_a_dead_zone_then_tanh_and_a_dominant_per_depth():
    score_a = torch.tensor([0.40, 0.30, 0.10, 0.2])
    score_b = torch.tensor([0.39, 0.60, 0.05, 0.2])
    gamma, lead = dam_strength(score_a, score_b, gain=1.5, deadzone=0.05)
    assert gamma[0].item() == 0.0 and gamma[3].item() == 0.0           # |log(0.40/0.39)| = 0.025 ≤ δ; equal
    assert gamma[1].item() == pytest.approx(math.tanh(1.5 * math.log(2)), rel=1e-6)
    assert gamma[2].item() == pytest.approx(math.tanh(1.5 * math.log(2)), rel=1e-6)
    assert lead.tolist() == [1.0, -1.0, 1.0, 0.0]                        # A, B, A, tie
    gamma, _ = dam_strength(score_a, score_b, gain=1.5, deadzone=0.0)
    assert gamma[0].item() == pytest.approx(math.tanh(1.5 * math.log(0.40 / 0.39)), rel=1e-5)


def test_stage_strengths_take_the_largest_gamma_of_a_shared_stage(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, encoder="image=resnet10,audio=cnn")
    method = trainer.method
    assert method.pairs == [(0, 0), (1, 1), (2, 2), (3, 2)]
    strengths = method.stage_strengths([0.2, 0.0, 0.3, 0.6], [1.0, 1.0, -1.0, -1.0])
    assert strengths == {"image": [0.2, 0.0, 0.0, 0.0], "audio": [0.0, 0.0, 0.6]}


# ---- the auxiliary blocks (spec §8) ----------------------------------------------------------------

@pytest.mark.parametrize("fusion,strength", [("concat", [0.5, 0.0, 1.0]), ("sum", [0.0, 0.7, 0.0])])
def test_auxiliary_loss_alone_reaches_only_the_masked_channels_of_active_depths(tmp_path, digits, fusion, strength):
    trainer = _trainer(tmp_path, digits, fusion=fusion)
    method, model = trainer.method, trainer.model
    generator = torch.Generator().manual_seed(1)
    for l, units in enumerate(method.units["image"]):
        method.masks["image"][l] = [torch.rand(u.channels, generator=generator) < 0.5 for u in units]
    model.train()
    x, y = _batch(trainer)
    out = model(x)  # the main pass; its loss is never backpropagated here
    model.zero_grad(set_to_none=True)
    method.auxiliary_loss(out, y, F.cross_entropy, {"image": strength, "audio": [0.0, 0.0, 0.0]}).backward()

    stages = method.depths["image"].stages
    for l, stage in enumerate(stages):
        for unit, mask in zip(method.units["image"][l], method.masks["image"][l]):
            for name in (unit.weight, *unit.shared):
                grad = stage.get_parameter(name).grad
                if strength[l] == 0:
                    assert grad is None or not grad.any(), f"non-active depth {l + 1}: {name} got gradient"
                    continue
                per_channel = grad.flatten(1).abs().sum(1) if grad.dim() > 1 else grad.abs()
                assert torch.equal(per_channel > 0, mask), f"depth {l + 1}: {name}"
    assert 0 < sum(mask.sum() for mask in method.masks["image"][0]) < 16  # the masks are not trivial
    # the weak modality and the shared fusion head learn from the auxiliary loss
    assert any(p.grad is not None and p.grad.any() for p in model.encoders["audio"].parameters())
    assert model.fusion_head.weight.grad.any()


def test_auxiliary_pass_leaves_batchnorm_statistics_alone_and_views_the_same_weights(tmp_path, digits):
    trainer = _trainer(tmp_path, digits)
    method, model = trainer.method, trainer.model
    model.train()
    x, y = _batch(trainer)
    out = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # all-ones masks (before the first refresh): the auxiliary blocks are the blocks themselves, so
    # the auxiliary fusion is the main one and the losses agree
    aux = method.auxiliary_loss(out, y, F.cross_entropy, {"image": [1.0, 0.0, 0.3], "audio": [0.0] * 3})
    aux.backward()
    assert aux.item() == pytest.approx(F.cross_entropy(out.fusion, y).item(), rel=1e-5)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running means/vars, batch counts
    assert model.encoders["image"].net[1].running_mean.abs().sum() > 0  # (the main pass did move them)


def test_weak_modality_boost_scales_its_masked_gradients(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, aim_boost=2.0)
    method = trainer.method
    mask = torch.zeros(16, dtype=torch.bool)
    mask[[1, 4]] = True
    method.masks["audio"][0] = [mask]
    for p in trainer.model.parameters():
        p.grad = torch.ones_like(p)
    method._plan = ([0.5, 0.0, 0.0], [1.0, 1.0, 1.0])  # image dominates depth 1 (γ 0.5): audio is weak there
    method.after_backward(None, None, epoch=2)
    stage = method.depths["audio"].stages[0]
    for name in ("0.weight", "1.weight", "1.bias"):
        grad = stage.get_parameter(name).grad
        factor = torch.where(mask, 1 + 2.0 * 0.5, 1.0)
        assert torch.equal(grad.flatten(1)[:, 0] if grad.dim() > 1 else grad, factor)
    assert all((p.grad == 1).all() for p in trainer.model.encoders["image"].parameters())


# ---- whole runs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fusion,warmup", [("concat", 1), ("sum", 0)])
def test_aim_r_runs_modulates_and_resumes(tmp_path, digits, fusion, warmup):
    # three epochs: the masks of epoch 3 come from paces carried across the cut after epoch 1
    config = mb.TrainConfig(method="aim-r", fusion=fusion, epochs=3, aim_warmup=warmup, device="cpu")
    whole = mb.train(config, tmp_path / "whole", dataset=digits, progress=False)
    assert 0 < whole["test_acc_fusion"] <= 1 and (tmp_path / "whole" / "summary.json").exists()
    history = mb.read_history(tmp_path / "whole")
    first, second = history[:2]
    assert (first["aim_active"] > 0) == (warmup == 0) and second["aim_active"] > 0  # the blocks did act
    assert max(second[f"aim_gamma_{j}"] for j in (1, 2, 3)) > 0
    assert first["aim_masked"] == 1.0 and second["aim_masked"] == 0.5  # all ones until the first refresh
    for row in history:
        for j in (1, 2, 3):
            assert 0 < row[f"aim_score_image_{j}"] < 1 and 0 < row[f"aim_score_audio_{j}"] < 1
            assert 0 <= row[f"aim_dominant_image_{j}"] <= 1

    resumed = killed_and_resumed(config, tmp_path / "cut", digits)
    assert without_seconds(resumed) == without_seconds(history)


# ---- refusals --------------------------------------------------------------------------------------

def _dataset(modalities, task="multiclass", tokens=False, n=(40, 20, 20), classes=3):
    gen = torch.Generator().manual_seed(0)
    splits = {}
    for name, size in zip(mb.datasets.SPLITS, n):
        labels = (torch.rand(size, classes, generator=gen) < 0.5).float() if task == "multilabel" \
            else torch.arange(size) % classes
        inputs = {m: torch.randn(size, 6, generator=gen) for m in modalities}
        if tokens:
            inputs[modalities[0]] = torch.randint(1, 20, (size, 5), generator=gen)
        splits[name] = Split(inputs, labels)
    options = {modalities[0]: {"tokens": True, "kind": "bow", "vocab_size": 20}} if tokens else {}
    return MultimodalDataset("synthetic", tuple(modalities), classes, splits, task=task, encoder_options=options)


@pytest.mark.parametrize("data,message", [
    (lambda: _dataset(("a", "b", "c")), r"aim-r compares two modalities depth by depth and needs exactly 2; "
                                        r"got \['a', 'b', 'c'\]"),
    (lambda: _dataset(("a", "b"), task="multilabel"), "aim-r builds one prototype per class and needs single-label "
                                                      "data; synthetic is multi-label"),
    (lambda: _dataset(("text", "b"), tokens=True), "aim-r splits encoders into stages and supports the cnn, mlp and "
                                                   "resnet encoders; BagOfWordsEncoder \\(modality 'text'\\)"),
])
def test_aim_r_refuses_what_it_cannot_compare(tmp_path, data, message):
    config = mb.TrainConfig(dataset="synthetic", method="aim-r", epochs=1, batch_size=8, device="cpu")
    with pytest.raises(UserError, match=message):
        mb.train(config, tmp_path, dataset=data(), progress=False)


def test_aim_r_knobs_are_range_checked():
    with pytest.raises(UserError, match=r"--aim-fraction must be in \(0, 1\], got 0"):
        mb.TrainConfig(method="aim-r", aim_fraction=0).check()
    with pytest.raises(UserError, match="--aim-warmup must be an integer ≥ 0, got 1.5"):
        mb.TrainConfig(method="aim-r", aim_warmup=1.5).check()
    knobs = {k.name: k for k in mb.methods.hyperparameters_of("aim-r")}
    assert {n for n, k in knobs.items() if k.search} == {"aim_fraction", "aim_gain", "aim_weight"}
    assert (knobs["aim_fraction"].default, knobs["aim_gain"].default, knobs["aim_warmup"].default) == (0.5, 1.0, 1)
