"""A small byte-level BPE tokenizer trainer and encoder writing Hugging Face's tokenizer.json."""
