"""Training code of the bundled ``tiny-llama-bpe`` model; ``tools/train_llama_bpe.py`` runs it.

- ``model``: a Llama-architecture decoder whose parameter names are Hugging Face's, so its
  ``state_dict`` is a Hugging Face checkpoint that ``tools/export_hf.py`` reads;
- ``train``: the command line: BPE tokenizer (``tools/bpe``), training, writing the checkpoint,
  exporting it through ``hf_export`` and checking the export against the trained module.
"""
