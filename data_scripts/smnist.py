#!/usr/bin/env python
"""Download and prepare S-MNIST (written + spoken digits, Khacef et al.) for milesbook.

What it downloads: six NumPy files from Zenodo record 4452953 (MNIST pixels 60,000/10,000 × 784,
Speech Commands MFCCs 60,000/10,000 × 507, labels) — their sizes and md5 sums are read from the
record's API when the script runs and printed with the licence; expect several hundred MB.
Where it puts them: $MILESBOOK_CACHE/smnist (default ~/.cache/milesbook/smnist): raw/ holds the six
files, prepared.npz the MILES paper's protocol (8,000 train / 2,000 val from the training files,
2,000 test from the test files, both modalities 1×28×28), prepared.json marks it complete.
Re-running is safe: verified files are skipped, a partial download resumes, and nothing is marked
complete until the prepared arrays are written. With the files already on disk: --from DIR.
"""
import argparse
import sys
from pathlib import Path

from milesbook import smnist
from milesbook.errors import UserError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, help="folder that already holds the six .npy files")
    parser.add_argument("--out", type=Path, default=None, help=f"where to prepare it (default {smnist.root()})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 8k/2k/2k sampling")
    args = parser.parse_args(argv)
    print(f"S-MNIST — cite: {smnist.CITATION}")
    try:
        smnist.prepare(args.out, args.source, args.seed)
    except UserError as error:
        print(f"smnist: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
