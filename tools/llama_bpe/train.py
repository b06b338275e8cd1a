"""The command line of ``tools/train_llama_bpe.py``: trains a byte-level BPE tokenizer and a tiny
Llama-architecture model on the demo model's corpus, writes them as a Hugging Face checkpoint,
exports it with ``hf_export`` (the code of ``tools/export_hf.py``) and checks the export."""

import argparse
import json
import math
import os
import random
import shutil
import tempfile
import time

import torch
import torch.nn.functional as F

from bpe import bpe
from demo_model.corpus import DEFAULT_CORPUS, load_corpus
from hf_export import convert, safetensors
from llama_bpe.model import LlamaLM

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO_ROOT, "models", "tiny-llama-bpe")
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--name", default="tiny-llama-bpe")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=384)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--tokens-per-step", type=int, default=2048)
    ap.add_argument("--windows", default="0:128,0.85:512",
                    help="training window lengths in tokens, as progress:length pairs")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--max-minutes", type=float, default=10.0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    if "openblas" in os.environ.get("LD_LIBRARY_PATH", ""):
        torch.set_num_threads(1)  # OpenBLAS has its own threads (see train_demo_model.py)
    else:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    t0 = time.time()
    docs = [d.decode("utf-8") for d in load_corpus(args.corpus)]
    order = list(range(len(docs)))
    rng.shuffle(order)
    n_val = max(1, len(docs) // 20)
    val_docs = [docs[i] for i in order[:n_val]]
    train_docs = [docs[i] for i in order[n_val:]]
    vocab, merges = bpe.train(train_docs, args.vocab)
    t_bpe = time.time() - t0
    work = tempfile.mkdtemp(prefix="llama-bpe-")
    ckpt = os.path.join(work, "checkpoint")
    os.makedirs(ckpt)
    with open(os.path.join(ckpt, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(bpe.tokenizer_json(vocab, merges), f, ensure_ascii=False)
    enc = bpe.Encoder(os.path.join(ckpt, "tokenizer.json"))

    def stream(ds):
        ids = []
        for d in ds:
            ids.extend(enc.encode(d))
            ids.append(0)
        return torch.tensor(ids, dtype=torch.long)

    train, val = stream(train_docs), stream(val_docs)
    train_bytes = sum(len(d.encode("utf-8")) + 1 for d in train_docs)
    print("tokenizer: %d ids (%d merges) in %.0fs; corpus %d documents, %d train tokens "
          "(%.2f bytes/token), %d val tokens, %.0fs" % (
              len(vocab), len(merges), t_bpe, len(docs), train.numel(),
              train_bytes / train.numel(), val.numel(), time.time() - t0), flush=True)

    model = LlamaLM(len(vocab), args.d_model, args.layers, args.heads, args.kv_heads, args.ffn)
    n_params = sum(p.numel() for p in model.parameters())
    print("model: %s params=%d" % (json.dumps(model.config), n_params), flush=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(args.seed)
    warmup = max(1, args.steps // 30)
    budget_s = args.max_minutes * 60
    schedule = sorted((float(a), int(b)) for a, b in
                      (p.split(":") for p in args.windows.split(",")))
    vsize = len(vocab)

    def batch(data, block, bsz, g):
        starts = torch.randint(0, data.numel() - block - 1, (bsz,), generator=g).tolist()
        return (torch.stack([data[s:s + block] for s in starts]),
                torch.stack([data[s + 1:s + block + 1] for s in starts]))

    def evaluate(block, n_batches=8):
        model.eval()
        g = torch.Generator().manual_seed(99)
        with torch.no_grad():
            losses = [F.cross_entropy(model(x).reshape(-1, vsize), y.reshape(-1)).item()
                      for x, y in (batch(val, block, 8, g) for _ in range(n_batches))]
        model.train()
        return sum(losses) / len(losses)

    t_train = time.time()
    step, loss_ema = 0, float("nan")
    while True:
        progress = max(step / args.steps, (time.time() - t_train) / budget_s)
        if progress >= 1.0:
            break
        lr = (args.lr * (step + 1) / warmup if step < warmup else
              args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))))
        for group in opt.param_groups:
            group["lr"] = lr
        window = [w for start, w in schedule if progress >= start][-1]
        x, y = batch(train, window, max(1, args.tokens_per_step // window), gen)
        loss = F.cross_entropy(model(x).reshape(-1, vsize), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_ema = loss.item() if step == 0 else 0.95 * loss_ema + 0.05 * loss.item()
        if step % 50 == 0:
            print("step %4d  progress %.2f  lr %.2e  window %3d  loss %.4f (ema %.4f)  %.0fs" % (
                step, progress, lr, window, loss.item(), loss_ema, time.time() - t_train),
                flush=True)
        step += 1
    train_seconds = time.time() - t_train
    val_short = evaluate(schedule[0][1])
    val_long = evaluate(args.context, n_batches=2)
    bpt = train_bytes / train.numel()
    print("final: train loss (ema) %.4f nats/token; val loss %.4f nats/token on %d-token windows "
          "(%.3f nats/byte), %.4f on %d-token windows; %d steps in %.0fs" % (
              loss_ema, val_short, schedule[0][1], val_short / bpt, val_long, args.context,
              step, train_seconds), flush=True)

    # ---- the Hugging Face checkpoint, exported through hf_export ----
    model.eval()
    config = dict(model.config, max_position_embeddings=args.context, eos_token_id=0,
                  bos_token_id=0)
    with open(os.path.join(ckpt, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(ckpt, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [0], "bos_token_id": 0}, f, indent=1)
    with open(os.path.join(ckpt, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": bpe.EOS,
                   "bos_token": bpe.EOS, "model_max_length": args.context,
                   "chat_template": CHAT_TEMPLATE}, f, indent=1)
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    safetensors.save(os.path.join(ckpt, "model.safetensors"), weights)
    info = convert.export(ckpt, args.out, args.name, context_length=args.context)

    loaded = torch.jit.load(os.path.join(args.out, "model.pt"))
    sample = torch.tensor([enc.encode(val_docs[0])[:96]])
    with torch.no_grad():
        want = model(sample)
        got = loaded.forward(sample)
    err = (want - got).abs().max().item()
    assert err < 1e-4, "exported forward differs from the trained module by %g" % err
    greedy_f, greedy_s = greedy(loaded, sample[0, :32].tolist(), 40, info)
    assert greedy_f == greedy_s, "step and forward greedy tokens differ: %s / %s" % (
        greedy_f, greedy_s)
    size = os.path.getsize(os.path.join(args.out, "model.pt"))
    print("exported %s (model.pt %d bytes): forward within %.1e of the trained module, greedy "
          "step == greedy forward for 40 tokens" % (args.out, size, err), flush=True)

    prompt = "The Python interpreter"
    ids = enc.encode(prompt)
    out = greedy(loaded, ids, 60, info)[1]
    print("greedy:      %r" % (prompt + enc.decode_bytes(out).decode("utf-8", "replace")))
    out = sample_ids(loaded, ids, 80, 0.8, torch.Generator().manual_seed(7))
    print("temperature: %r" % (prompt + enc.decode_bytes(out).decode("utf-8", "replace")))
    print("summary: params=%d vocab=%d steps=%d train_seconds=%.0f train_loss_ema=%.4f "
          "val_loss=%.4f val_loss_full_context=%.4f bytes_per_token=%.3f model_pt_bytes=%d "
          "torch=%s" % (info["parameters"], vsize, step, train_seconds, loss_ema, val_short,
                        val_long, bpt, size, torch.__version__))
    shutil.rmtree(work)


def new_cache(info, slots):
    shape = [info["layers"], slots, info["contextLength"], info["kvHeads"], info["headDim"]]
    return torch.zeros(shape), torch.zeros(shape)


def greedy(m, prompt, n, info):
    ids, by_forward = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(torch.argmax(m.forward(torch.tensor([ids]))[0, -1]).item())
            by_forward.append(nxt)
            ids.append(nxt)
        kc, vc = new_cache(info, 2)
        t = len(prompt)
        logits = m.step(torch.tensor(prompt), torch.ones(t, dtype=torch.long), torch.arange(t),
                        torch.tensor([t - 1]), kc, vc)
        by_step = []
        for _ in range(n):
            nxt = int(torch.argmax(logits[0]).item())
            by_step.append(nxt)
            logits = m.step(torch.tensor([nxt]), torch.tensor([1]), torch.tensor([t]),
                            torch.tensor([0]), kc, vc)
            t += 1
    return by_forward, by_step


def sample_ids(m, prompt, n, temperature, g):
    ids, out = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            logits = m.forward(torch.tensor([ids]))[0, -1] / temperature
            nxt = int(torch.multinomial(F.softmax(logits, -1), 1, generator=g).item())
            if nxt == 0:
                break
            out.append(nxt)
            ids.append(nxt)
    return out
