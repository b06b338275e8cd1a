package io.gpumeter.benchmarks;

import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Settings every benchmark here shares, in one place (Netty's {@code AbstractMicrobenchmark}): one
 * fork with a pinned 1 GiB heap, 3 warm-up and 5 measured iterations of 1 s each. The build machine
 * has 2 shared cores, so runs are kept short and results are compared as ratios measured side by
 * side in one run. Override on the command line ({@code -f}, {@code -wi}, {@code -i}, {@code -r},
 * {@code -w}) for longer, quieter runs.
 */
@Fork(
    value = 1,
    jvmArgsAppend = {"-Xms1g", "-Xmx1g"})
@Warmup(iterations = 3, time = 1, timeUnit = TimeUnit.SECONDS)
@Measurement(iterations = 5, time = 1, timeUnit = TimeUnit.SECONDS)
public abstract class AbstractMicrobenchmark {}
