"""The demo model's training code, in four modules; ``tools/train_demo_model.py`` runs it.

- ``corpus``: the Python documentation's reStructuredText sources turned into plain prose;
- ``model``: the byte-level transformer (``ByteLM``) that is scripted to TorchScript, and
  sampling from it;
- ``checks``: the model contract's checks (``step`` against ``forward``, packed steps);
- ``train``: the command line, the training loop and the export.

Only ``model``, ``checks`` and ``train`` import torch; this package itself does not, so the entry
point can read ``OPENBLAS`` and re-execute itself before torch is loaded.
"""

# Debian's OpenBLAS; see tools/train_demo_model.py for why the process re-executes with it.
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
