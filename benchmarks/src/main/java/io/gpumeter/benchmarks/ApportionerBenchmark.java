package io.gpumeter.benchmarks;

import io.gpumeter.metering.Apportioner;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;

/**
 * {@link Apportioner#split(long, long[], int, long[], long[])}: one step's measured time split
 * among {@code sequences} sequences, with caller-owned arrays, as the scheduler calls it.
 *
 * <p>Inputs are pre-built and cycled (Caffeine's {@code GetPutBenchmark} pattern): 1024 step times
 * drawn from 0.2 to 20 ms, so the remainder left after the floor shares (0 to n-1 ns, handed out
 * one by one to the largest remainders) varies like it does in service; and 64 weight rows. {@code
 * weights=decode}: every sequence decodes one token (weight 1, the steady state and the case with
 * the most ties and the largest remainders); {@code weights=mixed}: one in eight sequences is
 * prefilling a chunk of 16 to 128 tokens, the rest decode.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class ApportionerBenchmark extends AbstractMicrobenchmark {
  private static final int TOTALS = 1024;
  private static final int ROWS = 64;

  @Param({"1", "8", "32", "128", "256"})
  int sequences;

  @Param({"decode", "mixed"})
  String weights;

  private long[] totals;
  private long[][] rows;
  private long[] shares;
  private long[] scratch;
  private int next;

  @Setup(Level.Trial)
  public void build() {
    SplittableRandom random = new SplittableRandom(20240601L);
    totals = new long[TOTALS];
    for (int i = 0; i < TOTALS; i++) {
      totals[i] = random.nextLong(200_000L, 20_000_000L);
    }
    rows = new long[ROWS][sequences];
    for (long[] row : rows) {
      for (int s = 0; s < sequences; s++) {
        boolean prefill = weights.equals("mixed") && random.nextInt(8) == 0;
        row[s] = prefill ? random.nextInt(16, 129) : 1;
      }
    }
    shares = new long[sequences];
    scratch = new long[2 * sequences];
  }

  @Benchmark
  public long split() {
    int i = next++;
    Apportioner.split(totals[i & (TOTALS - 1)], rows[i & (ROWS - 1)], sequences, shares, scratch);
    return shares[sequences - 1];
  }
}
