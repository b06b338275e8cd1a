#!/usr/bin/env python3
"""Turns the RESULT lines of tools/gpu-check/run.sh into its closing table (see README.md)."""
import sys


def parse(path):
    out = []
    for line in open(path):
        if line.startswith("RESULT "):
            out.append(dict(p.split("=", 1) for p in line.split()[1:] if "=" in p))
    return out


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def main():
    results = parse(sys.argv[1])

    def find(*alternatives):
        """The last RESULT matching any of the given {key: value} filters, else {}."""
        for want in alternatives:
            hits = [kv for kv in results if all(kv.get(k) == v for k, v in want.items())]
            if hits:
                return hits[-1]
        return {}

    def st(kv):
        return kv.get("status", "MISSING")

    def why(kv):
        parts = [kv.get("reason", ""), f"rc={kv['rc']}" if "rc" in kv else "", kv.get("note", "")]
        return " ".join(p for p in parts if p) or "see gpu-check.log"

    rows = []
    v = find({"check": "versions"})
    rows.append(("1 versions", st(v),
                 f"{v.get('gpu', '?')} driver {v.get('driver', '?')}; torch {v.get('torch', '?')}"
                 f" (CUDA {v.get('torch_cuda', '?')}); java {v.get('java', '?')}" if st(v) == "OK" else why(v)))
    i, a = find({"check": "info"}), find({"check": "auto"})
    rows.append(("1 cuda timer", st(i),
                 f"{i.get('gpu')} {i.get('uuid')} driver API {i.get('driver_api')}, runtime {i.get('cuda_runtime')};"
                 f" auto() gives {a.get('timer', '?')}" if st(i) == "OK" else why(i)))
    d = find({"check": "djl"})
    rows.append(("2 djl on cuda", st(d),
                 f"engine {d.get('engine')} loaded in {d.get('load_ms')} ms, TorchScript forward {d.get('forward')}"
                 f" (max diff {d.get('max_diff')}), libtorch ...{d.get('libtorch', '?')[-50:]}"
                 if st(d) == "OK" else why(d)))
    for w in ("memset", "matmul"):
        j = find({"check": "fidelity", "workload": w}, {"check": f"fidelity-{w}-java"})
        t = find({"check": f"torch_{w}"}, {"check": f"fidelity-{w}-torch"})
        jm, tm = num(j.get("event_median_ms")), num(t.get("event_median_ms"))
        if jm and tm:
            ratio = jm / tm
            rows.append((f"3 fidelity {w}", "PASS" if abs(ratio - 1) <= 0.05 else "FAIL",
                         f"CUDA timer {jm:.4f} ms vs torch.cuda.Event {tm:.4f} ms: ratio {ratio:.4f}"
                         f" (target 0.95-1.05); JVM host clock {num(j.get('host_median_ms')) or 0:.4f} ms"))
        else:
            rows.append((f"3 fidelity {w}", "n/a",
                         f"java {st(j)} {j.get('reason', '')}; torch {st(t)} {t.get('reason', '')}".strip()))
    for label in ("1ms", "small"):
        o = find({"check": "overhead", "label": label}, {"check": f"overhead-{label}"})
        pct = num(o.get("ratio_pct"))
        if pct is None:
            rows.append((f"4 overhead {label}", st(o), why(o)))
            continue
        verdict = ("PASS" if pct >= 99.0 else "FAIL") if label == "1ms" else "INFO"
        rows.append((f"4 overhead {label}", verdict,
                     f"{pct:.2f}% of untimed steps/s ({num(o.get('per_span_us')):+.2f} us per span) on a"
                     f" {num(o.get('step_ms')):.4f} ms step; host fallbacks {o.get('fallbacks')}"))
    e = find({"check": "e2e"})
    rows.append(("5 end to end", st(e),
                 f"{e.get('completions')} completions; /v1/usage {e.get('usage_requests')} requests,"
                 f" {e.get('usage_device_ms')} ms device; timer {e.get('timer')} {e.get('gpu', '')}"
                 if st(e) == "OK" else why(e)))
    f = find({"check": "attribution"})
    rows.append(("6 attribution", st(f),
                 f"share vs marginal cost, mean/p90 error: default {f.get('default_mean_pct')}%/"
                 f"{f.get('default_p90_pct')}%, calibrated {f.get('calibrated_mean_pct')}%/"
                 f"{f.get('calibrated_p90_pct')}% over {f.get('resolved')} resolved of"
                 f" {f.get('members')} members; misattributed variable time: default"
                 f" {f.get('default_mis_pct')}%, calibrated {f.get('calibrated_mis_pct')}%;"
                 f" fit R^2 {f.get('r2')}" if st(f) == "OK" else why(f)))
    x = find({"check": "llama-export"}, {"check": "llama"})
    rows.append(("8 llama export", st(x),
                 f"{x.get('preset')} {x.get('dtype')}: {x.get('params')} parameters, context"
                 f" {x.get('context')}, exported in {x.get('export_s')} s" if st(x) == "OK" else why(x)))
    for b in ("1", "32"):
        r = find({"check": "llama-decode", "batch": b})
        rows.append((f"8 llama batch {b}", "INFO" if st(r) == "OK" else st(r),
                     f"TorchScript step {r.get('torchscript_tok_s')} tok/s vs eager"
                     f" {r.get('eager_tok_s')} tok/s: ratio {r.get('ratio')}" if st(r) == "OK"
                     else why(r)))
    for b in ("1", "32"):
        # ModelDecode: the exported model through ModelStore/DJL, against eager's figure above
        # a failed or skipped check has one line without a batch
        j = find({"check": "llama-djl", "batch": b}) or next(
            (kv for kv in reversed(results) if kv.get("check") == "llama-djl"
             and "batch" not in kv), {})
        e = find({"check": "llama-decode", "batch": b})
        ratio = ""
        if st(j) == "OK" and st(e) == "OK" and float(e.get("eager_tok_s", 0) or 0) > 0:
            ratio = f": ratio {float(j['djl_tok_s']) / float(e['eager_tok_s']):.3f}"
        rows.append((f"8 llama djl batch {b}", "INFO" if st(j) == "OK" else st(j),
                     f"DJL {j.get('dtype')} on {j.get('device')} {j.get('djl_tok_s')} tok/s vs"
                     f" eager {e.get('eager_tok_s')} tok/s{ratio}" if st(j) == "OK" else why(j)))
    w0 = max(len(r[0]) for r in rows)
    print(f"{'check':<{w0}}  {'status':<7} details")
    for name, status, details in rows:
        print(f"{name:<{w0}}  {status:<7} {details}")


if __name__ == "__main__":
    main()
