"""The shared figure style: integer epoch axes, rates as steps between epoch boundaries, a visible
τ = 0 line, one colour per modality everywhere, bars centred on their method, and no error bars
where there is one seed."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
from matplotlib.patches import StepPatch  # noqa: E402

from milesbook import plots  # noqa: E402

MODALITIES = ["image", "audio"]


def _history(epochs=5):
    rows = []
    for e in range(1, epochs + 1):
        slowed = e in (2, 3)  # MILES slowed the image encoder in epochs 2 and 3
        rows.append({"epoch": e, "u_image": 0.5 / e, "u_audio": 0.01 * e, "delta": 0.5 / e - 0.01 * e,
                     "lr_image": 5e-4 if slowed else 1e-3, "lr_audio": 1e-3, "lr_fusion": 1e-3,
                     "val_acc_fusion": 0.8 + 0.02 * e, "val_acc_image": 0.7 + 0.02 * e, "val_acc_audio": 0.2 + 0.01 * e})
    return rows


def _row(method, seeds, fusion=None, image=None, audio=None):
    def pair(value):
        return (None, None) if value is None else (value, 0.02)
    row = {"method": method, "seeds": seeds, "metric": "acc"}
    for key, value in (("fusion", fusion), ("image", image), ("audio", audio)):
        row[f"{key}_mean"], row[f"{key}_std"] = pair(value)
    return row


def _bars(ax):
    return [c for c in ax.containers if isinstance(c, BarContainer)]


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_epoch_axes_have_integer_ticks_and_rates_step_at_epoch_boundaries():
    axes = plots.plot_learning_dynamics(_history(), MODALITIES, tau=0.2)
    axes[0].figure.canvas.draw()
    for ax in axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    steps = {p.get_label(): p for p in axes[1].patches if isinstance(p, StepPatch)}
    image = steps["lr image"].get_data()
    assert list(image.edges) == [0, 1, 2, 3, 4, 5]  # epoch e trains between e − 1 and e
    assert list(image.values) == [1e-3, 5e-4, 5e-4, 1e-3, 1e-3]


def test_tau_zero_line_is_drawn_above_the_zero_line():
    ax = plots.plot_learning_dynamics(_history(), MODALITIES, tau=0.0)[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    tau = lines["τ = 0"]
    zero = next(line for line in ax.get_lines() if line.get_label().startswith("_") and list(line.get_ydata()) == [0, 0])
    assert list(tau.get_ydata()) == [0, 0] and tau.get_zorder() > zero.get_zorder()
    assert tau.get_linestyle() != zero.get_linestyle()


def test_one_colour_per_modality_in_every_figure():
    dynamics = plots.plot_learning_dynamics(_history(), MODALITIES)
    utilization = plots.plot_utilization({"vanilla": _history(), "aux": _history()}, MODALITIES)
    bars = plots.plot_result_bars([_row("vanilla", 3, 0.9, 0.85, 0.3)], MODALITIES)
    for m in MODALITIES:
        expected = to_hex(plots.colour(m))
        assert to_hex(next(line for line in dynamics[0].get_lines() if line.get_label() == f"u_{m}").get_color()) == expected
        assert to_hex(next(line for line in dynamics[2].get_lines() if line.get_label() == m).get_color()) == expected
        for ax in utilization:
            assert to_hex(next(line for line in ax.get_lines() if line.get_label() == f"u_{m}").get_color()) == expected
        bar = next(c for c in _bars(bars) if c.get_label() == m)
        assert to_hex(bar.patches[0].get_facecolor()) == expected
    assert to_hex(next(line for line in dynamics[2].get_lines() if line.get_label() == "fusion").get_color()) == "#000000"
    assert plots.colour("image") != plots.colour("audio")
    assert plots.colour("depth") == plots.colour("depth")  # an unknown modality keeps its colour


def test_bars_are_centred_on_their_method_and_have_no_error_bars_with_one_seed():
    table = [_row("unimodal-image", 1, image=0.9), _row("unimodal-audio", 1, audio=0.6),
             _row("vanilla", 1, 0.95, 0.9, 0.3)]
    ax = plots.plot_result_bars(table, MODALITIES)
    centres = {}
    for container in _bars(ax):
        assert container.errorbar is None  # one seed: no spread to draw
        for patch in container.patches:
            centres.setdefault(round(patch.get_x() + patch.get_width() / 2), []).append(patch.get_x() + patch.get_width() / 2)
    assert centres[0] == [pytest.approx(0.0)] and centres[1] == [pytest.approx(1.0)]  # a lone bar sits on its tick
    assert sum(centres[2]) / 3 == pytest.approx(2.0)  # the three bars of vanilla are centred on its tick
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1  # beside the axes, not over bars


def test_bars_and_sweeps_draw_the_spread_with_several_seeds():
    ax = plots.plot_result_bars([_row("vanilla", 3, 0.95, 0.9, 0.3)], MODALITIES)
    assert all(c.errorbar is not None for c in _bars(ax))
    rows = [{"tau": t, **_row("miles", 3, 0.9, 0.9, 0.5)} for t in (0.0, 0.2)]
    with_spread = plots.plot_sweep(rows, "tau", MODALITIES)
    assert with_spread.get_xlabel() == "τ"
    assert all(c.has_yerr for c in with_spread.containers)
    one_seed = plots.plot_sweep([{**r, "seeds": 1} for r in rows], "tau", MODALITIES)
    assert not any(c.has_yerr for c in one_seed.containers)


def test_sweep_point_title_uses_greek_letters_and_plain_numbers(tmp_path):
    import csv
    history = _history()
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    row = {"tau": 0.2, "mu": 0.5, "runs": [str(run)], "metric": "acc", "fusion_mean": 0.9, "image_mean": 0.88,
           "audio_mean": 0.31}
    axes = plots.plot_sweep_point(row, MODALITIES)
    title = axes[0].figure._suptitle.get_text()
    assert title.startswith("τ = 0.2, μ = 0.5 — test accuracy: fusion 90.0 %, image 88.0 %, audio 31.0 %"), title


def test_figures_keep_the_book_style_after_another_library_switched_styles():
    with plt.style.context("ggplot"):  # as Optuna's plots do, globally
        ax = plots.plot_result_bars([_row("vanilla", 3, 0.9, 0.85, 0.3)], MODALITIES)
        assert plt.rcParams["axes.facecolor"] == "#E5E5E5"  # the caller's style is left as it was
    assert to_hex(ax.get_facecolor()) == "#ffffff"
    assert ax.spines["top"].get_visible() is False


def test_dynamics_legends_sit_under_their_panels_and_label_the_gap():
    axes = plots.plot_learning_dynamics(_history(), MODALITIES, tau=0.2)
    figure = axes[0].figure
    figure.canvas.draw()
    for ax in axes:  # under the epoch axis, never over the curves
        legend = ax.get_legend().get_window_extent()
        assert legend.y1 <= ax.get_window_extent().y0 + 1
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert "δ" in labels and "τ = 0.2" in labels  # two modalities: δ = |u_A − u_B|
    many = [{**row, "u_text": 0.0, "lr_text": 1e-3, "val_acc_text": 0.5} for row in _history()]
    labels = [t.get_text() for t in plots.plot_utilization({"run": many}, [*MODALITIES, "text"])[0].get_legend().get_texts()]
    assert "δ = max u − min u" in labels and "u_text" in labels
    plt.close("all")


def _summaries(seeds=3):
    runs = {"unimodal-audio": [], "vanilla": []}
    for s in range(seeds):
        runs["unimodal-audio"].append({"seed": s, "metric": "acc", "test_acc_audio": 0.8 + 0.01 * s})
        runs["vanilla"].append({"seed": s, "metric": "acc", "test_acc_fusion": 0.95, "test_acc_image": 0.9,
                                "test_acc_audio": 0.3 + 0.02 * s})
    return runs


def test_results_show_every_seed_and_an_interval_in_each_modalitys_colour():
    ax = plots.plot_results(_summaries(), MODALITIES)
    points = [c for c in ax.collections if len(c.get_offsets())]
    drawn = sorted(round(y, 6) for c in points for _, y in c.get_offsets())
    for value in (80.0, 81.0, 82.0, 30.0, 32.0, 34.0, 95.0, 90.0):
        assert round(value, 6) in drawn  # every seed's value is a point
    audio = [c for c in points if to_hex(c.get_facecolor()[0]) == to_hex(plots.colour("audio"))]
    assert audio  # the audio readings in audio's colour
    def intervals(ax):  # seaborn's error bars: solid lines without markers spanning a range of values
        import math
        return [line for line in ax.get_lines() if line.get_linestyle() == "-" and line.get_marker() in ("None", None)
                and len({y for y in line.get_ydata() if not math.isnan(y)}) > 1]
    assert intervals(ax)  # a 95 % interval with three seeds
    assert not intervals(plots.plot_results(_summaries(seeds=1), MODALITIES))  # none with one seed


def test_grid_heatmap_annotates_each_setting():
    rows = [{"tau": t, "mu": m, "audio_mean": 0.5 + t - 0.1 * m} for t in (0.0, 0.2) for m in (0.5, 1.0)]
    ax = plots.plot_grid_heatmap(rows, "tau", "mu", "audio_mean", "audio (%)")
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(f"{100 * r['audio_mean']:.1f}" for r in rows)
    assert ax.get_xlabel() == "τ" and ax.get_ylabel() == "μ"


def test_search_histories_highlight_the_two_by_two_and_grey_the_rest():
    rows = [{"draw": str(d), "value": str(0.9 + 0.01 * d), "state": "COMPLETE"} for d in range(3)]
    ax = plots.plot_search_histories({"miles": rows, "aux": rows, "ogm": rows, "pmr": rows})
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["miles", "aux", "other methods"]
    steps = {line.get_label(): line for line in ax.get_lines() if line.get_drawstyle().startswith("steps")}
    assert to_hex(steps["other methods"].get_color()) == to_hex("0.7")


def test_search_histories_read_method_names_from_search_folders():
    """What chapter 6 hands it: the search folders' names ("miles-concat"), each highlighted method in a
    colour of its own with its dots, the rest grey."""
    rows = [{"draw": str(d), "value": str(0.9 + 0.01 * d), "state": "COMPLETE"} for d in range(3)]
    names = ["vanilla-concat", "miles-lab-concat", "aux-concat", "miles-concat", "ogm-concat", "pmr-sum"]
    ax = plots.plot_search_histories({name: rows for name in names})
    steps = {line.get_label(): line for line in ax.get_lines() if line.get_drawstyle().startswith("steps")}
    highlighted = {to_hex(steps[n].get_color()) for n in names[:4]}
    assert len(highlighted) == 4 and to_hex("0.7") not in highlighted
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [*names[:4], "other methods"]
    dots = [line for line in ax.get_lines() if line.get_linestyle() == "None"]
    assert {to_hex(d.get_color()) for d in dots} == highlighted


def _figures_of_every_plot():
    """Each public figure the package draws, from small stand-in data: (name, figure)."""
    history = [{"epoch": e, "u_image": 0.4, "u_audio": 0.01, "delta": 0.39, "lr_image": 1e-3, "lr_audio": 1e-3,
                "lr_fusion": 1e-3, "val_acc_fusion": 0.9, "val_acc_image": 0.9, "val_acc_audio": 0.5,
                "val_loss_fusion": 0.3} for e in range(1, 6)]
    rows = [{"method": m, "seeds": 3, "metric": "acc", "fusion_mean": 0.9, "fusion_std": 0.01, "image_mean": 0.9,
             "image_std": 0.01, "audio_mean": 0.5, "audio_std": 0.02} for m in
            ("vanilla", "miles-lab", "aux", "miles", "mses", "mslr-k", "mslr-s", "mslr-d", "ogm", "ogm-ge", "gblend",
             "mmpareto", "pmr", "mla", "inforeg", "aim-r", "arl", "remix", "dgl", "aug")]
    trials = [{"draw": str(d), "value": str(0.9 + 0.001 * d), "state": "COMPLETE"} for d in range(20)]
    grid = [{"tau": t, "mu": m, "audio_mean": 0.86 + 0.001 * t} for t in (0.0, 0.1, 0.2, 0.3, 0.4) for m in (0.25, 0.5, 1.0)]
    effect = {"mean": 0.01, "low": -0.01, "high": 0.03}
    forest = {s: {r: [(m["method"], effect) for m in rows[1:]] for r in ("fusion", "audio")} for s in ("default", "harder")}
    yield "learning dynamics", plots.plot_learning_dynamics(history, ["image", "audio"], title="miles")[0].figure
    yield "utilization", plots.plot_utilization({"vanilla": history, "aux": history, "miles": history},
                                                ["image", "audio"])[0].figure
    yield "result bars", plots.plot_result_bars(rows, ["image", "audio"], title="digits-av").figure
    yield "search histories", plots.plot_search_histories({f"{r['method']}-concat": trials for r in rows}).figure
    yield "grid heatmap", plots.plot_grid_heatmap(grid, "tau", "mu", "audio_mean", "audio (%)", reference=86.1,
                                                  span=2.0).figure
    yield "forest", plots.plot_forest(forest).flat[0].figure
    summaries = {m: [{"seed": seed, "test_acc_fusion": 0.99, "test_acc_image": 0.98, "test_acc_audio": 0.4 + seed / 10}
                     for seed in (1, 2, 3)] for m in ["unimodal-image", *(r["method"] for r in rows)]}
    yield "results, 21 methods", plots.plot_results(summaries, ["image", "audio"], title="digits-av").figure
    yield "results, 3 methods", plots.plot_results(dict(list(summaries.items())[:3]), ["image", "audio"]).figure
    views = ["pixel", "fourier", "morphology"]  # chapter 7: six entries, the longest names of any chapter
    three = {m: [{"seed": 0, "test_acc_fusion": 0.98, **{f"test_acc_{v}": 0.9 for v in views}}]
             for m in [*(f"unimodal-{v}" for v in views), "vanilla", "aux", "miles"]}
    yield "results, 6 entries", plots.plot_results(three, views).figure
    yield "result bars, 8 methods", plots.plot_result_bars(rows[:8], ["image", "audio"]).figure
    yield "best of N", plots.plot_best_of_n(_tuned_result([r["method"] for r in rows])).figure


def _tuned_result(methods):
    """A tuned report.json's fusion entry: three fresh seeds and the best trial per method."""
    return {"weak": "audio", "metric": "acc", "methods": {
        m: {"seeds": [1, 2, 3], "values": {"fusion": [0.99, 0.995, 1.0], "audio": [0.5 + i / 100, 0.52, 0.56]},
            "best_trial": {"fusion": 1.0, "audio": 0.6 - i / 100}} for i, m in enumerate(methods)}}


def test_best_of_n_reads_the_weak_modality_by_default():
    from milesbook.errors import UserError
    result = _tuned_result(["vanilla", "miles"])
    result["methods"]["unimodal-audio"] = {"seeds": [1, 2, 3], "values": {"audio": [0.7, 0.7, 0.7]}}
    result["methods"]["miles"]["values"]["audio"] = [0.8]  # one seed: its point without an interval
    ax = plots.plot_best_of_n(result)
    chosen = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert [line.get_xdata()[0] for line in chosen] == pytest.approx([60.0, 59.0])  # the reference has none
    means = [c for c in ax.containers]  # one errorbar per method, in order
    assert [c.lines[0].get_xdata()[0] for c in means] == pytest.approx([100 * (0.5 + 0.52 + 0.56) / 3, 80.0])
    assert means[0].has_xerr and not means[1].has_xerr
    assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] == pytest.approx([70.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["vanilla", "miles"]
    assert ax.get_xlabel() == "test accuracy, audio (%)"
    fused = plots.plot_best_of_n(result, reading="fusion")
    assert [line.get_xdata()[0] for line in fused.get_lines() if line.get_marker() == "x"] == [100.0, 100.0]
    for entry in result["methods"].values():
        entry.pop("best_trial", None)
    with pytest.raises(UserError, match="re-make the report with `milesbook compare --from-search"):
        plots.plot_best_of_n(result)
def test_every_figure_fits_the_page_and_no_text_is_below_ten_points():
    """The figure standard: drawn no wider than the page's text column (so it is shown at its own size)
    and no text smaller than 10 pt — tick labels, legends, annotations and titles alike."""
    import matplotlib.pyplot as plt
    for name, figure in _figures_of_every_plot():
        figure.canvas.draw()
        width = figure.get_tightbbox(figure.canvas.get_renderer()).width  # inches, legends outside included
        assert width <= plots.PAGE_WIDTH_IN + 0.05, f"{name}: {width:.2f} in wide"
        small = {t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
                 if t.get_visible() and t.get_text().strip() and t.get_fontsize() < plots.MIN_FONT_PT}
        assert not small, f"{name}: text below {plots.MIN_FONT_PT} pt: {sorted(small)[:5]}"
        for ax in figure.axes:  # no two tick labels of one axis overlap
            for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
                boxes = [t.get_window_extent() for t in labels if t.get_visible() and t.get_text().strip()]
                crossing = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
                assert not crossing, f"{name}: {len(crossing)} pair(s) of tick labels overlap"
        plt.close(figure)


def test_every_committed_figure_fits_the_page():
    """The committed figures as drawn — the book's, the claims page's and every committed report's: a
    PNG's width in inches (pixels over its recorded dpi) is at most the page's text column, so a page
    shows it at its own size and its text (≥ 10 pt as drawn, the test above) stays ≥ 10 pt."""
    from pathlib import Path

    from PIL import Image
    docs = Path(__file__).resolve().parents[1] / "docs"
    figures = sorted(docs.rglob("*.png"))
    assert len(list((docs / "book" / "figures").glob("*.png"))) > 15 and docs / "claims-forest.png" in figures
    assert docs / "demo" / "dynamics-concat.png" in figures
    too_wide = {}
    for path in figures:
        with Image.open(path) as image:
            dpi = image.info.get("dpi", (100, 100))[0]
            width = image.size[0] / dpi
        if width > plots.PAGE_WIDTH_IN + 0.1:
            too_wide[path.name] = round(width, 2)
    assert not too_wide, f"wider than {plots.PAGE_WIDTH_IN} in: {too_wide}"
