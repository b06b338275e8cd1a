#!/usr/bin/env bash
# Runs ON THE GPU MACHINE, from the repository root, after tools/gpu-check/prepare.sh packed
# .gpu/ here and the device tool carried it (see README.md):
#   run  command: bash tools/gpu-check/run.sh   carry: [".gpu"]   timeout_s: 600
#
# Checks, each in its own process with its own timeout, all within GPUCHECK_BUDGET_S (default
# 500 s) so the table is always printed:
#   1 versions       nvidia-smi, driver, CUDA, python torch, the packed java; CUDA probe + timer info
#   2 djl-cuda       DJL's PyTorch engine on cuda:0 against this machine's libtorch, TorchScript forward
#   3 fidelity       the JVM's CUDA event timer vs torch.cuda.Event on the same workload (memset, matmul)
#   4 overhead       steps/s with the CUDA timer vs no timer (target >= 99% on a ~1 ms step)
#   5 e2e            the server on cuda:0 with the bundled model: completions, /v1/usage, /metrics
#   6 attribution    calibrated vs default weights against marginal costs on cuda:0 (issue 18)
#   7 replicas       one replica per GPU (devices=all), 32 clients, one replica killed mid-run:
#                    the others serve, drift 0 per device (issue 17; SKIP with fewer than 2 GPUs)
#   8 llama          a random-weight 1B Llama exported in fp16: TorchScript step vs eager tok/s,
#                    then the same model through DJL (llama-djl)
# Full logs: $OUT/gpu-check.log; RESULT lines: $OUT/results.txt; the table: $OUT/table.txt (and last
# on stdout).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
root=$PWD
OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"
work=$(mktemp -d /tmp/gpu-check.XXXXXX)
logs=$work/logs
mkdir -p "$logs"
results=$OUT/results.txt
: >"$results"
budget=${GPUCHECK_BUDGET_S:-500}
t_start=$(date +%s)

remaining() { echo $((budget - ($(date +%s) - t_start))); }

# run_check NAME TIMEOUT_S CMD...: runs CMD with the smaller of TIMEOUT_S and the budget left,
# output to $logs/NAME.log; copies its RESULT lines; records TIMEOUT/CRASH/SKIP when it has none.
run_check() {
  local name=$1 limit=$2
  shift 2
  local left
  left=$(($(remaining) - 20))
  if [ "$left" -lt 10 ]; then
    echo "RESULT check=$name status=SKIP reason=budget_spent" | tee -a "$results"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local log=$logs/$name.log t0 rc
  t0=$(date +%s)
  local cmd="$*"
  echo "== $name (timeout ${limit}s): ${cmd:0:300}" | tee "$log"
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local secs=$(($(date +%s) - t0))
  echo "== $name: rc=$rc in ${secs}s" >>"$log"
  if grep -q '^RESULT ' "$log"; then
    grep '^RESULT ' "$log" | sed "s/\$/ secs=$secs/" >>"$results"
  else
    # the first line that looks like the cause, as one word, for the table
    local note
    note=$(grep -m1 -E 'UnsatisfiedLinkError|undefined symbol|SIGSEGV|Exception|Error:|error:' "$log" | tr -s ' \t' '__' | cut -c1-150)
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      echo "RESULT check=$name status=TIMEOUT secs=$secs note=${note:-none}" >>"$results"
    else
      echo "RESULT check=$name status=CRASH rc=$rc secs=$secs note=${note:-none}" >>"$results"
    fi
  fi
  grep '^RESULT ' "$log" | tail -3 | cut -c1-200
  echo "   -> rc=$rc ${secs}s; $(grep -m1 -E 'UnsatisfiedLinkError|undefined symbol|Exception|Error:|error:' "$log" | cut -c1-160)"
  return "$rc"
}

# ---------------------------------------------------------------- 1. versions
versions() {
  echo "--- nvidia-smi"
  nvidia-smi || true
  nvidia-smi --query-gpu=name,uuid,driver_version,memory.total,clocks.max.sm --format=csv || true
  echo "--- /proc/driver/nvidia/version"
  cat /proc/driver/nvidia/version 2>/dev/null || true
  echo "--- kernel: $(uname -r)"
  echo "--- python"
  python3 -c 'import sys, torch; print(sys.executable, sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
  echo "--- env.sh"
  # shellcheck disable=SC1091
  source .gpu/env.sh
  echo "PYTORCH_LIBRARY_PATH=$PYTORCH_LIBRARY_PATH PYTORCH_VERSION=$PYTORCH_VERSION PYTORCH_FLAVOR=$PYTORCH_FLAVOR"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  ls "$PYTORCH_LIBRARY_PATH" | head -40
  java -version 2>&1
  python3 - <<'PY'
import subprocess, torch
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip().splitlines()
name, driver = (smi[0].split(", ") + ["?", "?"])[:2] if smi else ("?", "?")
jv = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
java = jv[0].split('"')[1] if jv and '"' in jv[0] else "?"
print(f"RESULT check=versions status=OK gpu={name.replace(' ', '_')} driver={driver} torch={torch.__version__}"
      f" torch_cuda={torch.version.cuda} java={java}")
PY
}

if [ ! -f .gpu/env.sh ]; then
  echo "no .gpu/env.sh: run tools/gpu-check/prepare.sh here first and carry [\".gpu\"]" >&2
  exit 2
fi
run_check versions 90 bash -c "$(declare -f versions); versions"

# shellcheck disable=SC1091
source .gpu/env.sh >/dev/null 2>&1
JAVA=(java -Xmx8g -XX:ErrorFile="$logs/hs_err_%p.log" -Dai.djl.offline=true
  -Dlogback.configurationFile="$root/tools/gpu-check/logback.xml" -cp "$root/.gpu/lib/*")

run_check info 60 "${JAVA[@]}" io.gpumeter.benchmarks.gpu.GpuCheck info

# ---------------------------------------------------------------- 2. DJL on CUDA
model=$work/affine
run_check torch-model 90 python3 tools/gpu-check/torch_reference.py write-model --out "$model"
djl_ok=0
run_check djl 180 "${JAVA[@]}" io.gpumeter.benchmarks.gpu.GpuCheck djl \
  --model "$model/affine.pt" --input "$model/input.bin" --expected "$model/expected.bin" --rows 8 && djl_ok=1

# ---------------------------------------------------------------- 3. timer fidelity
MEMSET=(--workload memset --bytes $((1 << 30)) --repeats 8 --iters 60 --warmup 10)
run_check fidelity-memset-java 90 "${JAVA[@]}" io.gpumeter.benchmarks.gpu.GpuCheck fidelity "${MEMSET[@]}"
run_check fidelity-memset-torch 120 python3 tools/gpu-check/torch_reference.py time "${MEMSET[@]}"

# ---------------------------------------------------------------- 4. overhead
run_check overhead-1ms 150 "${JAVA[@]}" io.gpumeter.benchmarks.gpu.GpuCheck overhead \
  --label 1ms --bytes $((1 << 30)) --repeats 3 --steps 200 --blocks 8
run_check overhead-small 90 "${JAVA[@]}" io.gpumeter.benchmarks.gpu.GpuCheck overhead \
  --label small --bytes $((1 << 20)) --repeats 1 --steps 1000 --blocks 8

# ---------------------------------------------------------------- 3b. fidelity on DJL matmul
MATMUL=(--workload matmul --n 4096 --repeats 4 --iters 40 --warmup 5)
if [ "$djl_ok" = 1 ]; then
  run_check fidelity-matmul-java 150 "${JAVA[@]}" io.gpumeter.benchmarks.gpu.GpuCheck fidelity "${MATMUL[@]}"
else
  echo "RESULT check=fidelity-matmul-java status=SKIP reason=djl_failed" | tee -a "$results"
fi
run_check fidelity-matmul-torch 120 python3 tools/gpu-check/torch_reference.py time "${MATMUL[@]}"

# ---------------------------------------------------------------- 5. end to end
e2e() {
  set -u
  local has_main
  has_main=$(python3 -c "import glob,zipfile; print(any('io/gpumeter/server/Main.class' in zipfile.ZipFile(j).namelist() for j in glob.glob('$root/.gpu/lib/*.jar')))")
  if [ "$has_main" != True ]; then
    echo "RESULT check=e2e status=SKIP reason=no_io.gpumeter.server.Main_in_.gpu/lib"
    return 0
  fi
  if ! ls "$root"/models/*/model.json >/dev/null 2>&1; then
    echo "RESULT check=e2e status=SKIP reason=no_models/*/model.json"
    return 0
  fi
  local name port=18080
  name=$(python3 -c "import json,glob; print(json.load(open(sorted(glob.glob('$root/models/*/model.json'))[0]))['name'])")
  export GPUMETER_DEVICE=cuda:0 GPUMETER_HOST=127.0.0.1 GPUMETER_PORT=$port
  export GPUMETER_MODELS_DIR=$root/models GPUMETER_DATA_DIR=$work/data
  local server=(java -Xmx8g -XX:ErrorFile="$logs/hs_err_%p.log" -Dai.djl.offline=true -cp "$root/.gpu/lib/*" io.gpumeter.server.Main)
  echo "--- create-key (model $name)"
  local key=${GPUCHECK_API_KEY:-}
  if [ -z "$key" ]; then
    "${server[@]}" create-key --account gpu-check >"$work/create-key.out" 2>&1
    cat "$work/create-key.out"
    key=$(grep -o 'gm_[A-Za-z0-9_-]*' "$work/create-key.out" | tail -1)
  fi
  if [ -z "$key" ]; then
    echo "RESULT check=e2e status=FAIL reason=create-key_printed_no_gm_key"
    return 1
  fi
  echo "--- serve"
  "${server[@]}" serve >"$logs/server.log" 2>&1 &
  local pid=$! ready=0
  for _ in $(seq 1 180); do
    kill -0 "$pid" 2>/dev/null || break
    if python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=2).status == 200 else 1)" 2>/dev/null; then
      ready=1
      break
    fi
    sleep 1
  done
  if [ "$ready" = 1 ]; then
    python3 "$root/tools/gpu-check/e2e_client.py" --port "$port" --key "$key" --model "$name" \
      --requests 8 --server-log "$logs/server.log"
  else
    echo "RESULT check=e2e status=FAIL reason=not_ready_within_180s_or_exited"
  fi
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL "$pid" 2>/dev/null
  echo "--- server log (last 80 lines)"
  tail -80 "$logs/server.log"
}
run_check e2e 240 bash -c "root='$root' work='$work' logs='$logs'; $(declare -f e2e); e2e"

# ---------------------------------------------------------------- 6 attribution fidelity (issue 18)
# Calibrates the bundled model's weight policy on cuda:0, then compares each member's share of
# sampled batches with its marginal cost T(batch) - T(batch without it), interleaved.
if [ -d models ] && ls models/*/model.json >/dev/null 2>&1; then
  run_check attribution 150 "${JAVA[@]}" io.gpumeter.benchmarks.AttributionFidelity \
    --models-dir models --device cuda:0 --batches 12 --repeats 21 --calib-repeats 7
else
  echo "RESULT check=attribution status=SKIP reason=no_models/*/model.json" | tee -a "$results"
fi

# ---------------------------------------------------------------- 7 replicas, one per GPU (issue 17)
# The CPU test's scenario (MultiDeviceTest) on every GPU of the machine: devices=all, 32 clients,
# the last replica's next step made to throw halfway (--kill); every other replica must keep
# serving and reconciliation must show drift 0 on every device. Needs two GPUs or more: with one
# or none it is a SKIP that says so.
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
if [ "${gpus:-0}" -lt 2 ]; then
  echo "RESULT check=replicas status=SKIP reason=${gpus:-0}_gpu(s)_needs_2_or_more" | tee -a "$results"
elif [ -d models ] && ls models/*/model.json >/dev/null 2>&1; then
  replica_model=$(python3 -c "import json,glob; print(json.load(open(sorted(glob.glob('models/*/model.json'))[0]))['name'])")
  run_check replicas 200 "${JAVA[@]}" io.gpumeter.benchmarks.ReplicaThroughput \
    --models models --model "$replica_model" --devices all --clients 32 --seconds 20 --warmup 5 \
    --max-tokens 16 --kill --min-replicas 2
else
  echo "RESULT check=replicas status=SKIP reason=no_models/*/model.json" | tee -a "$results"
fi

# ---------------------------------------------------------------- 8 a 1B Llama shape (issue 13)
# tools/hf_export exports a random-weight Llama 3.2 1B shape here (a few minutes of CPU for the
# weights), then decode tokens/s at batch 1 and 32 through the exported TorchScript step against
# PyTorch eager on cuda:0; then the same model directory through DJL (ModelStore on cuda:0,
# ModelDecode: the server's path to the model without HTTP) at batch 1 and 32. In float16, not
# bf16: DJL 0.36's JNI aborts the process on a bfloat16 tensor, so DjlLanguageModel refuses bf16
# models (model-store/README.md); fp16 costs the same as bf16 on the tensor cores.
run_check llama 240 python3 "$root/tools/gpu-check/llama_shape.py" --out "$work/llama" \
  --preset llama-1b --dtype float16 --device cuda:0 --batches 1,32 --steps 32 --keep
if [ -f "$work/llama/llama-1b/model.json" ]; then
  run_check llama-djl 150 "${JAVA[@]}" io.gpumeter.benchmarks.ModelDecode \
    --models "$work/llama" --device cuda:0 --batches 1,32 --max-tokens 32 --slice-s 5
else
  echo "RESULT check=llama-djl status=SKIP reason=no_exported_model_(check_llama_failed)" | tee -a "$results"
fi
rm -rf "$work/llama"

# ---------------------------------------------------------------- logs and the table
{
  for f in "$logs"/*.log; do
    echo "################ $(basename "$f")"
    if [ "$(stat -c %s "$f")" -gt $((4 << 20)) ]; then head -c $((2 << 20)) "$f"; echo "[... cut ...]"; tail -c $((1 << 20)) "$f"; else cat "$f"; fi
  done
} >"$OUT/gpu-check.log"
python3 "$root/tools/gpu-check/table.py" "$results" | tee "$OUT/table.txt"
echo "(full logs: \$OUT/gpu-check.log; results: \$OUT/results.txt; total $(($(date +%s) - t_start))s)"
rm -rf "$work"
