#!/bin/bash
# SamplingStepBenchmark, before (bc6f989) and after (ddfb559's batching classes first), alternating
cd /work/wt/stream
B=/tmp/stream-before/benchmarks/target/classes:/tmp/stream-before/batching/target/classes:/tmp/stream-before/metering/target/classes:/tmp/stream-before/model-store/target/classes:/tmp/stream-before/billing-api/target/classes:/tmp/stream-before/server/target/classes:/work/main/benchmarks/target/benchmarks.jar
A=/tmp/stream-sampler-after
OUT=${1:-/tmp/stream-sampler.txt}
{
echo "# $(date -u) load $(cat /proc/loadavg) $(nproc) cores"
for round in 1 2; do
  for which in before after; do
    if [ $which = before ]; then CP=$B; else CP=$A:$B; fi
    echo "## round $round: $which"
    java -cp $CP org.openjdk.jmh.Main SamplingStepBenchmark -p sequences=32 -p sampling=greedy,temperature,all -f 1 -wi 3 -i 5 -w 1 -r 1 2>&1 | grep -E "^SamplingStepBenchmark|^Benchmark"
    echo "# load $(cat /proc/loadavg)"
  done
done
echo "# end $(date -u) load $(cat /proc/loadavg)"
} 2>&1 | tee $OUT
