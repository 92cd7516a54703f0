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
import sys

from milesbook.datasets import smnist
from milesbook.datasets.prepare import script_main

if __name__ == "__main__":
    sys.exit(script_main(smnist, __doc__))
