"""`milesbook diagnose`: is a modality starved in my model, and does balancing help here?

Starving: trained only on the fused loss L_AB, the fusion leans on the modality that lowers the loss
first, and the other's encoder stops learning what it could learn alone. Three readings of each
modality m tell it apart, all on the test split at the epoch chosen on validation:

- **alone** — the unimodal model of m (what its encoder can learn);
- **in fusion** — vanilla fusion's own use of m: its fusion head's part W_m z_m + b/M;
- **probe** — a detached linear probe on vanilla's m encoder (what the encoder learnt inside fusion);

and the conditional utilization rate u_m over the epochs (how much the fused prediction needs m).
The part and the probe are both linear readings of the same encoder, each a lower bound of what it
holds (the probe learns beside the encoder and can lag it), so *inside fusion* is the better of the
two, per seed.

**The rule.** m is *starved* when the gap alone − inside fusion (paired by seed) has a 95 %
t-interval above zero and a mean of at least `STARVED_POINTS` points: its encoder holds measurably
less inside fusion than alone. With `full`, the 2 × 2 (vanilla, miles-lab, aux, miles) says whether balancing
helps: scheduling on L_AB (`miles-lab` − `vanilla` on m's probe), and the fused model under MILES
(`miles` − `vanilla`); an effect counts when its 95 % interval excludes zero.

**Intervals at least one test sample wide.** An accuracy is a count of test samples over the test
split's size N, so a paired difference is a whole number of samples per seed. With a few seeds, a small
test split and pairs that share their seed's initial weights and data order, the seeds can differ by the
same count (chapter 8's left half: −2 of 269 on each of 3 seeds; −5 to +3 over 12), and the t-interval
then has zero width, a certainty the seeds do not give. So every interval is at least ±1/N wide (as
`milesbook verify`'s), and the report says when every seed's difference is the same.

The runs are `compare`'s, in its layout (`<out>/<method>-<fusion>/seed<k>/`, results.md, report.json),
so `compare` and `verify` read the same runs and agree by construction; diagnose adds
`diagnosis.md`, `diagnosis.json` and `diagnosis.png`.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from .comparison import FACTORIAL, REPORT, compare, run_dir
from .errors import UserError
from .methods.base import is_unimodal, unimodal_modality, unimodal_name
from .metrics import METRIC_LABELS
from .handed import read_json
from .runs import read_history, save_figure, write_json, write_text
from .seed_stats import mean_std, paired_at_resolution

STARVED_POINTS = 3.0  # the smallest gap (percentage points) called starving; a sampling wobble is less
FILES = ("diagnosis.md", "diagnosis.json", "diagnosis.png")


def diagnose(dataset, seeds: int = 3, out="runs/diagnose", base=None, full: bool = False, workers: int = 1,
             fusion: str = "concat", encoders: dict | None = None, progress: bool = True) -> dict:
    """Train (or reuse) the unimodal models and vanilla fusion with probes (with `full`, the 2 × 2)
    over `seeds` seeds into `out`, and write the diagnosis (see the module docstring). `dataset`: a
    name, the path of your own data, or a `MultimodalDataset`. Returns the diagnosis as a dict:
    per modality the readings (mean, std, per seed) and gaps, `starved` (modalities), `verdict` (words)."""
    from .config import TrainConfig
    if seeds < 2:
        raise UserError(f"--seeds must be ≥ 2 for a diagnosis (its intervals need two paired seeds), got {seeds}")
    base = base or TrainConfig()
    if not base.probes:
        raise UserError("diagnose reads each encoder with a detached probe; leave out --no-probes")
    out = Path(out)
    methods = list(FACTORIAL) if full else ["vanilla"]
    report = compare(dataset, methods, (fusion,), seeds, out, base, progress, workers, encoders)[fusion]
    summaries = report["summaries"]
    modalities = [unimodal_modality(m) for m in summaries if is_unimodal(m)]
    metric = summaries["vanilla"][0]["metric"]
    if len(modalities) < 2:
        raise UserError("diagnose compares modalities inside fusion; the data has one")
    test_size = read_json(out / REPORT).get("test_size")  # compare's record of this data
    diagnosis = _read(summaries, modalities, metric, full, test_size)
    diagnosis["utilization"] = _utilization(out, fusion, seeds, modalities)
    diagnosis.update(dataset=summaries["vanilla"][0]["dataset"], seeds=seeds, full=full, fusion=fusion,
                     metric=metric, test_size=test_size, rule=_rule_text(), made_under=report["made_under"])
    write_json(out / "diagnosis.json", diagnosis)
    write_text(out / "diagnosis.md", _markdown(diagnosis))
    _draw(diagnosis, out / "diagnosis.png")
    return diagnosis


def _by_seed(runs: list[dict], key: str) -> list[dict]:
    return [{"seed": r["seed"], "value": r[key]} for r in runs]


def _stats(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs]
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "per_seed": values}


def _read(summaries: dict, modalities: list[str], metric: str, full: bool, test_size: int | None = None) -> dict:
    """Each modality's readings and gaps, which are starved, the balancing effects and the verdict.
    `test_size`: the test split's size N; every interval is at least ±1/N wide (`seed_stats.paired_at_resolution`)."""
    resolution = 1 / test_size if test_size else 0.0
    vanilla = summaries["vanilla"]
    per_modality = {}
    for m in modalities:
        alone = summaries[unimodal_name(m)]
        alone_key = f"test_{metric}_{m}"
        probe_key, part_key = f"test_{metric}_head_{m}", f"test_{metric}_part_{m}"
        inside = [{"seed": r["seed"], "value": max(r[probe_key], r[part_key])} for r in vanilla]
        gap = paired_at_resolution(_by_seed(alone, alone_key), inside, "value", resolution)
        entry = {"alone": _stats(alone, alone_key), "in_fusion": _stats(vanilla, part_key),
                 "probe": _stats(vanilla, probe_key), "inside": _stats(inside, "value"), "gap": gap,
                 "starved": bool(gap is not None and gap["low"] is not None and gap["low"] > 0
                                 and 100 * gap["mean"] >= STARVED_POINTS)}
        if full:
            entry["scheduling_on_probe"] = paired_at_resolution(summaries["miles-lab"], vanilla, probe_key, resolution)
            entry["probe_under_scheduling"] = _stats(summaries["miles-lab"], probe_key)
        per_modality[m] = entry
    result = {"modalities": per_modality, "starved": [m for m, e in per_modality.items() if e["starved"]],
              "fused": {"vanilla": _stats(vanilla, f"test_{metric}_fusion")}}
    if full:
        result["fused"]["miles"] = _stats(summaries["miles"], f"test_{metric}_fusion")
        result["fused_gain"] = paired_at_resolution(summaries["miles"], vanilla, f"test_{metric}_fusion", resolution)
    result["verdict"] = _verdict(result, full)
    return result


def _points(stats: dict) -> str:
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def _interval(diff: dict) -> str:
    return f"{100 * diff['mean']:+.1f} (95 % CI {100 * diff['low']:+.1f} to {100 * diff['high']:+.1f})"


def _counts(diff: dict | None) -> bool:
    return diff is not None and diff["low"] is not None and (diff["low"] > 0 or diff["high"] < 0)


def _verdict(result: dict, full: bool) -> str:
    """The diagnosis in plain words, from the numbers and the stated rule."""
    sentences = []
    for m in result["starved"]:
        e = result["modalities"][m]
        text = (f"{m} is starved in fusion: read inside fusion {_points(e['inside'])} (probe {_points(e['probe'])}) "
                f"against {_points(e['alone'])} alone (gap {_interval(e['gap'])})")
        if full:
            lift = e["scheduling_on_probe"]
            text += (f"; scheduling on L_AB (miles-lab) {'lifts' if _counts(lift) and lift['mean'] > 0 else 'moves'} "
                     f"its probe to {_points(e['probe_under_scheduling'])} ({_interval(lift)}"
                     f"{'' if _counts(lift) else ', not distinguishable from zero'})")
        sentences.append(text + ".")
    if not result["starved"]:
        sentences.append(f"No modality is starved here: no modality read inside fusion is both {STARVED_POINTS:g} or "
                         "more points below its unimodal model and distinguishable from it.")
    if full:
        gain = result["fused_gain"]
        sentences.append(f"The fused model under MILES against vanilla: {_interval(gain)} — "
                         + ("a gain." if _counts(gain) and gain["mean"] > 0 else "a loss." if _counts(gain)
                            else "not distinguishable from zero."))
    return " ".join(sentences)


def _rule_text() -> str:
    return (f"A modality is starved when the gap between its unimodal model and its reading inside vanilla fusion "
            "(the better of the fusion head's part and the detached probe, per seed), paired by seed, has a 95 % "
            f"t-interval above zero and a mean of at least {STARVED_POINTS:g} points. A balancing effect counts when "
            "its paired 95 % interval excludes zero. Every interval is at least ± one test sample (1/N) wide: a "
            "reading is a count of test samples, and seeds whose differences happen to be equal would otherwise "
            "give an interval of zero width.")


def _identical(name: str, diff: dict | None, metric: str, test_size: int | None) -> str | None:
    """"<name>: +x.x points on each of the k seeds (n of the N test samples)" when every seed's paired
    difference is the same; None otherwise."""
    values = (diff or {}).get("per_seed") or []
    if len(values) < 2 or max(values) - min(values) > 1e-9:
        return None
    samples = f" ({round(values[0] * test_size):+d} of the {test_size} test samples)" \
        if metric == "acc" and test_size else ""
    return f"{name}: {100 * values[0]:+.1f} points on each of the {len(values)} seeds{samples}"


def _utilization(out: Path, fusion: str, seeds: int, modalities: list[str]) -> dict:
    """u_m of vanilla per epoch, the mean over seeds (one list per modality)."""
    histories = [read_history(run_dir(out, "vanilla", fusion, s)) for s in range(seeds)]
    epochs = min(len(h) for h in histories)
    return {m: [statistics.fmean(h[e][f"u_{m}"] for h in histories) for e in range(epochs)] for m in modalities}


def _data_name(dataset: str) -> str:
    """A registered dataset's name, or the folder name of data given as a path: a report does not show
    where this machine keeps it."""
    return Path(dataset).name if "/" in str(dataset) else str(dataset)


def _literal(text: str) -> str:
    """`text` with Markdown's emphasis characters escaped: a class such as `__main__.Net` stays itself."""
    return text.replace("\\", "\\\\").replace("_", "\\_").replace("*", "\\*")


def _markdown(d: dict) -> str:
    label = METRIC_LABELS[d["metric"]]
    lines = [f"# Diagnosis: {_data_name(d['dataset'])}", "", f"**{d['verdict']}**", "",
             f"Test {label} (%), mean ± std over {d['seeds']} seeds, {d['fusion']} fusion, at the epoch chosen on "
             "validation. *Alone*: the modality's unimodal model. *In fusion*: vanilla fusion's part for it "
             "(W_m z_m + b/M). *Probe*: a detached linear probe on vanilla's encoder. *Inside*: the better "
             "of the two, per seed. *Gap*: alone − inside, paired by seed.", "",
             "| modality | alone | in fusion | probe | inside | gap (95 % CI) | starved |", "|---|---|---|---|---|---|---|"]
    for m, e in d["modalities"].items():
        gap = _interval(e["gap"]) if e["gap"]["low"] is not None else "–"
        lines.append(f"| {m} | {_points(e['alone'])} | {_points(e['in_fusion'])} | {_points(e['probe'])} | "
                     f"{_points(e['inside'])} | {gap} | "
                     f"{'yes' if e['starved'] else 'no'} |")
    lines += ["", f"Fused model: vanilla {_points(d['fused']['vanilla'])}"
              + (f", miles {_points(d['fused']['miles'])}" if d["full"] else "") + ".", "",
              "Utilization over the epochs (vanilla, mean over seeds; `diagnosis.png`): " + "; ".join(
                  f"u_{m} from {u[0]:.3f} to {u[-1]:.3f}" for m, u in d["utilization"].items()) + ".", "",
              *_identical_notes(d),
              f"**The rule.** {d['rule']}", "", _literal(d["made_under"]), "",
              "The runs are `milesbook compare`'s, in its layout: `compare` over the same folder reads them, and "
              "`milesbook verify` checks them.", ""]
    return "\n".join(lines)


def _identical_notes(d: dict) -> list[str]:
    """The report's paragraph on paired differences that are the same on every seed, and why their
    interval is ± one test sample rather than the zero width of their t-interval (none without such)."""
    named = [(f"{m}'s gap (alone − inside)", e["gap"]) for m, e in d["modalities"].items()]
    if d["full"]:
        named += [(f"{m}'s probe under scheduling (miles-lab − vanilla)", e["scheduling_on_probe"])
                  for m, e in d["modalities"].items()]
        named.append(("the fused model (miles − vanilla)", d["fused_gain"]))
    test_size = d.get("test_size")
    notes = [note for name, diff in named if (note := _identical(name, diff, d["metric"], test_size))]
    if not notes:
        return []
    counted = ("a reading is a whole number of test samples, and these seeds happened to differ by the same "
               "number" if d["metric"] == "acc" else "these seeds happened to give the same difference")
    floor = (f"the interval shown is ± one test sample ({100 / test_size:.2f} points), the least the test split "
             "resolves" if test_size else "the interval shown has no width")
    why = (f"The two sides of each are different runs, each read at its own selected epoch; {counted}. A t-interval "
           f"over equal differences has zero width, a certainty a few seeds cannot give: {floor}; more seeds "
           "would show the spread.")
    return [f"**The same difference on every seed.** {'; '.join(notes)}. {why}", ""]


def _draw(d: dict, path: Path) -> None:
    """Top: each modality alone, in fusion and by its probe (per-seed points, mean bar). Bottom: u_m."""
    import matplotlib.pyplot as plt

    from .plots import PAGE_WIDTH_IN, book_style, colour
    with book_style():
        fig, (bars, lines) = plt.subplots(2, 1, figsize=(PAGE_WIDTH_IN, 7.0))
        readings = (("alone", 1.0), ("in_fusion", 0.35), ("probe", 0.65))
        for i, (m, e) in enumerate(d["modalities"].items()):
            for j, (reading, alpha) in enumerate(readings):
                x = i * (len(readings) + 1) + j
                values = [100 * v for v in e[reading]["per_seed"]]
                bars.bar(x, statistics.fmean(values), color=colour(m), alpha=alpha, width=0.8)
                bars.plot([x] * len(values), values, "o", color="black", ms=3)
        bars.set_xticks([i * (len(readings) + 1) + j for i in range(len(d["modalities"])) for j in range(len(readings))],
                        [f"{m}\n{r.replace('_', ' ')}" for m in d["modalities"] for r, _ in readings], fontsize=10)
        bars.set_ylabel(f"test {METRIC_LABELS[d['metric']]} (%)")
        bars.set_title("each modality: alone, in fusion, probe")
        for m, u in d["utilization"].items():
            lines.plot(range(1, len(u) + 1), u, color=colour(m), label=f"u_{m}")
        lines.set_xlabel("epoch")
        lines.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        lines.set_title("utilization (vanilla)")
        lines.legend()
        fig.tight_layout()
        save_figure(fig, path, dpi=110)
        plt.close(fig)


def read(out) -> dict:
    """The diagnosis written in `out` (`diagnosis.json`)."""
    path = Path(out) / "diagnosis.json"
    if not path.exists():
        raise UserError(f"{out} holds no diagnosis; run `milesbook diagnose --out {out}` first")
    diagnosis = read_json(path)
    if not isinstance(diagnosis, dict) or not isinstance(diagnosis.get("modalities"), dict):
        raise UserError(f"{path} is not a diagnosis (no modalities); run `milesbook diagnose --out {out}` again")
    return diagnosis
