#!/bin/bash
# side-by-side streaming benchmark: before (bc6f989) vs after (branch stream), servers in their own JVMs
cd /work/wt/stream
OUT=${1:-/tmp/stream-results.txt}
{
echo "# $(date -u) $(cat /proc/loadavg) $(nproc) cores"
java -Dgpumeter.log.level=WARN -cp /tmp/stream-bench-classes:/tmp/stream-after-server:/work/wt/stream/batching/target/classes:/work/wt/stream/metering/target/classes:/work/wt/stream/model-store/target/classes:/work/wt/stream/billing-api/target/classes:/tmp/stream-before/benchmarks/target/classes:/work/main/benchmarks/target/benchmarks.jar io.gpumeter.benchmarks.StreamingThroughput   --models models --seconds ${SECS:-6} --rounds ${ROUNDS:-3} --max-tokens 64   --server before=/tmp/stream-before/benchmarks/target/classes:/tmp/stream-before/batching/target/classes:/tmp/stream-before/metering/target/classes:/tmp/stream-before/model-store/target/classes:/tmp/stream-before/billing-api/target/classes:/tmp/stream-before/server/target/classes:/work/main/benchmarks/target/benchmarks.jar --server after= ${JFR:+--server-jfr $JFR}
echo "# end $(date -u) $(cat /proc/loadavg)"
} 2>&1 | tee $OUT
