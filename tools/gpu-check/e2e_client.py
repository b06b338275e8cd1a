#!/usr/bin/env python3
"""The client half of tools/gpu-check's end-to-end check: a few completions against a running
server, then the key's /v1/usage and the server's /metrics. Standard library only (the GPU
machine has no network and maybe no curl). Prints a RESULT line like the other checks."""
import argparse
import json
import re
import threading
import urllib.error
import urllib.request


def call(url, key=None, body=None, timeout=120):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except Exception as e:  # noqa: BLE001 - report anything as a failed call
        return 0, repr(e)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--server-log", default="")
    a = p.parse_args()
    base = f"http://127.0.0.1:{a.port}"
    prompts = ["The Python language", "A list comprehension", "def main():", "Exceptions are raised",
               "import os", "The standard library", "class Foo:", "for i in range"]
    out = [None] * a.requests

    def one(i):
        out[i] = call(base + "/v1/completions", a.key,
                      {"model": a.model, "prompt": prompts[i % len(prompts)], "max_tokens": a.max_tokens})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(a.requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = 0
    for i, (code, text) in enumerate(out):
        print(f"completion {i}: HTTP {code} {text[:300]}")
        ok += code == 200
    code, usage = call(base + "/v1/usage", a.key)
    print(f"/v1/usage: HTTP {code} {usage[:2000]}")
    requests = device_ms = "?"
    try:
        totals = json.loads(usage).get("totals", {})
        requests, device_ms = totals.get("requests", "?"), totals.get("device_time_ms", "?")
    except ValueError:
        pass
    code, metrics = call(base + "/metrics")
    print("/metrics (gpumeter_device_*, gpumeter_steps_total):")
    for line in metrics.splitlines():
        if line.startswith(("gpumeter_device_", "gpumeter_steps_total", "gpumeter_multi_sequence_steps_total")):
            print("  " + line)
    timer, gpu = "?", ""
    if a.server_log:
        log = open(a.server_log, errors="replace").read()
        m = re.search(r"CUDA event timer on (cuda:\d+) \(([^)]*)\)", log)
        if m:
            timer, gpu = "cuda-event", m.group(2).split(" GPU-")[0].replace(" ", "_")
        elif "no CUDA event timer" in log or "timing steps with the host clock" in log:
            timer = "host"
    status = "OK" if ok == a.requests else "FAIL"
    print(f"RESULT check=e2e status={status} completions={ok}/{a.requests} usage_requests={requests}"
          f" usage_device_ms={device_ms} timer={timer} gpu={gpu or '?'}")


if __name__ == "__main__":
    main()
