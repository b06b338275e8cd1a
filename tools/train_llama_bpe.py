#!/usr/bin/python3
"""Trains gpumeter's second bundled model, ``models/tiny-llama-bpe``: a byte-level BPE tokenizer
(``tools/bpe``, vocabulary 2048) and a tiny Llama-architecture model, on the demo model's corpus
(the Python 3.11 documentation of Debian's ``python3.11-doc``), written as a Hugging Face
checkpoint and exported to the model contract by ``hf_export`` (``tools/export_hf.py``).

    apt-get install -y python3-torch python3.11-doc libopenblas0-pthread
    /usr/bin/python3 tools/train_llama_bpe.py        # about 12 minutes on 2 shared cores

The code is in ``tools/llama_bpe/`` and ``tools/bpe/``; models/tiny-llama-bpe/README.md is the
model card.
"""

import os
import sys

from demo_model import OPENBLAS

# same as train_demo_model.py: re-run with Debian's OpenBLAS on the library path when installed
if (__name__ == "__main__" and os.path.exists(os.path.join(OPENBLAS, "libblas.so.3"))
        and OPENBLAS not in os.environ.get("LD_LIBRARY_PATH", "")):
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = OPENBLAS + (":" + env["LD_LIBRARY_PATH"]
                                         if env.get("LD_LIBRARY_PATH") else "")
    env["OPENBLAS_NUM_THREADS"] = "2"
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

if __name__ == "__main__":
    from llama_bpe.train import main

    main()
