#!/usr/bin/python3
"""Trains gpumeter's demo model: a small byte-level causal transformer, saved as TorchScript.

Run with Debian's Python and python3-torch (1.13); no pip and no network needed:

    apt-get install -y python3-torch python3.11-doc
    apt-get install -y libopenblas0-pthread               # optional, about 5x faster
    /usr/bin/python3 tools/train_demo_model.py [CORPUS_DIR]   # writes models/demo-byte-lm/

Corpus (default CORPUS_DIR): the reStructuredText sources of the Python 3.11 documentation as
shipped by the Debian package ``python3.11-doc`` (``/usr/share/doc/python3.11/html/_sources``).
The documentation is distributed under the PSF License Agreement (see
``/usr/share/doc/python3.11-doc/copyright`` and ``license.rst.txt`` in the corpus); code examples
in it are additionally under the Zero-Clause BSD licence. Markup is stripped roughly (directives,
roles, literal and doctest blocks, section underlines), each ``.rst.txt`` file is one document,
and documents are separated by the end-of-sequence id 256. The C API pages are left out (little
prose). Any other folder of ``*.txt`` / ``*.rst`` files can be given instead.

Model: byte-level causal transformer, vocabulary 257 (256 bytes + end-of-sequence 256), learned
position embeddings (initialised with sinusoids) for a context of 1024, pre-LayerNorm blocks,
GELU MLP, and an ALiBi distance penalty in attention (fixed per-head slopes), which lets the
model leave the bigram plateau within minutes on a CPU and keeps it sane beyond its training
windows. Training windows grow from 128 to 1024 bytes over the run (``--windows``).

The model contract the saved file implements (methods ``forward`` and ``step``, shapes, KV cache
layout) is written down in model-store/README.md. Before saving, the script checks on the scripted
module and on the saved file that ``step`` (packed, KV-cached) generates exactly the same greedy
tokens as ``forward`` recomputation, and that packing sequences of different lengths into one
step gives the same logits as running each alone.

Training uses a fixed seed and stops after ``--steps`` steps or ``--max-minutes`` minutes,
whichever comes first; the learning-rate and window schedules follow the same progress measure,
so a busy machine gets a shorter but fully annealed run (and a slightly different model).

The code is in ``tools/demo_model/``: ``corpus.py`` (reST to prose), ``model.py`` (the
transformer and sampling), ``checks.py`` (the contract checks) and ``train.py`` (options,
training loop, export). This file only sets up the process and runs ``train.main``.
"""

import os
import sys

from demo_model import OPENBLAS

# Debian's python3-torch links the reference BLAS (BLAS_INFO=generic), which makes training about
# five times slower. When OpenBLAS is installed (apt-get install -y libopenblas0-pthread), re-run
# this process with it on the library path, leaving the system-wide BLAS alternative untouched.
if (__name__ == "__main__" and os.path.exists(os.path.join(OPENBLAS, "libblas.so.3"))
        and OPENBLAS not in os.environ.get("LD_LIBRARY_PATH", "")):
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = OPENBLAS + (":" + env["LD_LIBRARY_PATH"]
                                         if env.get("LD_LIBRARY_PATH") else "")
    _threads = "2"  # --threads, read before argparse: OpenBLAS reads its thread count at load
    for _i, _a in enumerate(sys.argv):
        if _a == "--threads" and _i + 1 < len(sys.argv):
            _threads = sys.argv[_i + 1]
        elif _a.startswith("--threads="):
            _threads = _a.split("=", 1)[1]
    env["OPENBLAS_NUM_THREADS"] = _threads
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

if __name__ == "__main__":
    from demo_model.train import main

    main()
