"""Provenance: the conditions a run was made under, so that a number can be reproduced and a cached
run is never reused, or resumed, under other conditions.

PyTorch promises bit-identical results only on the same software and hardware: the thread count
changes how reductions are chunked, the CPU's instruction set (AVX2, AVX-512) changes kernels, and a
torch release may change any of them (`../shared/reference/reproducibility.md`). So every run folder
holds `provenance.json` (and a copy in `summary.json`), a flat record:

- `milesbook.version`, `milesbook.results_version` (`RESULTS_VERSION`: bumped whenever a change of
  the code moves a run's numbers; `tests/test_golden.py` fails until it is), `source.git.commit` and
  `source.git.dirty` (when the package runs from a git checkout; `None` otherwise);
- `python`, `numpy.version`, `torch.version`, `torch.git_version`, `cuda.version`, `cudnn.version`;
- `device.kind` ("cpu" or "cuda"), `device.name` (the CPU model or the GPU), `cpu.capability`
  (`torch.backends.cpu.get_cpu_capability()`), `threads` (torch's intra-op threads while training);
- `deterministic` ("on", or "warn only" on CUDA, where some kernels have no deterministic version),
  `cudnn.deterministic`, `cudnn.benchmark`, the TF32 switches, and `env`: the environment variables
  that change numbers (`NUMBER_ENV`);
- `data.name` and `data.fingerprint`: a hash of every tensor the run could read (each split's inputs
  and labels, after the dataset's options) and of how they are read (normalisation, training noise,
  task, classes) — a change in any sample changes it; `data.origin` for your own data ("folder
  PATH" or "in memory");
- `encoders`, when you gave encoders of your own: per modality its class, parameter count, a hash of
  its initial weights (`encoder_identity`) and "origin": "in memory" (a module given in Python) or
  "factory package.module:factory" (named by `--encoder`).

Which fields must agree for what:

- `REUSE_FIELDS` — a finished run is reused (compare's cache) only when its configuration and these
  agree: the results version, the threads, the device kind, the data and the encoders you gave;
- `BITWISE_FIELDS` — a run is resumed only when these agree too (the torch build, the CPU or GPU and
  its instruction set, the determinism settings): otherwise the resumed epochs would be made under
  other conditions than the first ones. Runs whose `BITWISE_FIELDS` agree are bit-for-bit identical
  on CPU; on CUDA, as far as the deterministic kernels reach (`deterministic` says "warn only").
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import subprocess
import weakref
from pathlib import Path

import torch

RESULTS_VERSION = 2  # CHANGELOG.md says what moved at each bump
FILE = "provenance.json"
NUMBER_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "CUBLAS_WORKSPACE_CONFIG")
REUSE_FIELDS = ("milesbook.results_version", "threads", "device.kind", "data.fingerprint", "encoders")
BITWISE_FIELDS = (*REUSE_FIELDS, "torch.version", "torch.git_version", "cuda.version", "cudnn.version",
                  "device.name", "cpu.capability", "deterministic", "cudnn.deterministic", "cudnn.benchmark",
                  "cuda.matmul.allow_tf32", "cudnn.allow_tf32", "env")


@functools.lru_cache(maxsize=1)
def source_version() -> dict:
    """The git commit of the package's checkout and whether `milesbook/` has uncommitted changes
    (None for both when it was installed from a wheel)."""
    package = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        # the package's own checkout, not some project that happens to hold an installed copy
        tracked = subprocess.run(["git", "-C", str(package), "ls-files", "--error-unmatch", "provenance.py"],
                                 capture_output=True, text=True, timeout=10)
        if commit.returncode != 0 or tracked.returncode != 0:
            return {"source.git.commit": None, "source.git.dirty": None}
        dirty = subprocess.run(["git", "-C", str(package), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10)
        return {"source.git.commit": commit.stdout.strip(), "source.git.dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"source.git.commit": None, "source.git.dirty": None}


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _tensor_bytes(x) -> memoryview:
    """The bytes of a tensor or array without a copy where it is contiguous already."""
    import numpy as np
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its bits
            x = x.view(torch.int16)
        x = x.contiguous().numpy()
    return memoryview(np.ascontiguousarray(x)).cast("B")


_FINGERPRINTS: dict[int, tuple] = {}  # id(data) → (a weak reference to it, the state it was hashed in, its fingerprint)
_SETTLED_NS = 2 * 10 ** 9  # a file modified less than this before it was hashed is not trusted to show a later write


def data_fingerprint(data) -> str:
    """`_fingerprint(data)`, reused only while the data provably has not changed since it was hashed.

    What counts as proof: a split read from a folder (`arrays.Rows.mapped_file`: a read-only memory map
    of a whole .npy) can change only through its file, so the file's device, inode, size, mtime_ns and
    ctime_ns (with the rows the split reads) stand for its bytes — unless the file was modified within
    `_SETTLED_NS` before it was hashed, when a coarse file-system clock could give a second write the
    same mtime (git's "racy" rule). Whatever is held in memory is hashed again on every call: torch's
    version counter (`tensor._version`) misses writes through a numpy view (`t.numpy()[0] += 1`, or the
    array a `torch.from_numpy` tensor shares) and through `.data`, so it proves nothing. A dataset held
    in memory (every registered one) is hashed per call as before the cache (sha256 ≈ 1 GB/s; digits-av
    a few ms); a folder of your own data is read once while its files are unchanged (its labels, in
    memory, hashed each time)."""
    pieces = _pieces(data)
    if not any(_mapped(x) for _, x in pieces):  # nothing but memory: hashing it is the only proof
        _FINGERPRINTS.pop(id(data), None)
        return _fingerprint(data)
    state = (_how(data), tuple(_piece_state(key, x) for key, x in pieces))
    seen = _FINGERPRINTS.get(id(data))
    if seen is not None and seen[0]() is data and seen[1] == state:
        return seen[2]
    import time
    started = time.time_ns()
    fingerprint = _fingerprint(data)
    files = [token for token in state[1] if token[0] == "file"]
    unchanged = all(_file_stat(token[1]) == token[2] for token in files)  # nothing written while it was read
    settled = all(token[2] is not None and max(token[2][3], token[2][4]) + _SETTLED_NS <= started for token in files)
    if unchanged and settled:
        _FINGERPRINTS[id(data)] = (weakref.ref(data, lambda _, key=id(data): _FINGERPRINTS.pop(key, None)),
                                   state, fingerprint)
    else:
        _FINGERPRINTS.pop(id(data), None)
    return fingerprint


def _how(data) -> str:
    """How `data`'s tensors are read (normalisation, noise, task, classes), as `_fingerprint` hashes it."""
    how = {"modalities": list(data.modalities), "num_classes": data.num_classes, "task": data.task,
           "train_noise_std": data.train_noise_std, "normalize": data.normalize,
           "encoder_options": data.encoder_options}
    return json.dumps(how, sort_keys=True, default=str)


def _pieces(data) -> list[tuple[tuple[str, str], object]]:
    """((split, key), tensor or rows) of everything a run of `data` can read, in the order hashed."""
    return [((name, key), x) for name in sorted(data.splits)
            for key, x in [*sorted(data.splits[name].inputs.items()), ("labels", data.splits[name].labels)]]


def _mapped(x) -> str | None:
    """The file `x` reads through a read-only memory map (`arrays.Rows.mapped_file`), else None."""
    mapped = getattr(x, "mapped_file", None)
    return mapped() if callable(mapped) else None


def _file_stat(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _piece_state(key: tuple[str, str], x) -> tuple:
    """What proves one piece unchanged: for a memory-mapped file its stat and the rows read (their index,
    hashed: it is a mutable array), for anything in memory a hash of its bytes."""
    path = _mapped(x)
    if path is not None:
        array = x.array
        rows = hashlib.sha256(_tensor_bytes(x.index)).hexdigest()
        return ("file", path, _file_stat(path), key, array.offset, array.dtype.str, array.shape, array.strides,
                tuple(x.sample_shape), rows)
    digest = hashlib.sha256()
    for part in x.chunks() if hasattr(x, "chunks") else [x]:
        digest.update(_tensor_bytes(part))
    return ("memory", key, str(x.dtype), tuple(x.shape), digest.hexdigest())


def _fingerprint(data) -> str:
    """A sha256 (16 hex digits) of everything a run of `data` (a `MultimodalDataset`) can read: each
    split's inputs and labels with their dtypes and shapes, and how they are read. Cheap next to an
    epoch (digits-av: a few milliseconds; sha256 runs at about 1 GB/s)."""
    digest = hashlib.sha256()
    digest.update(_how(data).encode())
    for (name, key), x in _pieces(data):
        digest.update(f"|{name}/{key}/{x.dtype}/{tuple(x.shape)}|".encode())
        for part in x.chunks() if hasattr(x, "chunks") else [x]:  # a split read from disk: a chunk at a time
            digest.update(_tensor_bytes(part))
    return digest.hexdigest()[:16]


def encoder_identity(module: torch.nn.Module) -> dict:
    """What names an encoder you gave: its class, its parameters' count and shapes, and a sha256 (16 hex
    digits) of its initial weights and buffers."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"|{name}/{tensor.dtype}/{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor.detach().cpu()))
    kind = type(module)
    return {"class": f"{kind.__module__}.{kind.__qualname__}",
            "parameters": sum(p.numel() for p in module.parameters()), "weights": digest.hexdigest()[:16]}


def collect(device: torch.device | str, threads: int, data=None, encoders: dict | None = None,
            origins: dict | None = None) -> dict:
    """The provenance of a run about to train on `device` with `threads` torch threads over `data`, with
    your own `encoders` {modality: nn.Module} if any, each from `origins[m]` (default "in memory"; or
    "factory package.module:factory") (see the module docstring for the fields)."""
    from ._version import __version__
    device = torch.device(device)
    cuda = device.type == "cuda"
    record = {"milesbook.version": __version__, "milesbook.results_version": RESULTS_VERSION,
              **source_version(),
              "python": platform.python_version(), "numpy.version": __import__("numpy").__version__,
              "torch.version": torch.__version__, "torch.git_version": torch.version.git_version,
              "cuda.version": torch.version.cuda if cuda else None,
              "cudnn.version": torch.backends.cudnn.version() if cuda else None,
              "device.kind": device.type,
              "device.name": torch.cuda.get_device_name(device) if cuda else _cpu_model(),
              "cpu.capability": torch.backends.cpu.get_cpu_capability(),
              "threads": threads,
              "deterministic": "warn only" if cuda else "on",
              "cudnn.deterministic": True if cuda else None, "cudnn.benchmark": False if cuda else None,
              "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32 if cuda else None,
              "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32 if cuda else None,
              "env": {name: os.environ.get(name) for name in NUMBER_ENV}}
    if data is not None:
        record.update({"data.name": data.name, "data.fingerprint": data_fingerprint(data)})
        if getattr(data, "origin", ""):  # your own data: a folder's path, or "in memory"
            record["data.origin"] = data.origin
    if encoders:  # given in memory: the run is reused only with the same encoders, and says so
        record["encoders"] = {m: {**encoder_identity(e), "origin": (origins or {}).get(m, "in memory")}
                              for m, e in sorted(encoders.items())}
    return record


@contextlib.contextmanager
def reproducible(threads: int, device: torch.device | str):
    """Train under `threads` torch threads with deterministic algorithms (on CUDA also cuDNN's
    deterministic kernels and no autotuning; `train.resolve_device` sets cuBLAS's workspace before CUDA
    starts), and put the process's previous settings back afterwards (a notebook keeps its own)."""
    device = torch.device(device)
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.set_num_threads(threads)
    # On CUDA some kernels (e.g. adaptive average pooling's backward) have no deterministic version:
    # they warn instead of stopping the run, and provenance says "warn only".
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[3], before[4]


def differences(recorded: dict | None, current: dict, fields=BITWISE_FIELDS,
                labels=("recorded", "now")) -> list[str]:
    """"threads (recorded 2, now 1)" for each of `fields` on which the two records disagree; a run
    made before provenance was recorded differs in all of them."""
    if recorded is None:
        return ["no provenance recorded (made before milesbook 0.2)"]
    return [f"{key} ({labels[0]} {_short(recorded.get(key))}, {labels[1]} {_short(current.get(key))})"
            for key in fields if recorded.get(key) != current.get(key)]


def _short(value) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)


def read(folder) -> dict | None:
    """A run folder's provenance.json, checked against its schema (`milesbook.handed`); None when it has none."""
    from .handed import ProvenanceJson, read_json
    path = Path(folder) / FILE
    return read_json(path, ProvenanceJson) if path.exists() or path.is_symlink() else None


def describe(record: dict) -> str:
    """One line: what a reader needs to know to reproduce a number."""
    commit = record.get("source.git.commit")
    source = "" if not commit else f", commit {commit[:10]}{' + local changes' if record.get('source.git.dirty') else ''}"
    where = record["device.name"] if record["device.kind"] == "cuda" else \
        f"CPU {record['device.name']} ({record['cpu.capability']})"
    threads = record["threads"]
    data = f"; data {record['data.name']} {record['data.fingerprint']}" if record.get("data.fingerprint") else ""
    return (f"milesbook {record['milesbook.version']} (results v{record['milesbook.results_version']}{source}), "
            f"torch {record['torch.version']}, {where}, {threads} thread{'s' if threads != 1 else ''}, "
            f"deterministic {record['deterministic']}{data}")


def common(records: list[dict | None]) -> dict | None:
    """The provenance the runs share when they all agree on `BITWISE_FIELDS` (the first run's record),
    else None."""
    if not records or any(r is None for r in records):
        return None
    first = records[0]
    return first if all(not differences(first, r) for r in records[1:]) else None


def summarize_many(records: list[dict | None]) -> str:
    """The provenance line of a report made of several runs: one line when they agree on every
    bitwise field, else the line of the most common and what the others differ in."""
    known = [r for r in records if r is not None]
    lines = []
    if len(known) < len(records):
        lines.append(f"{len(records) - len(known)} of {len(records)} runs have no provenance record")
    if not known:
        return "; ".join(lines)
    groups: dict[str, list[dict]] = {}
    for r in known:
        groups.setdefault(json.dumps({k: r.get(k) for k in BITWISE_FIELDS}, sort_keys=True), []).append(r)
    ordered = sorted(groups.values(), key=len, reverse=True)
    head = f"Made under: {describe(ordered[0][0])}" + (f" ({len(ordered[0])} of {len(records)} runs)"
                                                         if len(ordered) > 1 or lines else "") + "."
    for other in ordered[1:]:
        diff = ", ".join(differences(ordered[0][0], other[0], labels=("most", "these")))
        lines.append(f"{len(other)} run(s) differ: {diff}")
    if len(ordered) > 1 or lines:
        head += " These runs MIX provenance: " + "; ".join(lines) + "."
    return head
