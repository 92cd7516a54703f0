"""Multi-label data (MM-IMDb's kind): F1 by hand, BCE through the trainer, MILES and every baseline,
token-id inputs with the bag-of-words encoder, and compact (uint8) inputs normalized per batch."""
import math

import pytest
import torch

import milesbook as mb
from milesbook.methods.ogm import ogm_coefficients, ogm_score
from milesbook.datasets import MultimodalDataset, Split
from milesbook.errors import UserError
from milesbook.metrics import TASKS, f1_scores
from milesbook.models import build_model


def test_f1_by_hand():
    logits = torch.tensor([[1.0, -1.0, 2.0], [1.0, 1.0, -1.0], [-1.0, -1.0, -1.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    # class 0: TP 2; class 1: FP 1; class 2: FP 1, FN 1 → micro 2·2/(2·2+2+1) = 4/7
    scores = f1_scores(logits, labels)
    assert scores["f1micro"] == pytest.approx(4 / 7)
    # per class F1: 1.0, 0.0 (no positives, one prediction), 0.0 → macro 1/3
    assert scores["f1macro"] == pytest.approx(1 / 3)


def test_counts_add_up_over_batches():
    task = TASKS["multilabel"]
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(50, 7, generator=gen), (torch.rand(50, 7, generator=gen) > 0.7).float()
    whole = task.from_counts(task.counts(logits, labels), 50)
    parts = task.counts(logits[:20], labels[:20]) + task.counts(logits[20:], labels[20:])
    assert task.from_counts(parts, 50) == pytest.approx(whole)


def test_ogm_multilabel_score_reads_only_true_labels():
    logits = torch.tensor([[0.0, 5.0], [0.0, -5.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # sigmoid(0) for sample 0's genre 0, sigmoid(-5) for sample 1's genre 1; the confident 5.0 on a
    # wrong genre does not count
    assert ogm_score(logits, labels).item() == pytest.approx(0.5 + 1 / (1 + math.exp(5)))
    k_a, k_b = ogm_coefficients(logits, torch.zeros(2, 2), labels, alpha=0.5)
    ratio = ogm_score(logits, labels).item() / 1.0  # the zero logits score 0.5 + 0.5
    assert ratio < 1 and k_a.item() == 1.0 and k_b.item() == pytest.approx(1 - math.tanh(0.5 / ratio))
    no_positives = torch.zeros(2, 2)
    k_a, k_b = ogm_coefficients(logits, logits, no_positives, alpha=0.5)
    assert math.isfinite(k_a.item()) and math.isfinite(k_b.item())


def multilabel_data(n=(160, 60, 60), classes=5, vocab=50, length=12, seed=0) -> MultimodalDataset:
    """SYNTHETIC multi-label pairs: token ids whose words are drawn from each true class's own words,
    and uint8 'images' with a bright patch per true class (a strong and a weaker modality)."""
    gen = torch.Generator().manual_seed(seed)
    splits = {}
    for name, size in zip(mb.datasets.SPLITS, n):
        labels = (torch.rand(size, classes, generator=gen) < 0.35).float()
        words = torch.randint(2, vocab, (size, length), generator=gen)
        for c in range(classes):  # class c's word is id 2 + c, put at position c when c is true
            words[:, c] = torch.where(labels[:, c] > 0, 2 + c, words[:, c])
        words[:, -2:] = 0  # padding
        image = torch.randint(0, 60, (size, 1, 8, 8), generator=gen).to(torch.uint8)
        for c in range(classes):
            image[:, 0, c, :] += (labels[:, c] * 120 * (torch.rand(size, generator=gen) < 0.7)).to(torch.uint8)[:, None]
        splits[name] = Split({"text": words, "image": image}, labels)
    return MultimodalDataset("synthetic-multilabel", ("text", "image"), classes, splits, task="multilabel",
                             normalize={"image": (60.0, 40.0)},
                             encoder_options={"text": {"tokens": True, "kind": "bow", "vocab_size": vocab}})


@pytest.mark.parametrize("method", ["vanilla", "miles", "ogm", "ogm-ge", "gblend", "mses", "mslr-d", "mmpareto"])
def test_every_method_trains_multilabel(method, tmp_path):
    data = multilabel_data()
    config = mb.TrainConfig(dataset="synthetic-multilabel", method=method, epochs=3, batch_size=32, lr=3e-3,
                            gblend_mode="offline", gblend_every=1, mses_patience=1)
    summary = mb.train(config, tmp_path / method, dataset=data, progress=False)
    assert summary["task"] == "multilabel" and summary["metric"] == "f1micro"
    history = mb.read_history(tmp_path / method)
    row = history[-1]
    for key in ("val_f1micro_fusion", "val_f1macro_fusion", "val_f1micro_text", "val_f1macro_image",
                "val_f1micro_head_text", "val_f1micro_part_image", "u_text", "u_image", "delta"):
        assert key in row and math.isfinite(row[key]), key
    assert 0 <= summary["test_f1micro_fusion"] <= 1 and 0 <= summary["test_f1macro_image"] <= 1
    # the utilization rate is computed from micro-F1 (Eq. 4 with M = F1)
    m_ab, m_image = row["val_f1micro_fusion"], row["val_f1micro_image"]
    if m_ab > 0:
        assert row["u_text"] == pytest.approx((m_ab - m_image) / m_ab)


def test_multilabel_model_learns(tmp_path):
    data = multilabel_data()
    summary = mb.train(mb.TrainConfig(method="aux", epochs=12, batch_size=32, lr=1e-2), tmp_path, dataset=data,
                       progress=False)
    assert summary["test_f1micro_fusion"] > 0.75  # the planted words make text nearly perfect
    assert summary["test_f1micro_text"] > 0.75


def test_uint8_inputs_are_normalized_per_batch(tmp_path):
    data = multilabel_data()
    from milesbook.train import Trainer
    trainer = Trainer(mb.TrainConfig(method="vanilla", epochs=1), tmp_path, data, progress=False)
    x = trainer._input("image", data.splits["val"].inputs["image"][:4])
    expected = (data.splits["val"].inputs["image"][:4].float() - 60.0) / 40.0
    assert x.dtype == torch.float32 and torch.equal(x, expected)
    ids = trainer._input("text", data.splits["val"].inputs["text"][:4])
    assert ids.dtype == torch.int64  # token ids pass through untouched


def test_bad_multilabel_targets_are_refused(tmp_path):
    data = multilabel_data()
    data.splits["val"].labels[0, 0] = 0.5
    with pytest.raises(UserError, match=r"multi-label targets of shape \(N, 5\) holding 0/1"):
        mb.train(mb.TrainConfig(epochs=1), tmp_path, dataset=data, progress=False)


def test_encoder_spec_per_modality():
    options = {"text": {"tokens": True, "kind": "bow", "vocab_size": 30}}
    model = build_model({"text": (12,), "image": (1, 8, 8)}, 5, encoder="image=resnet6", encoder_options=options)
    assert type(model.encoders["text"]).__name__ == "BagOfWordsEncoder"
    assert type(model.encoders["image"]).__name__ == "ResNet"
    with pytest.raises(UserError, match="encoder 'resnet6' cannot encode token ids"):
        build_model({"text": (12,), "image": (1, 8, 8)}, 5, encoder="resnet6", encoder_options=options)
    with pytest.raises(UserError, match="unknown modality in --encoder 'audio'"):
        build_model({"text": (12,), "image": (1, 8, 8)}, 5, encoder="audio=cnn", encoder_options=options)
    with pytest.raises(UserError, match="--data-option text_model DIR"):
        build_model({"text": (12,), "image": (1, 8, 8)}, 5, encoder="text=bert", encoder_options=options)


def test_pmr_refuses_multilabel_data_with_one_line(tmp_path):
    config = mb.TrainConfig(dataset="synthetic-multilabel", method="pmr", epochs=1, batch_size=32)
    with pytest.raises(UserError, match="pmr builds one prototype per class and needs single-label data; "
                                        "synthetic-multilabel is multi-label"):
        mb.train(config, tmp_path / "pmr", dataset=multilabel_data(), progress=False)


def test_mla_trains_multilabel_with_fixed_fusion_and_refuses_entropy_fusion(tmp_path):
    config = mb.TrainConfig(dataset="synthetic-multilabel", method="mla", epochs=2, batch_size=32, mla_fusion="fixed")
    summary = mb.train(config, tmp_path / "fixed", dataset=multilabel_data(), progress=False)
    assert summary["inference"] == "fixed-weight shared-head logits" and 0 < summary["test_f1micro_fusion"] <= 1
    config = mb.TrainConfig(dataset="synthetic-multilabel", method="mla", epochs=1, batch_size=32)
    with pytest.raises(UserError, match="mla's entropy fusion weighs modalities by the entropy of one class "
                                        "distribution and needs single-label data"):
        mb.train(config, tmp_path / "entropy", dataset=multilabel_data(), progress=False)


def test_inforeg_refuses_multilabel_data_with_one_line(tmp_path):
    config = mb.TrainConfig(dataset="synthetic-multilabel", method="inforeg", epochs=1, batch_size=32)
    with pytest.raises(UserError, match="inforeg scores the probability of one true class and needs single-label"):
        mb.train(config, tmp_path / "inforeg", dataset=multilabel_data(), progress=False)


@pytest.mark.parametrize("method,why", [("arl", "reads one class distribution per sample"),
                                        ("remix", "scores one class distribution per sample"),
                                        ("aug", "fits one class distribution per sample")])
def test_2025_methods_with_a_softmax_rule_refuse_multilabel_data(tmp_path, method, why):
    config = mb.TrainConfig(dataset="synthetic-multilabel", method=method, epochs=1, batch_size=32)
    with pytest.raises(UserError, match=f"{method} {why} and needs single-label data; synthetic-multilabel is multi-label"):
        mb.train(config, tmp_path / method, dataset=multilabel_data(), progress=False)


def test_dgl_trains_multilabel_data(tmp_path):
    config = mb.TrainConfig(dataset="synthetic-multilabel", method="dgl", epochs=2, batch_size=32)
    summary = mb.train(config, tmp_path / "dgl", dataset=multilabel_data(), progress=False)
    assert 0 < summary["test_f1micro_fusion"] <= 1
