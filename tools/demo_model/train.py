"""Trains gpumeter's demo model: a small byte-level causal transformer, saved as TorchScript.

The command line of ``tools/train_demo_model.py`` (see its docstring for the corpus, the model
and the checks): parses the options, trains with a fixed seed until ``--steps`` steps or
``--max-minutes`` minutes, whichever comes first, then scripts the model, checks the model
contract on the scripted module and on the saved file, and writes ``model.pt`` and
``model.json``.
"""

import argparse
import json
import math
import os
import random
import time

import torch
import torch.nn.functional as F

from demo_model import OPENBLAS
from demo_model.checks import check_contract
from demo_model.corpus import DEFAULT_CORPUS, load_corpus
from demo_model.model import EOS, VOCAB, ByteLM, sample_text

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO_ROOT, "models", "demo-byte-lm")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS,
                    help="folder of reST/text files (default: %(default)s, Debian package "
                         "python3.11-doc, PSF License)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--tokens-per-step", type=int, default=1024,
                    help="bytes per optimizer step (windows x window length)")
    ap.add_argument("--windows", default="0:128,0.55:256,0.8:512,0.95:1024",
                    help="curriculum of training window lengths, as progress:length pairs; "
                         "short windows first (cheap steps learn local structure), then longer "
                         "ones so that attention over the whole context is trained")
    ap.add_argument("--steps", type=int, default=4000, help="training steps at most")
    ap.add_argument("--max-minutes", type=float, default=10.0,
                    help="training wall time at most; the learning-rate and window schedules "
                         "follow whichever of steps and minutes runs out first")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--offset-every", type=int, default=2,
                    help="every Nth short window gets a random position offset (0: never)")
    ap.add_argument("--threads", type=int, default=2,
                    help="CPU threads to use (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--dump-corpus", help="write the stripped corpus to this file and exit")
    ap.add_argument("--from-model", metavar="MODEL_PT",
                    help="skip training: take the weights of an earlier model.pt (same sizes) "
                         "and export them with this script's model code")
    args = ap.parse_args()

    if OPENBLAS in os.environ.get("LD_LIBRARY_PATH", ""):
        # OpenBLAS runs the matrix products on its own --threads threads; a second pool of
        # OpenMP threads for torch's element-wise ops would compete with it for the same cores
        # (measured here: 0.45 s per step with 2 + 2 threads, 0.165 s with 1 + 2)
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    t0 = time.time()
    docs = load_corpus(args.corpus)
    if args.dump_corpus:
        with open(args.dump_corpus, "wb") as fh:
            fh.write(b"\n\n=====\n\n".join(docs))
        print("wrote %d documents to %s" % (len(docs), args.dump_corpus))
        return
    rng = random.Random(args.seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    n_val = max(1, len(docs) // 20)
    val_docs = [docs[i] for i in order[:n_val]]
    train_docs = [docs[i] for i in order[n_val:]]

    def stream(ds):
        ids = []
        for d in ds:
            ids.extend(d)
            ids.append(EOS)
        return torch.tensor(ids, dtype=torch.long)

    train = stream(train_docs)
    val = stream(val_docs)
    print("corpus: %d documents (%d train / %d val), %d train bytes, %d val bytes, %.1fs" % (
        len(docs), len(train_docs), len(val_docs), train.numel(), val.numel(), time.time() - t0),
        flush=True)

    model = ByteLM(args.d_model, args.layers, args.head_dim, args.context)
    n_params = sum(p.numel() for p in model.parameters())
    print("model: d_model=%d layers=%d heads=%d head_dim=%d context=%d params=%d" % (
        args.d_model, args.layers, model.n_heads, args.head_dim, args.context, n_params),
        flush=True)
    # script now: TorchScript compiles from model.py's source, so a scripting error shows before
    # minutes of training, and an edit of the file during training cannot break the save
    scripted = torch.jit.script(model)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(args.seed)
    warmup = max(1, args.steps // 30)
    budget_s = args.max_minutes * 60

    def lr_at(step, progress):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    schedule = sorted((float(a), int(b)) for a, b in
                      (pair.split(":") for pair in args.windows.split(",")))
    assert all(0 < w <= args.context for _, w in schedule), "window lengths must fit the context"

    def window_at(progress):
        w = schedule[0][1]
        for start, length in schedule:
            if progress >= start:
                w = length
        return w

    def batch(data, block, bsz):
        starts = torch.randint(0, data.numel() - block - 1, (bsz,), generator=gen)
        x = torch.stack([data[s:s + block] for s in starts.tolist()])
        y = torch.stack([data[s + 1:s + block + 1] for s in starts.tolist()])
        return x, y

    def evaluate(block, n_batches=8):
        model.eval()
        g = torch.Generator().manual_seed(99)
        losses = []
        with torch.no_grad():
            for _ in range(n_batches):
                starts = torch.randint(0, val.numel() - block - 1, (8,), generator=g)
                x = torch.stack([val[s:s + block] for s in starts.tolist()])
                y = torch.stack([val[s + 1:s + block + 1] for s in starts.tolist()])
                logits = model(x)
                losses.append(F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)).item())
        model.train()
        return sum(losses) / len(losses)

    t_train = time.time()
    model.train()
    loss_ema = float("nan")
    step = 0
    if args.from_model:
        # re-export the weights of an earlier build with this file's code (no training)
        model.load_state_dict(torch.jit.load(args.from_model).state_dict())
        print("weights from %s; not training" % args.from_model, flush=True)
    while not args.from_model:
        progress = max(step / args.steps, (time.time() - t_train) / budget_s)
        if progress >= 1.0:
            break
        lr = lr_at(step, progress)
        for group in opt.param_groups:
            group["lr"] = lr
        window = window_at(progress)
        x, y = batch(train, window, max(1, args.tokens_per_step // window))
        # every other step, place a window shorter than the context at a random position
        # offset, so that every learned position embedding gets trained
        offset = 0
        if (window < args.context and args.offset_every > 0
                and step % args.offset_every == args.offset_every - 1):
            offset = int(torch.randint(0, args.context - window + 1, (1,), generator=gen).item())
        logits = model.forward_at(x, offset)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_ema = loss.item() if step == 0 else 0.95 * loss_ema + 0.05 * loss.item()
        if step % 50 == 0:
            print("step %4d  progress %.2f  lr %.2e  window %4d  loss %.4f  (ema %.4f)  %.0fs" % (
                step, progress, lr, x.size(1), loss.item(), loss_ema, time.time() - t_train),
                flush=True)
        step += 1
    train_seconds = time.time() - t_train
    steps_done = step
    short = schedule[0][1]
    val_loss = evaluate(short)
    val_loss_long = evaluate(args.context, n_batches=2)
    print("final: train loss (ema) %.4f  val loss %.4f nats/byte (%.3f bits/byte) on %d-byte "
          "windows, %.4f on %d-byte windows; %d steps in %.0fs" % (
              loss_ema, val_loss, val_loss / math.log(2), short, val_loss_long, args.context,
              steps_done, train_seconds), flush=True)

    # ---- script, check, save ----
    model.eval()
    scripted.eval()
    scripted.load_state_dict(model.state_dict())  # (shares the tensors already; made explicit)
    for p in list(model.parameters()) + list(scripted.parameters()):
        p.requires_grad_(False)
    sample_doc = val_docs[0]
    check_contract(scripted, sample_doc)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "model.pt")
    scripted.save(path)
    loaded = torch.jit.load(path)
    greedy_ids = check_contract(loaded, sample_doc)
    size = os.path.getsize(path)
    assert size < 16 * 1024 * 1024, "model file too large: %d bytes" % size
    print("saved %s (%d bytes); step()/forward() greedy equality and packed-step checks passed"
          % (path, size), flush=True)

    prompt = "The Python interpreter"
    greedy = sample_text(loaded, prompt, 200, 0.0, gen)
    warm = sample_text(loaded, prompt, 300, 0.8, torch.Generator().manual_seed(7))
    print("greedy:      %r" % (prompt + greedy))
    print("temperature: %r" % (prompt + warm))

    config = {
        "name": "demo-byte-lm",
        "file": "model.pt",
        "tokenizer": "byte",
        "vocabSize": VOCAB,
        "contextLength": args.context,
        "eosId": EOS,
        "dtype": "float32",
        "layers": args.layers,
        "kvHeads": model.n_heads,
        "headDim": args.head_dim,
    }
    with open(os.path.join(args.out, "model.json"), "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    print("summary: params=%d steps=%d train_seconds=%.0f train_loss_ema=%.4f val_loss=%.4f "
          "val_loss_full_context=%.4f bytes=%d train_bytes=%d documents=%d torch=%s" % (
              n_params, steps_done, train_seconds, loss_ema, val_loss, val_loss_long, size,
              train.numel(), len(docs), torch.__version__))
    print("greedy check prompt %r -> ids %s" % (
        bytes(list(sample_doc[:60])).decode("utf-8", "replace"), greedy_ids))
    print("wrote %s/model.json" % args.out)
