"""Command line of the BPE tokenizer, used by model-store's HfTokenizerTest:

    python3 -m bpe.cli train CORPUS_FILE VOCAB_SIZE OUT_TOKENIZER_JSON
    python3 -m bpe.cli encode TOKENIZER_JSON < texts.json > ids.json

``encode`` reads a JSON list of strings and writes a JSON list of id lists, computed by this
package's Python encoder (not the Rust library)."""

import json
import sys

from bpe import bpe


def main(argv):
    if len(argv) == 4 and argv[0] == "train":
        with open(argv[1], encoding="utf-8") as f:
            texts = f.read().split("\n\n")
        vocab, merges = bpe.train(texts, int(argv[2]))
        with open(argv[3], "w", encoding="utf-8") as f:
            json.dump(bpe.tokenizer_json(vocab, merges), f, ensure_ascii=False)
    elif len(argv) == 2 and argv[0] == "encode":
        enc = bpe.Encoder(argv[1])
        json.dump([enc.encode(t) for t in json.load(sys.stdin)], sys.stdout)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
