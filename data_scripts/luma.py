#!/usr/bin/env python
"""Download and prepare LUMA (spoken class names + CIFAR images, Bezirganyan et al.) for milesbook.

What it downloads: CIFAR-10 and CIFAR-100 (python versions, 163 MB + 161 MB, md5-checked against the
sums on the CIFAR page), LUMA's published split indices (github.com/bezirganyan/LUMA/split_indices,
four small text files), and from huggingface.co/datasets/bezirganyan/LUMA the audio list
audio/datalist.csv and the ~25,000 WAV clips the splits use (about 1 GB; the Hub publishes no
checksum list, so each clip is checked by decoding it — a short file is caught by its header).
With the files already on disk: --from DIR, a folder holding cifar-10-python.tar.gz,
cifar-100-python.tar.gz, split_indices/*.txt and audio/ (datalist.csv and the clips) — e.g. a
`git clone https://huggingface.co/datasets/bezirganyan/LUMA` (git-lfs installed) with the other files
copied in; the CIFAR md5s are checked there too, and prepared.json records how each file was verified.
Where it puts them: $MILESBOOK_CACHE/luma (default ~/.cache/milesbook/luma): raw/ holds the sources,
prepared.npz the 42-class pairs (16,800 / 4,200 / 4,200; audio 1×96×96 log mel, image 3×96×96 —
about 1.2 GB), prepared.json marks it complete. Re-running is safe: verified files are skipped, a
partial download resumes, and nothing is marked complete until the prepared arrays are written.
"""
import sys

from milesbook.datasets import luma
from milesbook.datasets.prepare import script_main

if __name__ == "__main__":
    sys.exit(script_main(luma, __doc__))
