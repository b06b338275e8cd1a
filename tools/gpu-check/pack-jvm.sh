#!/usr/bin/env bash
# Packs what a JVM program needs on the lent GPU machine (which has no Java and no network) into
# .gpu/ at the repository root: a trimmed Java runtime (jre.tgz, built with jlink), the runtime
# jars of the named Maven modules (lib/), and env.sh, which the command on the device sources.
#
# usage, from anywhere in the repository, after the modules are built and installed (prepare.sh
# does both):
#   tools/gpu-check/pack-jvm.sh server [benchmarks ...]
# then call the device tool with carry [".gpu"] and a command such as
#   source .gpu/env.sh && java -cp ".gpu/lib/*" some.Main
#
# env: JLINK_MODULES to change the runtime's module list. .gpu/ is in .gitignore, so it does not
# travel as part of the working tree, only through carry.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 MODULE [MODULE...]" >&2; exit 2; }
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
out=.gpu
rm -rf "$out"; mkdir -p "$out/lib"
mods=${JLINK_MODULES:-java.base,java.logging,java.sql,java.management,jdk.unsupported,java.naming,java.xml,jdk.crypto.ec,jdk.zipfs,java.net.http}
jlink --add-modules "$mods" --strip-debug --no-man-pages --no-header-files --compress=2 --output "$out/jre"
tar czf "$out/jre.tgz" -C "$out" jre && rm -rf "$out/jre"
for m in "$@"; do
  ./mvnw -q -pl "$m" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$PWD/$out/lib"
  cp "$m"/target/*.jar "$out/lib/" 2>/dev/null || true
done
# The CPU libtorch jar is 111 MB and of no use there: the device has its own libtorch.
rm -f "$out"/lib/pytorch-native-cpu-*.jar "$out"/lib/*-sources.jar "$out"/lib/*-tests.jar
cat > "$out/env.sh" <<'ENV'
# Sourced on the device: unpacks the runtime and points DJL at the machine's own libtorch.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ -x "$here/jre/bin/java" ] || tar xzf "$here/jre.tgz" -C "$here"
export PATH="$here/jre/bin:$PATH"
tl=$(python3 -c "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib'))")
export PYTORCH_LIBRARY_PATH="$tl"
export PYTORCH_VERSION=${PYTORCH_VERSION:-2.7.1}   # the version DJL's JNI was built for
export PYTORCH_FLAVOR=${PYTORCH_FLAVOR:-cu128}
# DJL finds CUDA through an unversioned libcudart.so; pip wheels ship only versioned ones.
mkdir -p /tmp/cudart
for f in $(python3 -c "import glob,os,torch;print(' '.join(glob.glob(os.path.dirname(torch.__file__)+'/../nvidia/**/libcudart.so.*',recursive=True)))") /usr/local/cuda/lib64/libcudart.so.*; do
  [ -e "$f" ] && ln -sf "$f" /tmp/cudart/libcudart.so && export LD_LIBRARY_PATH="/tmp/cudart:$(dirname "$f"):${LD_LIBRARY_PATH:-}" && break
done
echo "java: $(java -version 2>&1 | head -1); torch libs: $tl; torch $(python3 -c 'import torch;print(torch.__version__, torch.version.cuda)')"
ENV
du -sh "$out" "$out"/lib
echo "carry [\".gpu\"]; the working tree that travels must stay under 64 MiB in all"
