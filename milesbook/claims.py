"""The MILES paper's claims, tested on tuned comparisons (`milesbook claims`, docs/claims.md).

Guerra-Manzanares & Shamout, "MILES: Modality-Informed Learning Rate Scheduler for Balancing
Multimodal Learning", IJCNN 2025 (arXiv:2510.17394), claim four things: naive joint training starves
the weaker modality; MILES lifts the weaker modality's encoder; it improves the fused prediction over
joint training and over other balancing methods; and it narrows the gap Δ between the modalities.
Each claim is read here as a paired effect over the fresh seeds of one or more tuned comparisons
(`milesbook compare --from-search`, whose report.json holds every run's values by seed), with its 95 %
t-interval and a verdict in words; MILES's scheduling (`miles` − `aux`) and the auxiliary losses
(`aux` − `vanilla`) are kept apart, as the 2 × 2 separates them. Beside each, the paper's own numbers
(its Tables I–II, concatenation fusion) and a third-party reproduction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from . import handed
from .atomic import write_text
from .errors import UserError
from .methods.base import is_unimodal, report_name, unimodal_name
from .runs import save_figure
from .seed_stats import mean_interval, paired_at_resolution, points

FUSION = "concat"

# The paper's Table II (concatenation fusion, test accuracy %; MM-IMDb macro-F1) as (AB, strong, weak)
# for vanilla and MILES, with the unimodal models of its Table I: the numbers each claim is compared with.
PAPER = {
    "S-MNIST (image strong, audio weak)": {"vanilla": (98.4, 98.5, 53.9), "miles": (99.8, 98.8, 84.9),
                                           "unimodal weak": 88.9},
    "CREMA-D (audio strong, video weak)": {"vanilla": (62.6, 58.2, 26.6), "miles": (75.1, 59.9, 60.8),
                                           "unimodal weak": 60.7},
}
CITATION = ("Guerra-Manzanares & Shamout, *MILES: Modality-Informed Learning Rate Scheduler for Balancing "
            "Multimodal Learning*, IJCNN 2025 (arXiv:2510.17394),")
THIRD_PARTY = ("a public re-implementation (`VuVoCodes/AsynchronousFunction`, commit 92a0475, "
               "docs/experiments/experiment_results.md:88–89) reports on CREMA-D, 3 frames, 5 seeds, MILES (τ 0.2) "
               "61.05 ± 2.52 % against its vanilla baseline 61.59 ± 0.80 % fused — far from the paper's 75.1 % — and "
               "(:424–459) that the released code sets the reduction μ = 1, which turns MILES off")


@dataclass
class Setting:
    """One tuned comparison: its name (from its data options), folder and report.json record."""
    name: str
    folder: Path
    record: dict

    @property
    def methods(self) -> dict:
        return self.record["fusion_results"][FUSION]["methods"]

    @property
    def weak(self) -> str:
        """The weak modality the claims read: the paper's, the one whose unimodal model scores lower —
        unless the two unimodal models cannot be told apart (their paired interval holds zero); then
        "weaker" names no modality, and the claims read the one joint training reads furthest below its
        unimodal model (`weak_reason` says which case this is)."""
        return self._weak_choice[0]

    @property
    def weak_reason(self) -> str:
        return self._weak_choice[1]

    @cached_property
    def _weak_choice(self) -> tuple[str, str]:
        return _weak(self)  # every claim, the forest plot and the page read it: decided once


def _weak(setting: Setting) -> tuple[str, str]:
    """(the weak modality, a sentence on how it was chosen) for `Setting.weak`."""
    reported = setting.record["fusion_results"][FUSION]["weak"]
    methods = setting.methods
    modalities = [m for m in methods.get("vanilla", {}).get("values", {}) if unimodal_name(m) in methods]
    if len(modalities) != 2:
        return reported, ""
    strong = next(m for m in modalities if m != reported)
    alone = effect(setting, unimodal_name(strong), unimodal_name(reported), strong, reported)
    if alone is None or alone["low"] is None or alone["low"] > 0:
        return reported, ""
    starved = {m: effect(setting, "vanilla", unimodal_name(m), m) for m in modalities}
    if any(d is None for d in starved.values()):
        return reported, ""
    chosen = min(modalities, key=lambda m: starved[m]["mean"])
    other = next(m for m in modalities if m != chosen)
    probe = effect(setting, "vanilla", unimodal_name(other), f"probe_{other}", other)
    return chosen, (f"Alone, the two modalities cannot be told apart ({strong} − {reported}: {points(alone)} points, "
                    f"paired by seed), so the paper's \"weaker modality\" names neither; the claims read the one joint "
                    f"training reads furthest below its unimodal model, **{chosen}** (vanilla − unimodal: "
                    + "; ".join(f"{m} {points(starved[m])}" for m in modalities) + "). The choice matters: read on "
                    f"{other}, claim 1's probe row would be {points(probe)} ({verdict(probe, -1)}), and the report's own "
                    f"2 × 2 (results.md) reads {reported}, the modality whose unimodal mean is lower.")


def load_setting(folder) -> Setting:
    """The tuned comparison report in `folder` (`compare/` of a search folder), named by its data options."""
    folder = Path(folder)
    record = handed.read_report(folder)
    if record.get("kind") != "tuned" or FUSION not in record.get("fusion_results", {}):
        raise UserError(f"{folder} holds no tuned comparison with {FUSION} fusion; make one with "
                        "`milesbook compare --from-search DIR` (make tuned)")
    search_dir = (folder / record["search_dir"]).resolve()
    options = {}
    best = next(iter(sorted(search_dir.glob("*/best.json"))), None)
    if best is not None:
        options = handed.read_best(best)["config"].get("dataset_options", {})
    name = "default" if not options else ", ".join(f"{k} {v}" for k, v in sorted(options.items()))
    return Setting(name, folder, record)


def effect(setting: Setting, treated: str, control: str, column: str, control_column: str | None = None) -> dict | None:
    """`column` of `treated` minus `control_column` (default `column`) of `control`, paired by seed:
    {"mean", "std", "n", "low", "high", …}, the interval at least ± one test sample wide
    (`seed_stats.paired_at_resolution`); None when a side is missing."""
    methods = setting.methods
    if treated not in methods or control not in methods:
        return None
    values_t, values_c = methods[treated]["values"], methods[control]["values"]
    if column not in values_t or (control_column or column) not in values_c:
        return None
    return _paired(methods[treated]["seeds"], values_t[column], methods[control]["seeds"],
                   values_c[control_column or column], _resolution(setting))


def _resolution(setting: Setting) -> float:
    """One test sample, 1/N: the narrowest interval a difference of test scores gets."""
    test_size = setting.record.get("test_size")
    return 1 / test_size if test_size else 0.0


def _paired(seeds_t, values_t, seeds_c, values_c, resolution: float) -> dict | None:
    """Per-seed values (treated minus control, same seed) as `seed_stats.paired_at_resolution` reads them."""
    return paired_at_resolution([{"seed": k, "v": v} for k, v in zip(seeds_t, values_t)],
                                [{"seed": k, "v": v} for k, v in zip(seeds_c, values_c)], "v", resolution)


def verdict(difference: dict | None, direction: int) -> str:
    """"supported" when the 95 % interval lies on the claimed side of zero (`direction` +1: above,
    −1: below), "contradicted" when it lies on the other, "not distinguishable from zero" otherwise."""
    if difference is None or difference["low"] is None:
        return "not measured"
    low, high = difference["low"], difference["high"]
    if (low > 0 and direction > 0) or (high < 0 and direction < 0):
        return "supported"
    if (low > 0 and direction < 0) or (high < 0 and direction > 0):
        return "contradicted"
    return "not distinguishable from zero"


def claim_rows(setting: Setting) -> list[dict]:
    """The claims on one setting: each {"claim", "effect" (what is compared), "difference", "verdict"}."""
    weak = setting.weak
    if weak is None:
        raise UserError(f"{setting.folder} has no unimodal references, so no weak modality to read the claims on; "
                        "re-make it with `milesbook compare --from-search` over searches that include `unimodal`")
    unimodal = unimodal_name(weak)
    rows = [
        ("1 · joint training starves the weak modality", f"vanilla − {unimodal}, {weak}",
         effect(setting, "vanilla", unimodal, weak), -1),
        ("1 · joint training starves the weak modality", f"vanilla − {unimodal}, {weak} encoder (probe)",
         effect(setting, "vanilla", unimodal, f"probe_{weak}", weak), -1),
        ("2 · MILES lifts the weak modality", f"miles − vanilla, {weak}", effect(setting, "miles", "vanilla", weak), +1),
        ("2 · … of which the auxiliary losses", f"aux − vanilla, {weak}", effect(setting, "aux", "vanilla", weak), +1),
        ("2 · … of which the scheduling", f"miles − aux, {weak}", effect(setting, "miles", "aux", weak), +1),
        ("3 · MILES improves the fused prediction", "miles − vanilla, fused",
         effect(setting, "miles", "vanilla", "fusion"), +1),
        ("3 · … beyond its auxiliary losses", "miles − aux, fused", effect(setting, "miles", "aux", "fusion"), +1),
        ("4 · MILES narrows Δ", "miles − vanilla, Δ", effect(setting, "miles", "vanilla", "delta"), -1),
        ("4 · … beyond its auxiliary losses", "miles − aux, Δ", effect(setting, "miles", "aux", "delta"), -1),
    ]
    return [{"claim": claim, "effect": what, "difference": d, "verdict": verdict(d, direction)}
            for claim, what, d, direction in rows]


def against_others(setting: Setting, column: str = "fusion") -> dict[str, list[str]]:
    """Which methods `miles` beats, trails, or cannot be told from on `column`, each paired by seed:
    {"better than": [...], "worse than": [...], "not distinguishable from": [...]}."""
    found = {"better than": [], "worse than": [], "not distinguishable from": []}
    if "miles" not in setting.methods:
        return found
    for method in setting.methods:
        if method in ("miles",) or is_unimodal(method):
            continue
        said = verdict(effect(setting, "miles", method, column), +1)
        key = {"supported": "better than", "contradicted": "worse than"}.get(said, "not distinguishable from")
        found[key].append(report_name(method))
    return found


def forest(setting: Setting, column: str) -> list[tuple[str, dict]]:
    """Every multimodal method's paired effect against `vanilla` on `column` ("fusion" or a modality)."""
    return [(report_name(m), effect(setting, m, "vanilla", column)) for m in setting.methods
            if m != "vanilla" and not is_unimodal(m) and column in setting.methods[m]["values"]]


def inflation(setting: Setting) -> tuple[dict[str, dict], dict | None]:
    """Per method, how much the best test value over epochs (the paper's reading) exceeds the test value
    at the epoch chosen on validation (ours), paired by run on the fused reading; and the mean over the
    methods (each method one unit). Empty when the report predates the paper's reading."""
    per = {}
    for method, entry in setting.methods.items():
        values = entry["values"]
        if is_unimodal(method) or "oracle_fusion" not in values:
            continue
        per[method] = _paired(entry["seeds"], values["oracle_fusion"], entry["seeds"], values["fusion"],
                              _resolution(setting))
    overall = mean_interval([d["mean"] for d in per.values()]) if len(per) > 1 else None
    return per, overall


def draw_forest(settings: list[Setting]):
    """The forest plot of `forest` for each setting, fused and weak modality: the figure's axes."""
    from . import plots
    return plots.plot_forest({s.name: {column: forest(s, column) for column in ("fusion", s.weak)} for s in settings})


def write_claims(folders, out) -> Path:
    """docs/claims.md from the tuned comparisons in `folders` (each a `compare/` folder; the first is
    read as the default setting), with the forest plot beside it (claims-forest.png). Returns the page."""
    settings = [load_setting(f) for f in folders]
    out = Path(out)
    figure = out.with_name(out.stem + "-forest.png")
    save_figure(draw_forest(settings).flat[0].figure, figure, dpi=120, bbox_inches="tight")
    write_text(out, claims_page(settings, figure.name))
    return out


def paper_numbers() -> str:
    """The paper's own numbers (Table II, Table I's weak modality alone) as Markdown, and the
    third-party reproduction beside them."""
    lines = ["**The paper's numbers** (Table II, concatenation fusion, test accuracy %, vanilla → MILES; Table I "
             "for the weak modality alone):", "",
             "| dataset | fused | strong | weak | weak alone |", "|---|---|---|---|---|"]
    for dataset, numbers in PAPER.items():
        v, m = numbers["vanilla"], numbers["miles"]
        lines.append(f"| {dataset} | {v[0]} → {m[0]} | {v[1]} → {m[1]} | {v[2]} → {m[2]} | {numbers['unimodal weak']} |")
    lines += ["", f"A third party could not reproduce the fused gain: {THIRD_PARTY}. The paper reports one "
              "best-of-80 run per method, at the epoch with the best *test* accuracy, without seeds or variance."]
    return "\n".join(lines)


def setting_section(setting: Setting) -> str:
    """One setting's claims as Markdown: the table of paired effects with verdicts, MILES against every
    other method on the fused accuracy, and the paper's reading beside ours."""
    lines = [setting.weak_reason, ""] if setting.weak_reason else []
    lines += ["| claim | effect (paired by seed, points) | difference | verdict |", "|---|---|---|---|"]
    for row in claim_rows(setting):
        lines.append(f"| {row['claim']} | {row['effect']} | {points(row['difference'])} | {row['verdict']} |")
    others = against_others(setting)
    lines += ["", "MILES against every other method on the fused accuracy (paired by seed): " + "; ".join(
        f"{k} {', '.join(v) if v else 'none'}" for k, v in others.items()) + ".", ""]
    per, overall = inflation(setting)
    if per:
        lines += ["**The paper's reading beside ours.** Fused test accuracy (%) at the epoch chosen on validation "
                  "(ours) and at the epoch with the best *test* accuracy (the paper's reading, and the official ARL, "
                  "AUG and Remix scripts'), means over the seeds, and how much that choice adds, paired by run:", "",
                  "| method | ours | best on test | inflation (points) |", "|---|---|---|---|"]
        for method, difference in per.items():
            values = setting.methods[method]["values"]
            ours, best = (100 * sum(values[k]) / len(values[k]) for k in ("fusion", "oracle_fusion"))
            lines.append(f"| {report_name(method)} | {ours:.1f} | {best:.1f} | {points(difference)} |")
        if overall:
            lines += ["", f"Over the methods (each one unit) the paper's reading adds **{points(overall)}** points "
                      "to the fused accuracy: a number read at the best test epoch is that much higher than one a "
                      "reader could reproduce without looking at the test set."]
    else:
        lines.append("The paper's reading (best test accuracy over epochs) is not in this report: re-make it with "
                     "`milesbook compare --from-search` (the runs are reused).")
    return "\n".join(lines)


def _protocol(setting: Setting) -> str:
    """How a setting's comparison was made, from its report and searches: dataset, draws, fresh seeds."""
    search_dir = (setting.folder / setting.record["search_dir"]).resolve()
    searches = [handed.read_best(b) for b in sorted(search_dir.glob("*/best.json"))]
    config = searches[0]["config"] if searches else {}
    trials = {b.get("trials_complete") for b in searches} - {None}
    draws = f"{trials.pop()} draws" if len(trials) == 1 else "its draws"
    return (f"`{config.get('dataset', 'its dataset')}`; every method searched the same way, {draws} chosen on "
            f"validation, then retrained on {setting.record.get('seeds')} seeds no search used")


def verdict_table(settings: list[Setting]) -> str:
    """Every claim's verdict on every setting side by side, with the paired difference it rests on (in
    points; each setting's section names the modalities)."""
    rows = [claim_rows(s) for s in settings]
    lines = ["| claim | effect | " + " | ".join(f"{s.name}" for s in settings) + " |",
             "|---|---|" + "---|" * len(settings)]
    weak = settings[0].weak
    for k, row in enumerate(rows[0]):
        effect_name = re.sub(rf"(?<![\w-]){re.escape(weak)}(?![\w-])", "weak modality",
                             row["effect"].replace(unimodal_name(weak), "unimodal"))
        lines.append(f"| {row['claim']} | {effect_name} | "
                     + " | ".join(f"**{r[k]['verdict']}**: {points(r[k]['difference'])}" for r in rows) + " |")
    return "\n".join(lines)


def claims_page(settings: list[Setting], figure: str) -> str:
    """The page: per claim, the paper's statement and numbers, then each setting's paired effects with
    verdicts, the comparison with every other method, and the paper's reading beside ours."""
    names = " and ".join(f"**{s.name}**" for s in settings)
    lines = ["# The MILES paper's claims, tested", "", "[← README](../README.md)", "",
             f"{CITATION} claim that (1) naive joint training starves "
             "the weaker modality, (2) MILES lifts the weaker modality's encoder, (3) MILES improves the fused "
             "prediction over joint training and over the other balancing methods, and (4) it narrows the gap Δ "
             "between the modalities.", "",
             f"Here each claim is a paired effect over the fresh seeds of the tuned comparison on {names} "
             f"({', '.join(sorted({_protocol(s) for s in settings}))}), with its 95 % t-interval (at least ± one test sample wide) and a verdict: "
             "**supported** when the interval "
             "lies on the claimed side of zero, **contradicted** when it lies on the other, **not "
             "distinguishable from zero** otherwise. The auxiliary losses (`aux` − `vanilla`) and MILES's "
             "scheduling on top of them (`miles` − `aux`) are kept apart, as the 2 × 2 separates them. Made by "
             f"`milesbook claims {' '.join(str(s.folder) for s in settings)} --out docs/claims.md`.", "",
             paper_numbers(), "", "## In short", "", verdict_table(settings), ""]
    for s in settings:
        lines += [f"## {s.name} setting", "", f"Made under: {s.record.get('made_under', '').removeprefix('Made under: ')} "
                  f"Report: `{s.folder}`.", "", setting_section(s), ""]
    lines += ["## Every method against vanilla", "",
              f"![forest plot]({figure})", "",
              "Each method's fused accuracy and weak-modality reading minus `vanilla`'s, paired by seed, with "
              "95 % intervals, on each setting (the report tables give the numbers).", ""]
    return "\n".join(lines)
