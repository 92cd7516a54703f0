"""The 2025 methods (ARL, Data Remixing, DGL, AUG): each rule hand-computed on a tiny case, and the hook
that applies it checked against gradients computed independently (as the official code computes them)."""
import math

import pytest
import torch
import torch.nn.functional as F

import milesbook as mb
from milesbook.methods.arl import arl_coefficients, zero_out_logits
from milesbook.methods.aug import boosting_loss, heads_to_add
from milesbook.methods.remix import kl_to_uniform, remix_assignment
from milesbook.errors import UserError
from milesbook.train import Trainer


def _trainer(tmp_path, data, method, **knobs):
    config = mb.TrainConfig(dataset=data.name, method=method, epochs=3, batch_size=32, **knobs)
    return Trainer(config, tmp_path, data, progress=False)


def _batch(trainer, n=32):
    inputs, labels = trainer.splits["train"]
    return {m: trainer._input(m, x[:n]) for m, x in inputs.items()}, labels[:n]


def _grads(model):
    return {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}


# ---- ARL -------------------------------------------------------------------------------------------

def test_arl_coefficients_by_hand():
    # A: uniform over 2 classes (H = ln 2, true-class p 0.5); B: softmax (0.75, 0.25) (true class 0).
    a = torch.tensor([[0.0, 0.0]])
    b = torch.tensor([[math.log(3.0), 0.0]])
    h_a, h_b = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    confidence, correctness = h_b / h_a, 0.5 / 0.75  # q_A/q_B = H_B/H_A; d_A/d_B
    T = 8.0
    first = math.exp(T * confidence) / (math.exp(T * confidence) + math.exp(T * correctness))
    got = arl_coefficients(a, b, torch.tensor([0]), T)
    assert got.tolist() == pytest.approx([first, 1 - first], rel=1e-6)
    assert got[0] > got[1]  # a_A > a_B exactly when q_A/q_B (here 1.17) > d_A/d_B (here 0.67)
    # a saturated softmax (entropy 0) gives finite coefficients
    assert torch.isfinite(arl_coefficients(torch.tensor([[100.0, 0.0]]), b, torch.tensor([0]), T)).all()


def test_arl_loss_weights_and_scales_encoder_gradients_after_warmup(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, "arl", arl_warmup=1, arl_gamma=3.0, arl_clip=0.0)
    method, model = trainer.method, trainer.model
    x, y = _batch(trainer)
    for epoch, gamma in ((1, 1.0), (2, 3.0)):
        method.start_epoch(epoch)
        out = model(x, detach_heads=True)
        loss = method.loss(out, y, F.cross_entropy)
        unimodal = {m: zero_out_logits(model, out.features, m) for m in model.modalities}
        expected = F.cross_entropy(out.fusion, y) + gamma * sum(F.cross_entropy(p, y) for p in unimodal.values())
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
        model.zero_grad(set_to_none=True)
        loss.backward()
        before = _grads(model)
        method.after_backward(out, y, epoch)
        scales = [1.0, 1.0] if epoch == 1 else (1 + arl_coefficients(
            unimodal["image"].detach(), unimodal["audio"].detach(), y, 8.0)).tolist()
        for scale, m in zip(scales, ("image", "audio")):
            name, p = next((n, p) for n, p in model.named_parameters() if n.startswith(f"encoders.{m}."))
            assert torch.allclose(p.grad, before[name] * scale, rtol=1e-6)
        head = model.fusion_head.weight
        assert torch.equal(head.grad, before["fusion_head.weight"])  # the head is not scaled
        assert scales[0] != scales[1] or epoch == 1


def test_arl_uniform_coefficients_scale_both_encoders_by_one_and_a_half(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, "arl", arl_warmup=0, arl_clip=0.0, arl_coefficients="uniform")
    method, model = trainer.method, trainer.model
    method.start_epoch(1)
    x, y = _batch(trainer)
    out = model(x, detach_heads=True)
    method.loss(out, y, F.cross_entropy).backward()
    before = _grads(model)
    method.after_backward(out, y, 1)
    for name, p in model.named_parameters():
        if name.startswith("encoders."):
            assert torch.allclose(p.grad, 1.5 * before[name])


@pytest.mark.parametrize("method", ["arl", "dgl"])
def test_arl_and_dgl_scale_then_clip_the_methods_gradient_norm(tmp_path, digits, method):
    knobs = {"arl_warmup": 0, "arl_clip": 0.01} if method == "arl" else {"dgl_clip": 0.01}
    trainer = _trainer(tmp_path, digits, method, **knobs)
    method, model = trainer.method, trainer.model
    method.start_epoch(1)
    x, y = _batch(trainer)
    out = model(x, detach_heads=True)
    loss = method.loss(out, y, F.cross_entropy)
    probe_loss = sum(F.cross_entropy(h, y) for h in out.heads.values())  # the Trainer's detached probes
    (loss + probe_loss).backward()
    before = _grads(model)
    method.after_backward(out, y, 1)
    trained = {n: p.grad for n, p in model.named_parameters() if not n.startswith("heads.") and p.grad is not None}
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in trained.values()]))
    assert norm.item() == pytest.approx(0.01, rel=1e-4)
    assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters() if n.startswith("heads."))
    if trainer.method.name == "arl":  # scaled by 1 + a_m first, then clipped: the ratio of the encoders' shares
        scales = trainer.method.scales
        image = next(n for n in trained if n.startswith("encoders.image."))
        audio = next(n for n in trained if n.startswith("encoders.audio."))
        ratio = (trained[image] / before[image]).flatten()[0] / (trained[audio] / before[audio]).flatten()[0]
        assert ratio.item() == pytest.approx((scales[0] / scales[1]).item(), rel=1e-4)


# ---- Data Remixing ---------------------------------------------------------------------------------

def test_remix_kl_to_uniform_in_bits():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    expected = 0.75 * math.log2(1.5) + 0.25 * math.log2(0.5)
    assert kl_to_uniform(logits).tolist() == pytest.approx([0.0, expected], abs=1e-6)


def test_remix_gives_each_sample_to_the_modality_closest_to_uniform_ties_to_the_later():
    confident, unsure = [math.log(3.0), 0.0], [0.0, 0.0]
    a = torch.tensor([confident, unsure, unsure, confident])
    b = torch.tensor([unsure, confident, unsure, confident])
    assert remix_assignment({"a": a, "b": b}).tolist() == [1, 0, 1, 1]
    c = torch.tensor([unsure, unsure, confident, [5.0, 0.0]])
    assert remix_assignment({"a": a, "b": b, "c": c}).tolist() == [2, 2, 1, 1]


def test_remix_plans_one_masked_pass_per_modality_after_warmup(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, "remix", remix_warmup=1, remix_mask="inputs")
    method = trainer.method
    assert method.training_passes(1) is None  # warm-up: the ordinary pass
    heads = trainer.method.context.training_outputs().heads
    expected = remix_assignment(heads)
    passes = method.training_passes(2)
    assert [p.zeroed for p in passes] == [("image",), ("audio",)]  # the last modality's subset first
    assert torch.equal(passes[0].rows, torch.nonzero(expected == 1).flatten())
    assert torch.equal(passes[1].rows, torch.nonzero(expected == 0).flatten())
    n = len(trainer.splits["train"][1])
    assert sorted(torch.cat([p.rows for p in passes]).tolist()) == list(range(n))


def test_remix_feature_mask_gives_the_masked_encoder_a_zero_gradient(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, "remix", remix_warmup=1, remix_mask="features", remix_gamma=2.0)
    method, model = trainer.method, trainer.model
    audio_pass = method.training_passes(2)[1]
    assert audio_pass.zeroed == ()
    x, y = _batch(trainer)
    out = model(x)
    loss = audio_pass.loss(out, y, F.cross_entropy)
    # g([z_image; 0]) = W_image z_image + b, the official in-place zeroing of the audio features
    w = model.fusion_head.weight[:, :model.feature_dim]
    fused = out.features["image"] @ w.t() + model.fusion_head.bias
    expected = F.cross_entropy(fused, y) + 2.0 * F.cross_entropy(out.heads["image"], y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    audio = [p.grad for p in model.encoders["audio"].parameters()]
    assert all(g is not None and not g.any() for g in audio)
    assert any(g.any() for g in (p.grad for p in model.encoders["image"].parameters()))


def test_remix_warmup_loss_weighs_each_unimodal_head_by_alpha(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, "remix", remix_alpha=0.25)
    x, y = _batch(trainer)
    out = trainer.model(x)
    expected = F.cross_entropy(out.fusion, y) + 0.25 * sum(F.cross_entropy(h, y) for h in out.heads.values())
    assert trainer.method.loss(out, y, F.cross_entropy).item() == pytest.approx(expected.item(), rel=1e-6)


def test_remix_epoch_trains_each_subset_with_the_other_inputs_zeroed(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, "remix", remix_warmup=0, remix_mask="inputs")
    seen = []  # (rows of the batch, which modalities arrived as zeros)
    forward = trainer._forward
    inputs, _ = trainer.splits["train"]

    def recording(batch):
        zero = tuple(m for m, x in batch.items() if not x.any())
        seen.append(zero)
        return forward(batch)
    trainer._forward = recording
    passes = trainer.method.training_passes(1)
    trainer.method.training_passes = lambda epoch: passes
    trainer.train_epoch(1)
    sizes = [len(p.rows) for p in passes]
    batches = [-(-(s - (s % 32 == 1)) // 32) for s in sizes]
    assert seen == [("image",)] * batches[0] + [("audio",)] * batches[1]  # audio's rows first, image zeroed


def test_remix_refuses_your_own_loop(toy):
    model = mb.build_model(toy.shapes, toy.num_classes)
    optimizer = torch.optim.Adam(model.param_groups(1e-3))
    with pytest.raises(UserError, match="remix cannot run in your own loop: it scores every training row"):
        mb.Balancer(model, optimizer, "remix")


# ---- DGL -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_dgl_gradients_equal_the_official_two_backward_step(tmp_path, digits, fusion):
    trainer = _trainer(tmp_path, digits, "dgl", fusion=fusion, dgl_alpha=4.0, dgl_clip=0.0)
    model = trainer.model
    x, y = _batch(trainer)
    out = model(x, detach_heads=True)
    trainer.method.loss(out, y, F.cross_entropy).backward()
    ours = _grads(model)

    # The official step: α·Σ CE(zero-out logits) backward; the fusion head's grads dropped; CE(fused on
    # detached features) backward.
    model.zero_grad(set_to_none=True)
    out = model(x, detach_heads=True)
    head = model.fusion_head
    a, v = out.features["image"], out.features["audio"]
    if fusion == "concat":
        p_a, p_v = head(torch.cat([a, torch.zeros_like(v)], 1)), head(torch.cat([torch.zeros_like(a), v], 1))
        p_f = head(torch.cat([a.detach(), v.detach()], 1))
    else:
        p_a, p_v, p_f = head(a), head(v), head(a.detach() + v.detach())
    (4.0 * (F.cross_entropy(p_a, y) + F.cross_entropy(p_v, y))).backward(retain_graph=True)
    for p in head.parameters():
        p.grad = None
    F.cross_entropy(p_f, y).backward()
    official = _grads(model)
    for name, grad in official.items():
        if name.startswith("heads."):
            continue  # the probes (ours, no official counterpart)
        assert torch.allclose(ours[name], grad, atol=1e-7), name


def test_dgl_fusion_loss_alone_leaves_the_encoders_without_gradient(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, "dgl", dgl_alpha=1e-30, dgl_clip=0.0)
    model = trainer.model
    x, y = _batch(trainer)
    out = model(x, detach_heads=True)
    trainer.method.loss(out, y, F.cross_entropy).backward()
    encoder_grads = [p.grad for p in model.encoders.parameters()]
    assert all(g is None or g.abs().max() < 1e-20 for g in encoder_grads)
    assert model.fusion_head.weight.grad.abs().sum() > 0


# ---- AUG -------------------------------------------------------------------------------------------

def test_aug_adds_a_head_to_the_modality_whose_confidence_lags():
    assert heads_to_add({"a": 1.02, "b": 1.0}, 1.0) == ["b"]
    assert heads_to_add({"a": 0.98, "b": 1.0}, 1.0) == ["a"]
    assert heads_to_add({"a": 1.005, "b": 1.0}, 1.0) == []  # inside λ ± 0.01
    # three modalities: every m with s_m / Σ_{k≠m} s_k < λ
    assert heads_to_add({"a": 1.0, "b": 2.0, "c": 3.0}, 0.4) == ["a"]


def test_aug_boosting_loss_by_hand():
    y = torch.tensor([0])
    onehot = F.one_hot(y, 2).float()
    old, new = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    def ce(logits, target):
        return -(target * F.log_softmax(logits, 1)).sum().item()
    p_old = torch.softmax(old, 1)[0, 0].item()
    expected = ce(old + new, onehot) + ce(old, onehot) + ce(new, onehot) - 0.5 * p_old * ce(new, onehot)
    assert boosting_loss([old, new], onehot).item() == pytest.approx(expected, rel=1e-6)
    assert boosting_loss([old], onehot).item() == pytest.approx(ce(old, onehot), rel=1e-6)


def test_aug_checks_after_epoch_one_and_every_few_and_trains_what_it_adds(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, "aug", aug_every=2)
    method, model = trainer.method, trainer.model
    classifier = model.aug
    optimizer_params = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in optimizer_params for p in classifier.parameters())  # added heads are trained
    for epoch, (s_image, s_audio), heads in ((1, (3.0, 1.0), (1, 2)), (2, (3.0, 1.0), (1, 3)),
                                             (3, (1.0, 3.0), (1, 3)), (4, (1.0, 3.0), (2, 3))):
        method.confidence = {"image": torch.tensor(s_image), "audio": torch.tensor(s_audio)}
        row = {}
        method.end_epoch(mb.methods.EpochMetrics(epoch, {}, row))
        assert (row["aug_heads_image"], row["aug_heads_audio"]) == heads
        assert row["aug_ratio"] == pytest.approx(s_image / s_audio)
    # the prediction weighs the modalities' summed heads 0.4 / 0.6
    x, y = _batch(trainer)
    out = method.readout(model(x))
    summed = {m: sum(classifier.head_logits(m, out.features[m])) for m in ("image", "audio")}
    assert torch.allclose(out.fusion, 0.4 * summed["image"] + 0.6 * summed["audio"], atol=1e-6)
    assert torch.allclose(out.heads["audio"], summed["audio"])


@pytest.mark.parametrize("train_added", [True, False])
def test_aug_steps_once_per_modality_and_freezes_added_heads_only_when_asked(tmp_path, digits, train_added):
    trainer = _trainer(tmp_path, digits, "aug", aug_every=1, aug_train_added=train_added)
    method, classifier = trainer.method, trainer.model.aug
    classifier.active[:] = 2
    added = [p.detach().clone() for m in ("image", "audio") for p in classifier.heads[m][1].parameters()]
    encoders = {m: [p.detach().clone() for p in trainer.model.encoders[m].parameters()] for m in ("image", "audio")}
    method.start_epoch(1)
    x, y = _batch(trainer)
    steps = []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (steps.append(1), step(*a, **k))[1]
    trainer._method_step(method.readout(trainer.model(x)), y, 1)
    assert len(steps) == 2  # one step per modality
    now = [p.detach() for m in ("image", "audio") for p in classifier.heads[m][1].parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(added, now)) == train_added
    assert all(torch.equal(a, b) for a, b in zip(added, now)) == (not train_added)
    for m in ("image", "audio"):
        assert any(not torch.equal(p, q) for p, q in zip(encoders[m], trainer.model.encoders[m].parameters()))


def test_aug_uses_the_official_rule_and_weights_for_three_modalities(tmp_path):
    data = mb.load_dataset("toy", strengths=[1.0, 0.5, 0.2], sizes=(120, 40, 40))
    trainer = Trainer(mb.TrainConfig(dataset="toy", method="aug", epochs=2, aug_every=1), tmp_path, data, False)
    method = trainer.method
    assert method.lam == 0.4 and method.weights == pytest.approx({m: 1 / 3 for m in "abc"})
    method.confidence = {"a": torch.tensor(1.0), "b": torch.tensor(2.0), "c": torch.tensor(3.0)}
    row = {}
    method.end_epoch(mb.methods.EpochMetrics(1, {}, row))
    assert [row[f"aug_heads_{m}"] for m in "abc"] == [2, 1, 1]  # a: 1 / 5 < 0.4; b: 2 / 4 and c: 3 / 3 are not
    assert row["aug_ratio_a"] == pytest.approx(0.2)


def test_aug_joins_a_new_optimizer_to_heads_the_model_already_has(toy):
    model = mb.build_model(toy.shapes, toy.num_classes)
    first = torch.optim.Adam(model.param_groups(1e-3))
    mb.Balancer(model, first, "aug", epochs=10)
    second = torch.optim.Adam(model.param_groups(1e-3))  # the model's own groups, without AUG's heads
    mb.Balancer(model, second, "aug", epochs=10)
    held = {id(p) for g in second.param_groups for p in g["params"]}
    assert all(id(p) in held for p in model.aug.parameters())
    assert sum(len(g["params"]) for g in second.param_groups) == len(held)  # nothing twice


def test_aug_needs_the_run_length_in_your_own_loop(toy):
    model = mb.build_model(toy.shapes, toy.num_classes)
    optimizer = torch.optim.Adam(model.param_groups(1e-3))
    with pytest.raises(UserError, match="aug checks for a new head every tenth of the run: pass epochs="):
        mb.Balancer(model, optimizer, "aug")
    balancer = mb.Balancer(model, optimizer, "aug", epochs=20)
    assert balancer.method.every == 2


# ---- all four, through the CLI ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["arl", "remix", "dgl", "aug"])
def test_each_2025_method_trains_from_the_cli(tmp_path, method):
    from .conftest import run_cli
    done = run_cli("train", "--dataset", "toy", "--method", method, "--epochs", "2", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "summary.json").exists()
