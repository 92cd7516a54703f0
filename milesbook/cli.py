"""`milesbook …` / `python -m milesbook …`: train one run, compare methods, search hyper-parameters, list datasets.

User errors (an unknown name, a value out of range, a missing dataset, a NaN loss) print one line
starting with "milesbook: error:" and exit with status 2; nothing already written is removed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from .errors import UserError


def _train_flags(parser: argparse.ArgumentParser) -> None:
    from .config import TrainConfig
    d = TrainConfig()
    parser.add_argument("--dataset", default=d.dataset, help="a dataset name (see `milesbook datasets`), or the "
                        "path of your own data: a folder of <modality>.npy + labels.npy (docs/datasets.md, \"Your own data\")")
    parser.add_argument("--fusion", default=d.fusion, help="concat | sum")
    parser.add_argument("--encoder", default=d.encoder,
                        help="auto (the dataset's choice; else MLP for vectors, small CNN for images) | cnn | mlp | "
                             "resnet6/10/18/34/50 | torchvision:NAME[@WEIGHTS_FILE] (any torchvision classifier, "
                             "head replaced; weights only from that local state-dict file) | bow | bert (text) | "
                             "package.module:factory (your own encoder: this IMPORTS that module and runs the "
                             "factory — give only code you trust) — one for all, or per modality: image=resnet50,text=bow")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--lr", type=float, default=d.lr, help="global Adam learning rate α")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--optimizer", default=d.optimizer, help="adam (the MILES paper) | sgd (momentum 0.9)")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay,
                        help="the optimizer's L2 weight decay (default 0; OGM-GE's and PMR's official SGD use 1e-4)")
    parser.add_argument("--utilization-split", default=d.utilization_split, help="val | train")
    parser.add_argument("--device", default=d.device, help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help=f"torch threads per run (default {d.threads}, whatever the machine: the thread count "
                             "changes a run's numbers, so it is part of the run's settings and provenance)")
    parser.add_argument("--no-probes", action="store_true",
                        help="do not train detached linear probes for methods that train no unimodal heads")
    parser.add_argument("--data-option", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a dataset knob, e.g. --data-option audio_noise 1.0, or --data-option text_model DIR "
                             "(MM-IMDb with a local BERT) (repeatable)")
    _method_flags(parser.add_argument_group("methods' hyper-parameters (each declared with its method in "
                                            "milesbook.methods; a flag only changes the methods named)"))


def _method_flags(group) -> None:
    """One flag per registered method knob, derived from its declaration (`Hyperparameter`)."""
    from .methods import METHODS, all_hyperparameters
    for knob in all_hyperparameters().values():
        owners = ", ".join(name for name, cls in METHODS.items() if knob in cls.hyperparameters)
        help_text = f"[{owners}] {knob.help}".replace("%", "%%")
        if knob.default is True or knob.default is False:
            group.add_argument(knob.flag, dest=knob.name, action="store_false" if knob.default else "store_true",
                               help=help_text)
        elif knob.parse is not None:  # parsed in _config, where a bad value is a one-line UserError
            group.add_argument(knob.flag, dest=knob.name, default=None, help=help_text)
        else:
            group.add_argument(knob.flag, dest=knob.name, type=type(knob.default), default=knob.default,
                               help=help_text + (f" (default {knob.default})" if not knob.choices else ""))


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _config(args, **overrides):
    from .config import TrainConfig
    from .methods import all_hyperparameters
    options = {}
    for name, value in args.data_option:
        options[name] = _json_or_text(value)
    knobs = {}
    for knob in all_hyperparameters().values():
        value = getattr(args, knob.name)
        if knob.parse is not None:
            value = knob.default if value is None else knob.parse(value)
        knobs[knob.name] = value
    config = TrainConfig(dataset=args.dataset, dataset_options=options, fusion=args.fusion,
                         encoder=args.encoder, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         optimizer=args.optimizer, weight_decay=args.weight_decay, utilization_split=args.utilization_split,
                         device=args.device, threads=args.threads, probes=not args.no_probes, **knobs)
    return replace(config, **overrides)


def build_parser() -> argparse.ArgumentParser:
    from .methods import MAIN_METHODS, METHODS
    parser = argparse.ArgumentParser(prog="milesbook", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one run into a folder")
    _train_flags(p)
    p.add_argument("--method", default="miles", help=" | ".join([*METHODS, "unimodal-<modality>"]))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder (config.json, history.csv, summary.json, last.pt)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")

    p = sub.add_parser("compare", help="the main job: methods × seeds + unimodal references, Table II style")
    _train_flags(p)
    p.add_argument("--methods", default=",".join(MAIN_METHODS),
                   help="comma-separated method names, or 'all' (the four of the 2 × 2, the seven baselines, "
                        "the recent methods and the 2025 ones)")
    p.add_argument("--fusions", default="concat", help="comma-separated: concat,sum")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3; 5 with --from-search)")
    p.add_argument("--out", default=None, help="report folder (default runs/compare; DIR/compare with --from-search)")
    p.add_argument("--from-search", metavar="DIR",
                   help="the tuned comparison: retrain the setting each search in DIR chose (its best.json) over "
                        "--seeds seeds the searches never used, beside the best trial's own test score; the "
                        "methods, fusions and settings come from DIR")
    p.add_argument("--workers", type=int, default=1,
                   help="processes training at once, each run with its --threads (default 1; the numbers do not "
                        "depend on it)")

    p = sub.add_parser("diagnose", help="is a modality starved in my model? unimodal models, vanilla fusion with "
                       "probes (and with --full the 2 × 2) over seeds, read against a stated rule")
    _train_flags(p)
    p.add_argument("--seeds", type=int, default=3, help="paired seeds (default 3, at least 2)")
    p.add_argument("--full", action="store_true", help="also train miles-lab, aux and miles: does balancing help?")
    p.add_argument("--out", default="runs/diagnose", help="report folder, in compare's layout (default runs/diagnose)")
    p.add_argument("--workers", type=int, default=1, help="processes training at once (the numbers do not depend on it)")

    p = sub.add_parser("search", help="the paper's protocol: the best of N random draws of a method's "
                       "hyper-parameters on validation, as a resumable Optuna study (never reads test)")
    _train_flags(p)
    p.add_argument("--method", default="miles",
                   help=" | ".join([*METHODS, "unimodal-<modality>"]) + "; several (comma-separated, 'all' for the "
                        "2 × 2 and the baselines, 'unimodal' for every modality's reference) run one after another, "
                        "each study in DIR/<method>-<fusion>/ (a unimodal one in DIR/unimodal-<modality>/)")
    p.add_argument("--trials", type=int, default=80, help="draws to finish — complete, or pruned by --pruner (default 80, the paper's)")
    p.add_argument("--seed", type=int, default=0, help="seeds the draws and every trial's training")
    p.add_argument("--out", help="search folder: trials/<number>/ run folders, trials.csv, best.json, plots, "
                                 "and the default storage search.journal")
    p.add_argument("--sampler", default="random",
                   help="random (default; draw k depends only on --seed and k) | tpe")
    p.add_argument("--pruner", default="none", help="none (default) | median | hyperband")
    p.add_argument("--workers", type=int, default=1,
                   help="processes on this machine, each trial with its --threads (the numbers do not depend on it)")
    p.add_argument("--storage", help="an Optuna RDB URL (sqlite:///search.db, postgresql://user:pw@host/db) "
                                     "shared by workers on many machines; default: DIR/search.journal")
    p.add_argument("--study-name", help="default: <dataset>-<method>-<fusion>-<epochs>ep-<hash of the settings>")
    p.add_argument("--space", metavar="FILE", help="TOML (or YAML) ranges replacing the declared ones, "
                                                  "e.g. [tau] low = 0.0  high = 0.3")
    p.add_argument("--status", metavar="DIR", help="list the studies in DIR's storage (or --storage) and stop")

    sub.add_parser("datasets", help="which datasets exist and whether their data is present")

    p = sub.add_parser("notebooks", help="execute the tutorial notebooks headlessly (papermill)")
    p.add_argument("--quick", action="store_true", help="the CI setting: minutes on a 2-core CPU")
    p.add_argument("--out", default="runs/notebooks", help="folder for the executed copies (and their runs)")
    p.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this notebook (repeatable)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a notebook parameter, e.g. -p EPOCHS 10 (repeatable; values read as JSON)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every run the notebooks train (default 1)")

    p = sub.add_parser("verify", help="retrain a run (or re-run a report's seeds) and check that it reproduces")
    p.add_argument("path", metavar="RUN_DIR", help="a run folder (config.json, provenance.json, history.csv) or a "
                                                   "report folder (report.json: compare, compare --from-search)")
    p.add_argument("--epochs", type=int, help="a run folder: check only its first K epochs")
    p.add_argument("--methods", help="a report: re-run only these rows (comma-separated), e.g. miles,aux")
    p.add_argument("--workers", type=int, default=1, help="a report: processes training at once")
    p.add_argument("--dataset", help="a run trained on data given in memory: the same data saved as a folder")
    p.add_argument("--encoder", help="a run or report made with encoders of your own: MODALITY=package.module:factory,… "
                                     "rebuilding them — this IMPORTS those modules and runs the factories (nothing a "
                                     "handed folder names is imported without it)")
    p.add_argument("--out", help="where the re-run goes (default: a temporary folder, removed afterwards; a "
                                 "report's re-run is kept in --out so that an interrupted verify resumes)")

    p = sub.add_parser("claims", help="the MILES paper's claims tested on tuned comparisons (docs/claims.md)")
    p.add_argument("folders", nargs="+", metavar="COMPARE_DIR",
                   help="tuned comparison folders (`compare/` of `make tuned`, the default setting first)")
    p.add_argument("--out", default="docs/claims.md", help="the page to write; its forest plot goes beside it")

    p = sub.add_parser("book", help="the notebooks as a browsable HTML book, from executed copies")
    p.add_argument("--execute", action="store_true",
                   help="execute the notebooks into --source first (the full setting: under an hour on 2 cores; minutes when runs are cached)")
    p.add_argument("--quick", action="store_true",
                   help="the CI setting, always executed (minutes on a 2-core CPU); nothing quick is cached")
    p.add_argument("--source", help="folder of the executed notebooks (default docs/book, the cached full "
                                    "setting; build/book-quick/notebooks with --quick)")
    p.add_argument("--out", help="folder for the HTML pages (default build/book; build/book-quick with --quick)")
    p.add_argument("--no-answers", action="store_true", help="the lecturer's build: the exercises without their answers")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    previous = _on_sigterm(_terminated)
    try:
        return _run(args)
    except UserError as error:
        from .handed import printable
        print(f"milesbook: error: {printable(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("milesbook: interrupted; the last finished epoch is saved — rerun with --resume "
              "(compare resumes by itself)", file=sys.stderr)
        return 130
    except _Terminated:
        print("milesbook: terminated (SIGTERM); the last finished epoch is saved and temporary folders are "
              "removed — rerun the same command to continue", file=sys.stderr)
        return 143
    finally:
        _on_sigterm(previous)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `finally` runs (a verify's temporary folder is removed)."""


def _terminated(signum, frame):
    raise _Terminated


def _on_sigterm(handler):
    """Install `handler` for SIGTERM and return the previous one (nothing outside the main thread,
    where Python cannot set handlers: an embedding caller keeps its own)."""
    import signal
    import threading
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _run(args) -> int:
    if args.command == "datasets":
        from .datasets import REGISTRY, SYNTHETIC
        for title, synthetic in (("Datasets", False), ("Synthetic generator (for teaching, not data)", True)):
            print(f"{title}:")
            for entry in REGISTRY.values():
                if (entry.name in SYNTHETIC) == synthetic:
                    state = "ready" if entry.prepared() else f"not prepared — run: {entry.data_script}"
                    print(f"  {entry.name:10s} {'/'.join(entry.modalities):11s} {state:10s} {entry.description}")
        return 0
    if args.command == "train":
        from .train import train
        config = _config(args, method=args.method, seed=args.seed)
        summary = train(config, args.out, resume=args.resume)
        metric = summary["metric"]
        keys = ["best_epoch", f"test_{metric}_fusion", *[f"test_{metric}_{m}" for m in summary["modalities"]]]
        print(json.dumps({k: summary[k] for k in keys}))
        print(f"run folder: {args.out}")
        return 0
    if args.command == "compare" and args.from_search:
        return _compare_tuned(args)
    if args.command == "compare":
        from .comparison import compare
        from .metrics import METRIC_LABELS
        from .errors import check_choice
        fusions = [f.strip() for f in args.fusions.split(",") if f.strip()]
        for fusion in fusions:
            check_choice("fusion", fusion, ["concat", "sum"])
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        args.seeds = 3 if args.seeds is None else args.seeds
        args.out = args.out or "runs/compare"
        if args.workers < 1:
            raise UserError(f"--workers must be ≥ 1, got {args.workers}")
        report = compare(args.dataset, methods, fusions, args.seeds, args.out, _config(args), workers=args.workers)
        for fusion, result in report.items():
            label = METRIC_LABELS[result["rows"][0]["metric"]]
            spread = f"mean ± std over {args.seeds} seeds" if args.seeds > 1 else "one seed"
            print(f"\n{args.dataset}, {fusion} fusion — test {label} (%), {spread}\n")
            print(result["markdown"])
            if result["decomposition"]:
                print("\n" + result["decomposition"].replace("**", ""))
            if result.get("factorial"):
                print("\n" + result["factorial"])
        print(f"\nreport: {args.out}/results.md (figures beside it)")
        return 0
    if args.command == "search":
        return _search(args)
    if args.command == "diagnose":
        from .diagnose import diagnose
        if args.workers < 1:
            raise UserError(f"--workers must be ≥ 1, got {args.workers}")
        result = diagnose(args.dataset, args.seeds, args.out, _config(args), full=args.full, workers=args.workers,
                          fusion=args.fusion)
        print(result["verdict"])
        print(f"\nreport: {args.out}/diagnosis.md (figure diagnosis.png; the runs' own report results.md)")
        return 0
    if args.command == "verify":
        from .verify import verify
        return verify(args.path, epochs=args.epochs, methods=args.methods, workers=args.workers, out=args.out,
                      dataset=args.dataset, encoder=args.encoder)
    if args.command == "claims":
        from .claims import write_claims
        print(f"claims: {write_claims(args.folders, args.out)} (forest plot beside it)")
        return 0
    if args.command == "notebooks":
        from . import notebooks
        parameters = {name: _json_or_text(value) for name, value in args.parameter}
        names = [notebooks.find(n).stem for n in args.only] if args.only else notebooks.NOTEBOOKS
        if args.threads < 1:
            raise UserError(f"--threads must be ≥ 1, got {args.threads}")
        os.environ["MILESBOOK_THREADS"] = str(args.threads)  # the kernels' TrainConfig default
        for path in notebooks.run(names, quick=args.quick, out=args.out, parameters=parameters):
            print(f"executed: {path}")
        return 0
    if args.command == "book":
        from . import book
        source = args.source or ("build/book-quick/notebooks" if args.quick else book.source_dir())
        out = args.out or ("build/book-quick" if args.quick else "build/book")
        if args.execute or args.quick:
            book.execute(source, quick=args.quick)
        index = book.render(source, out, answers=not args.no_answers)
        print(f"book: {index} ({len(book.NOTEBOOKS)} chapters, {book.setting(source)})")
        return 0
    raise AssertionError(args.command)


def _compare_tuned(args) -> int:
    from .tuned import compare_tuned
    if args.workers < 1:
        raise UserError(f"--workers must be ≥ 1, got {args.workers}")
    defaults = vars(build_parser().parse_args(["compare"]))
    ignored = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
               if k not in ("from_search", "seeds", "out", "workers", "device", "encoder") and defaults.get(k) != v]
    if ignored:
        raise UserError(f"compare --from-search takes the methods, fusions and settings from the searches in "
                        f"{args.from_search}; leave out {', '.join(ignored)}")
    out = Path(args.out) if args.out else Path(args.from_search) / "compare"
    report = compare_tuned(args.from_search, 5 if args.seeds is None else args.seeds, out, workers=args.workers,
                           device=None if args.device == defaults["device"] else args.device,
                           encoder=None if args.encoder == defaults["encoder"] else args.encoder)
    for fusion, result in report.items():
        print(f"\n{fusion} fusion\n\n{result['markdown']}")
        if result["decomposition"]:
            print("\n" + result["decomposition"].replace("**", ""))
        if result["factorial"]:
            print("\n" + result["factorial"])
    print(f"\nreport: {out}/results.md")
    return 0


def _search(args) -> int:
    import optuna

    from . import search
    from .methods.base import is_unimodal
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the bar and the report say it all
    if args.status:
        top = Path(args.status)
        # A search of several methods: one study per sub-folder.
        folders = [top] if args.storage or (top / "study.json").exists() or (top / search.JOURNAL).exists() \
            else sorted(p.parent for p in top.glob("*/study.json")) or [top]
        for folder in folders:
            storage, studies = search.status(folder, args.storage)
            for study in studies:
                print(search.format_status(study, storage) + "\n")
            if not studies:
                print(f"no studies in {storage}")
        return 0
    if not args.out:
        raise UserError("search needs --out DIR (or --status DIR to list what a search folder holds)")
    methods = _search_methods(args.method, args.dataset)
    if len(methods) > 1 and args.study_name:
        raise UserError("--study-name names one study; leave it out when --method names several")
    # MSLR trains each encoder at the rate its unimodal search chose: those studies run first, in this
    # folder (several methods) or beside it (one method's --out).
    methods.sort(key=lambda m: not is_unimodal(m))
    root = Path(args.out) if len(methods) > 1 else Path(args.out).parent
    # Check every study before the first trial: a typo in the fourth method must not wait an hour.
    plans = []
    for method in methods:
        config = _config(args, method=method, seed=args.seed)
        if is_unimodal(method):  # one modality: concat and sum are the same model
            config = replace(config, fusion="concat")
        out = Path(args.out) if len(methods) == 1 else Path(args.out) / search.folder_name(config)
        if method.startswith("mslr-") and not config.mslr_lrs:
            config = _with_unimodal_rates(config, root, methods, placeholder=True)
        search.prepare(config, out, trials=args.trials, sampler=args.sampler, pruner=args.pruner,
                       workers=args.workers, storage=args.storage, study_name=args.study_name, space_file=args.space)
        plans.append((config, out))
    for config, out in plans:
        if config.method.startswith("mslr-") and not _config(args).mslr_lrs:
            config = _with_unimodal_rates(config, root, methods, placeholder=False)
        try:
            result = search.search(config, out, trials=args.trials, sampler=args.sampler, pruner=args.pruner,
                                   workers=args.workers, storage=args.storage, study_name=args.study_name,
                                   space_file=args.space)
        except KeyboardInterrupt:
            print("milesbook: interrupted; finished trials are stored and the interrupted ones run again — "
                  "rerun the same command to continue the search", file=sys.stderr)
            return 130
        storage = args.storage and search.shown_url(args.storage) or f"{out}/{search.JOURNAL}"
        print(search.format_status(result, storage))
        written = [name for name in ("trials.csv", "best.json", "history.png", "params.png") if (out / name).exists()]
        print(f"files in {out}: {', '.join(written)}; each trial's run folder in {out}/trials/\n")
    return 0


def _with_unimodal_rates(config, root: Path, methods: list[str], placeholder: bool):
    """`config` with MSLR's per-encoder rates from the unimodal searches in `root` (their chosen lr),
    as the MSLR paper sets them. Before those searches have run in this same command (`placeholder`),
    the global rate stands in, for checking only."""
    from .datasets import entry_for
    from .methods.base import unimodal_name
    from .search.space import unimodal_rates
    modalities = entry_for(config.dataset).modalities
    rates = unimodal_rates(root, modalities)
    if rates is None and placeholder and all(unimodal_name(m) in methods for m in modalities):
        rates = {m: config.lr for m in modalities}
    if rates is None:
        wanted = ", ".join(str(root / unimodal_name(m)) for m in modalities)
        raise UserError(f"{config.method}'s search trains each encoder at its unimodal model's chosen rate (the "
                        f"MSLR paper's protocol) and finds no finished unimodal search in {wanted}: search "
                        f"--method unimodal,{config.method} --out {root}, or give the rates with --mslr-lrs")
    return replace(config, mslr_lrs=rates)


def _search_methods(text: str, dataset: str) -> list[str]:
    """--method's names: comma-separated, "all" for the 2 × 2 and the baselines, "unimodal" for each
    modality's reference."""
    from .comparison import expand_methods
    from .datasets import entry_for
    from .methods.base import is_unimodal, unimodal_name
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError("--method is empty; name a method, e.g. --method miles")
    modalities = entry_for(dataset).modalities
    methods = []
    for name in names:
        if name == "unimodal":
            expanded = [unimodal_name(m) for m in modalities]
        elif is_unimodal(name):
            expanded = [name]
        else:
            expanded = expand_methods([name], modalities) if name == "all" else [name]
        methods += [m for m in expanded if m not in methods]
    return methods
