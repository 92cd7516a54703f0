#!/usr/bin/env python
"""Download and prepare CREMA-D (emotional speech: audio + video, Cao et al. 2014) for milesbook.

What it downloads: the 7,442 WAV files (AudioWAV/, 16 kHz mono, ~0.6 GB) and 7,442 FLV videos
(VideoFlash/, ~7 GB) of github.com/CheyneyComputerScience/CREMA-D, file by file from GitHub's Git LFS
media host, each checked against the sha256 and size in its LFS pointer — about 7.5 GB in all.
Faster with `git lfs install && git clone https://github.com/CheyneyComputerScience/CREMA-D` and then
--from CREMA-D (the clone's folder; a clone made without git-lfs holds only pointers: run `git lfs
pull` in it). Needs PyAV for the videos: pip install 'milesbook[video]'.
Where it puts them: $MILESBOOK_CACHE/cremad (default ~/.cache/milesbook/cremad): raw/ holds the media,
prepared.npz the MILES paper's protocol (70/15/15 split by emotion; 1×224×224 log spectrogram of the
first 3 s; the middle video frame at 3×224×224 — about 1.9 GB), prepared.json marks it complete.
Re-running is safe: verified files are skipped, a partial download resumes, and nothing is marked
complete until the prepared arrays are written.
"""
import sys

from milesbook.datasets import cremad
from milesbook.datasets.prepare import script_main

if __name__ == "__main__":
    sys.exit(script_main(cremad, __doc__))
