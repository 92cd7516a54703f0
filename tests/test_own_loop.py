"""Balancing outside milesbook's Trainer: readings, the narrow run context, the own-loop Balancer, the
Lightning callback (two CPU processes under DDP), and the two runnable examples."""
from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import torch

import milesbook as mb
from milesbook.errors import UserError
from milesbook.miles import decide

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


def run_example(name: str, *args: str, timeout: int = 300) -> list[dict]:
    """The JSON lines an example printed (it must exit 0)."""
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def follows_algorithm_1(lines: list[dict], tau: float, mu: float, base: float) -> int:
    """Check each epoch's printed rates against Algorithm 1 on the previous epoch's printed u; returns
    how many epochs ran with a slowed modality."""
    slowed = 0
    for before, after in zip(lines, lines[1:]):
        (a, u_a), (b, u_b) = before["u"].items()
        factors = dict(zip((a, b), decide(u_a, u_b, tau, mu)))
        assert after["lr"] == {"fusion": base, a: base * factors[a], b: base * factors[b]}, (before, after)
        slowed += min(factors.values()) < 1
    return slowed


def test_plain_loop_example_equals_the_trainer_bit_for_bit(tmp_path):
    """The example's loop (its own DataLoader, same model, seed, data order and noise) and milesbook's
    Trainer give the same utilization, gap and rates every epoch, to the last bit."""
    lines = run_example("plain_loop.py", "--method", "miles", "--epochs", "3", "--tau", "0.02", "--mu", "0.5",
                        "--seed", "0", "--threads", "1")
    mb.train(mb.TrainConfig(method="miles", tau=0.02, mu=0.5, seed=0, epochs=3, threads=1, device="cpu"),
             tmp_path, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert len(lines) == len(rows) == 3
    for line, row in zip(lines, rows):
        assert line["epoch"] == int(row["epoch"]) and line["rank"] == 0
        assert line["u"] == {m: float(row[f"u_{m}"]) for m in ("image", "audio")}
        assert line["delta"] == float(row["delta"])
        assert line["lr"] == {g: float(row[f"lr_{g}"]) for g in ("fusion", "image", "audio")}
    assert follows_algorithm_1(lines, 0.02, 0.5, 1e-3) >= 1


def test_lightning_example_under_ddp_takes_one_decision_on_both_ranks():
    lines = run_example("lightning_loop.py", "--method", "miles", "--epochs", "3", "--tau", "0.02", "--mu", "0.5",
                        "--devices", "2", "--strategy", "ddp", timeout=400)
    by_rank = {r: [line for line in sorted(lines, key=lambda x: x["epoch"]) if line["rank"] == r] for r in (0, 1)}
    assert [line["epoch"] for line in by_rank[0]] == [line["epoch"] for line in by_rank[1]] == [1, 2, 3]
    for first, second in zip(by_rank[0], by_rank[1]):
        assert (first["u"], first["delta"], first["lr"]) == (second["u"], second["delta"], second["lr"])
    assert follows_algorithm_1(by_rank[0], 0.02, 0.5, 1e-3) >= 1


def test_lightning_example_runs_a_method_that_samples_the_training_loader():
    """PMR builds its prototypes from Lightning's training loader (given when training starts) and uses
    the ones the epoch's rule made after validation."""
    lines = run_example("lightning_loop.py", "--method", "pmr", "--epochs", "2")
    assert [line["epoch"] for line in lines] == [1, 2] and all(math.isfinite(line["delta"]) for line in lines)


def loaders(data, batch_size=64):
    def rows(split):
        s = data.splits[split]
        return [({m: x[i:i + batch_size] for m, x in s.inputs.items()}, s.labels[i:i + batch_size])
                for i in range(0, len(s.labels), batch_size)]
    return rows("train"), rows("val")


class Batches(list):
    """A list of batches with what a DataLoader tells a method: its dataset's size and batch size."""
    def __init__(self, batches, size, batch_size):
        super().__init__(batches)
        self.dataset, self.batch_size = range(size), batch_size


PLUGGABLE = [m for m in mb.methods.METHODS if m not in ("gblend", "remix")]  # both need whole training passes


@pytest.mark.parametrize("method", PLUGGABLE)
def test_every_method_but_gblend_and_remix_trains_in_your_own_loop(method, toy):
    torch.manual_seed(0)
    model = mb.build_model(toy.shapes, toy.num_classes)
    optimizer = torch.optim.Adam(model.param_groups(1e-3))
    train, val = loaders(toy)
    train = Batches(train, len(toy.splits["train"].labels), 64)
    knobs = {"mslr_lrs": {"a": 1e-3, "b": 5e-4}} if method in ("mslr-k", "mslr-s") else {}
    balancer = mb.Balancer(model, optimizer, method, train_loader=train, epochs=2, **knobs)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        for inputs, labels in train:
            loss = balancer.loss(model(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            balancer.after_backward()
            optimizer.step()
            balancer.after_step()
        found = balancer.end_epoch(val)
    assert math.isfinite(loss.item()) and 0 <= found.values[f"{found.metric}_fusion"] <= 1
    assert set(found.utilization) == {"a", "b"} and found.delta == pytest.approx(
        abs(found.utilization["a"] - found.utilization["b"]))
    assert [row["epoch"] for row in balancer.history] == [1, 2]
    assert any(not torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_gblend_and_broken_models_are_refused_in_one_line(toy):
    model = mb.build_model(toy.shapes, toy.num_classes)
    optimizer = torch.optim.Adam(model.param_groups(1e-3))
    with pytest.raises(UserError, match="gblend cannot run in your own loop: it trains each branch alone"):
        mb.Balancer(model, optimizer, "gblend")
    with pytest.raises(UserError, match="pmr cannot run in your own loop: .*pass train_loader="):
        mb.Balancer(model, optimizer, "pmr")
    with pytest.raises(UserError, match="miles has no knob 'alpha'; its knobs are mu, tau"):
        mb.Balancer(model, optimizer, "miles", alpha=0.3)
    with pytest.raises(UserError, match="tau must be in"):
        mb.Balancer(model, optimizer, "miles", tau=3.0)
    with pytest.raises(UserError, match="param groups named 'fusion'"):
        mb.Balancer(model, torch.optim.Adam(model.parameters()), "miles")
    balancer = mb.Balancer(model, optimizer, "miles")
    batch = {m: x[:8] for m, x in toy.splits["train"].inputs.items()}
    with pytest.raises(UserError, match="returned Tensor; balancing needs a FusionOutput"):
        balancer.loss(model(batch).fusion, toy.splits["train"].labels[:8])

    class HeadsOnly(torch.nn.Module):  # follows the contract but has no encoders for OGM to edit
        def __init__(self):
            super().__init__()
            self.inner = model
        def forward(self, x):
            return self.inner(x)
    with pytest.raises(UserError, match="ogm works on the model's encoders"):
        mb.Balancer(HeadsOnly(), optimizer, "ogm", num_classes=toy.num_classes)


def test_utilization_of_your_model_is_the_trainers_reading(tmp_path, toy):
    """`milesbook.utilization(model, loader)` on the selected weights equals the u history.csv holds."""
    config = mb.TrainConfig(dataset="toy", method="miles", epochs=2, threads=1, device="cpu")
    mb.train(config, tmp_path, dataset=toy, progress=False)
    model = mb.build_model(toy.shapes, toy.num_classes)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    model.load_state_dict(state["model"])
    _, val = loaders(toy, batch_size=37)  # any batching: counts add up
    u = mb.utilization(model, val)
    last = mb.read_history(tmp_path)[-1]
    assert u == {m: last[f"u_{m}"] for m in ("a", "b")}


def _reduce_in_process(rank: int, world: int, port: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    counts = torch.tensor([float(rank + 1), 10.0 * rank])
    summed, n = mb.readings.reduce_over_processes(counts, n=5 + rank)
    Path(out, f"{rank}.json").write_text(json.dumps({"counts": summed.tolist(), "n": n}))
    torch.distributed.destroy_process_group()


def test_counts_are_summed_over_processes(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_reduce_in_process, args=(2, port, str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"{rank}.json").read_text()) == {"counts": [3.0, 10.0], "n": 11}


def test_no_method_module_refers_to_the_trainer():
    for path in (ROOT / "milesbook" / "methods").glob("*.py"):
        names = {tok.string for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
                 if tok.type == tokenize.NAME}
        assert not names & {"trainer", "Trainer", "train_epoch", "splits"}, path.name
        imports = [line for line in path.read_text().splitlines() if line.lstrip().startswith(("import ", "from "))]
        assert not [line for line in imports if "..train" in line or "milesbook.train" in line], path.name


def test_lightning_refuses_per_step_gradient_rules_under_ddp():
    from milesbook.lightning import edits_each_step
    edits = {name for name in PLUGGABLE if edits_each_step(mb.methods.build_method(mb.TrainConfig(method=name),
                                                                                   ("a", "b")))}
    assert edits == {"ogm", "ogm-ge", "mmpareto", "mla", "inforeg", "aim-r", "arl", "dgl", "aug"}


def test_only_the_callback_module_imports_lightning():
    """Lightning stays optional: no other module of the package imports it."""
    for path in (ROOT / "milesbook").rglob("*.py"):
        imports = [line for line in path.read_text().splitlines() if line.lstrip().startswith(("import ", "from "))]
        uses = [line for line in imports if "lightning" in line.split("#")[0] and "from .lightning" not in line]
        assert not uses or path.name == "lightning.py", (path, uses)
    done = subprocess.run([sys.executable, "-c", "import sys, milesbook; print('lightning' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False"
