#!/usr/bin/env python
"""Download and prepare MM-IMDb (movie genres from plot + poster, Arevalo et al. 2017) for milesbook.

What it downloads: mmimdb.tar.gz from archive.org/details/mmimdb — about 8.1 GB, checked against the
md5 and size that archive.org's metadata API publishes — and unpacks it (another ~8 GB: one JSON and
one JPEG per movie, 25,959 movies, and split.json). With the archive or its unpacked mmimdb/ folder
already on disk: --from DIR (the folder holding mmimdb.tar.gz or mmimdb/).
Where it puts them: $MILESBOOK_CACHE/mmimdb (default ~/.cache/milesbook/mmimdb): raw/ holds the archive
and the unpacked files, prepared.npz the archive's split (15,552 / 2,608 / 7,799) with posters at
3×256×160, plots as word ids and 23-genre multi-hot labels (about 3.3 GB), plots.json the plot texts
(for BERT tokenization at load time: --data-option text_model DIR), prepared.json marks it complete.
Re-running is safe: a verified archive is not downloaded again, a partial download resumes, and
nothing is marked complete until the prepared arrays are written.
"""
import sys

from milesbook.datasets import mmimdb
from milesbook.datasets.prepare import script_main

if __name__ == "__main__":
    sys.exit(script_main(mmimdb, __doc__, options=[
        ("--max-tokens", {"type": int, "default": mmimdb.MAX_TOKENS, "help": "plot tokens kept per movie"})]))
