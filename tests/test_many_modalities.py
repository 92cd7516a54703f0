"""More than two modalities (our generalization of MILES, not the paper's): u_m from the model without
each modality, every pair's Algorithm 1 block in the scheduler, and every method on three modalities
(or its one-line refusal)."""
import pytest
import torch

import milesbook as mb
from milesbook.errors import UserError
from milesbook.methods.ogm import ogm_coefficients, ogm_coefficients_many
from milesbook.train import Trainer

BASELINES = ["vanilla", "miles-lab", "aux", "miles", "mses", "mslr-k", "mslr-s", "mslr-d", "ogm", "ogm-ge",
             "gblend", "mmpareto", "mla", "remix", "dgl", "aug"]
REFUSALS = {"pmr": "pmr compares two modalities' prototype scores",
            "arl": "arl's coefficients compare two modalities",
            "inforeg": "inforeg compares two modalities' scores",
            "aim-r": "aim-r compares two modalities depth by depth and needs exactly 2"}


@pytest.fixture(scope="module")
def three():
    return mb.load_dataset("toy", strengths="1.2,0.6,0.2", sizes=(300, 100, 100))


def _config(method, **options):
    settings = dict(epochs=2, gblend_every=1, mses_patience=1, mslr_window=2, remix_warmup=1, aug_every=1,
                    mslr_lrs={"a": 1e-3, "b": 2e-3, "c": 3e-3})
    return mb.TrainConfig(dataset="toy", dataset_options={"strengths": "1.2,0.6,0.2"}, method=method,
                          **(settings | options))


@pytest.mark.parametrize("source", ["vanilla", "aux"])
def test_utilization_reads_the_model_without_each_modality(tmp_path, three, source):
    trainer = Trainer(_config(source), tmp_path, dataset=three, progress=False)
    trainer.train_epoch(1)
    values = trainer.evaluate("val")
    inputs, labels = trainer.splits["val"]
    with torch.no_grad():
        out = trainer.model(inputs)
    reading = out.parts if source == "vanilla" else out.heads
    for m in three.modalities:  # M_{−m}: accuracy of the other modalities' summed logits, by hand
        others = sum(reading[k] for k in three.modalities if k != m)
        assert values[f"acc_without_{m}"] == pytest.approx((others.argmax(1) == labels).float().mean().item())
    if source == "vanilla":  # the fusion head without m's part, exactly
        assert torch.allclose(sum(out.parts[k] for k in "bc"), out.fusion - out.parts["a"], atol=1e-5)
    row, util = trainer._row(1, {}, {"train_loss": 0.0, **values}, values)
    for m in three.modalities:
        expected = (values["acc_fusion"] - values[f"acc_without_{m}"]) / values["acc_fusion"]
        assert row[f"u_{m}"] == pytest.approx(expected) and util[f"without_{m}"] == values[f"acc_without_{m}"]
    us = [row[f"u_{m}"] for m in three.modalities]
    assert row["delta"] == pytest.approx(max(us) - min(us))
    assert row["delta_a_c"] == pytest.approx(abs(row["u_a"] - row["u_c"]))


def test_miles_slows_every_modality_some_pair_slows(tmp_path, three):
    mb.train(_config("miles", epochs=4, tau=0.05, mu=0.5), tmp_path, dataset=three, progress=False)
    rows = mb.read_history(tmp_path)
    for before, after in zip(rows, rows[1:]):  # the rates of epoch e + 1 follow epoch e's utilization
        factors = mb.miles.decide_many({m: before[f"u_{m}"] for m in "abc"}, 0.05, 0.5)
        assert {m: after[f"lr_{m}"] for m in "abc"} == pytest.approx({m: 1e-3 * f for m, f in factors.items()})
        assert after["lr_fusion"] == 1e-3
        for (i, j), (fi, fj) in mb.miles.pair_decisions({m: before[f"u_{m}"] for m in "abc"}, 0.05, 0.5).items():
            assert before[f"slows_{i}_{j}"] == (1 if fi < 1 else -1 if fj < 1 else 0)
    assert any(r[f"lr_{m}"] < 1e-3 for r in rows for m in "abc")  # it acted at least once


def test_ogm_damps_each_modality_against_the_mean_of_the_others():
    labels = torch.tensor([0, 0])
    logits = {"a": torch.tensor([[5.0, 0.0], [5.0, 0.0]]), "b": torch.tensor([[0.0, 0.0], [0.0, 0.0]]),
              "c": torch.tensor([[0.0, 5.0], [0.0, 5.0]])}
    p = torch.softmax(torch.tensor([5.0, 0.0]), 0)[0].item()
    scores = {"a": 2 * p, "b": 1.0, "c": 2 * (1 - p)}
    k = ogm_coefficients_many(logits, labels, alpha=0.5)
    ratio_a = scores["a"] / ((scores["b"] + scores["c"]) / 2)
    assert k["a"].item() == pytest.approx(1 - torch.tanh(torch.tensor(0.5 * ratio_a)).item(), rel=1e-5)
    assert k["b"].item() == 1.0 and k["c"].item() == 1.0  # b: 1 / mean(2p, 2(1 − p)) = 1 — not ahead
    # with two modalities it agrees with the official rule away from a tie
    two = ogm_coefficients_many({"a": logits["a"], "c": logits["c"]}, labels, alpha=0.5)
    official = ogm_coefficients(logits["a"], logits["c"], labels, alpha=0.5)
    assert [two["a"].item(), two["c"].item()] == pytest.approx([x.item() for x in official])


@pytest.mark.parametrize("method", BASELINES)
def test_every_method_trains_three_modalities(tmp_path, three, method):
    summary = mb.train(_config(method), tmp_path, dataset=three, progress=False)
    assert summary["modalities"] == ["a", "b", "c"] and 0 < summary["test_acc_fusion"] <= 1
    row = mb.read_history(tmp_path)[-1]
    assert all(f"u_{m}" in row and row[f"u_{m}"] == row[f"u_{m}"] for m in "abc")  # finite, not NaN
    assert {"delta_a_b", "delta_a_c", "delta_b_c", "val_acc_without_b"} <= set(row)


@pytest.mark.parametrize("method", sorted(REFUSALS))
def test_two_modality_methods_refuse_three_with_one_line(tmp_path, three, method):
    with pytest.raises(UserError, match=REFUSALS[method]):
        mb.train(_config(method), tmp_path, dataset=three, progress=False)


def test_toy_strength_dials(tmp_path):
    data = mb.load_dataset("toy", strengths=[2.0, 0.0, 1.0], sizes=(200, 50, 50))
    assert data.modalities == ("a", "b", "c") and "a=2.0, b=0.0, c=1.0" in data.description
    two = mb.load_dataset("toy", sizes=(200, 50, 50))
    same = mb.load_dataset("toy", strengths="1.0,0.3", sizes=(200, 50, 50))
    assert torch.equal(two.splits["test"].inputs["b"], same.splits["test"].inputs["b"])  # the old data
    with pytest.raises(UserError, match="toy needs 2 to 26 strengths"):
        mb.load_dataset("toy", strengths="1.0")
    with pytest.raises(UserError, match="numbers separated by commas"):
        mb.load_dataset("toy", strengths="1.0,strong")


def test_all_leaves_out_the_methods_defined_for_two_modalities():
    from milesbook.comparison import expand_methods
    three = expand_methods(["all"], ("a", "b", "c"))
    assert not set(REFUSALS) & set(three) and set(BASELINES) <= set(three)
    assert set(REFUSALS) <= set(expand_methods(["all"], ("a", "b")))
    assert expand_methods(["pmr"], ("a", "b", "c")) == ["pmr"]  # named explicitly, it runs and refuses
