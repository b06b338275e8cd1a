package io.gpumeter.metering;

import java.math.BigInteger;

/**
 * The one place that splits a measured step time among the sequences in that step.
 *
 * <p>Rule: largest-remainder (Hamilton) rounding in integer nanoseconds. Each sequence first gets
 * {@code floor(total * w_i / W)}; the nanoseconds left over (fewer than the number of sequences) go
 * one each to the sequences with the largest remainders {@code (total * w_i) mod W}, ties broken by
 * lower index (the order the scheduler put the sequences in the step). So:
 *
 * <ul>
 *   <li>shares are never negative and always sum to {@code total} exactly (invariant 1);
 *   <li>each share differs from the exact proportional value by less than one nanosecond;
 *   <li>if every weight is zero, all sequences are weighted equally (a step always has an owner).
 * </ul>
 *
 * <p>Cost: linear in the batch size on average (the leftover nanoseconds are placed with a
 * quickselect on the remainders). Allocation: none when called with caller-owned arrays; products
 * that could overflow a {@code long} fall back to {@link BigInteger} (only for steps longer than
 * about 100 days at realistic weights).
 */
public final class Apportioner {
  private Apportioner() {}

  /**
   * Splits {@code total} nanoseconds by {@code weights[0..n)} into {@code shares[0..n)}.
   *
   * @param scratch caller-owned work array of length at least {@code 2 * n}
   * @throws IllegalArgumentException if {@code total} or a weight is negative, or arrays are short
   */
  public static void split(long total, long[] weights, int n, long[] shares, long[] scratch) {
    if (total < 0) {
      throw new IllegalArgumentException("total must be >= 0, was " + total);
    }
    if (n < 0 || weights.length < n || shares.length < n || scratch.length < 2 * n) {
      throw new IllegalArgumentException("arrays shorter than n=" + n + " (scratch needs 2n)");
    }
    if (n == 0) {
      if (total != 0) {
        throw new IllegalArgumentException("cannot split " + total + " ns among no sequences");
      }
      return;
    }
    long sumW = 0;
    for (int i = 0; i < n; i++) {
      long w = weights[i];
      if (w < 0) {
        throw new IllegalArgumentException("weight[" + i + "] must be >= 0, was " + w);
      }
      sumW = Math.addExact(sumW, w);
    }
    boolean equal = sumW == 0;
    if (equal) {
      sumW = n;
    }
    long assigned = 0;
    for (int i = 0; i < n; i++) {
      long w = equal ? 1 : weights[i];
      long hi = Math.multiplyHigh(total, w);
      long lo = total * w;
      if (hi == 0 && lo >= 0) {
        shares[i] = lo / sumW;
        scratch[i] = lo % sumW;
      } else {
        BigInteger[] qr =
            BigInteger.valueOf(total)
                .multiply(BigInteger.valueOf(w))
                .divideAndRemainder(BigInteger.valueOf(sumW));
        shares[i] = qr[0].longValueExact();
        scratch[i] = qr[1].longValueExact();
      }
      assigned += shares[i];
    }
    long leftover = total - assigned; // 0 <= leftover < n
    if (leftover == 0) {
      return;
    }
    if (leftover <= SMALL_LEFTOVER) {
      // A few passes are cheapest: each hands one nanosecond to the largest remainder left.
      for (long k = 0; k < leftover; k++) {
        int best = -1;
        long bestRem = -1;
        for (int i = 0; i < n; i++) {
          if (scratch[i] > bestRem) {
            bestRem = scratch[i];
            best = i;
          }
        }
        shares[best]++;
        scratch[best] = -1; // each sequence gets at most one extra nanosecond
      }
      return;
    }
    // Many leftovers: find the leftover-th largest remainder with a quickselect on a copy
    // (scratch[n..2n)), then give one nanosecond to every remainder above it and to the lowest
    // indices among those equal to it. Linear on average.
    System.arraycopy(scratch, 0, scratch, n, n);
    long threshold = kthLargest(scratch, n, 2 * n, (int) leftover);
    long handed = 0;
    for (int i = 0; i < n; i++) {
      if (scratch[i] > threshold) {
        shares[i]++;
        handed++;
      }
    }
    for (int i = 0; i < n && handed < leftover; i++) {
      if (scratch[i] == threshold) {
        shares[i]++;
        handed++;
      }
    }
  }

  private static final int SMALL_LEFTOVER = 4;

  /** The k-th largest value (1-based) of {@code a[from..to)}, reordering that range. */
  private static long kthLargest(long[] a, int from, int to, int k) {
    int lo = from;
    int hi = to - 1;
    int target = from + k - 1; // position in descending order
    while (lo < hi) {
      long pivot = a[(lo + hi) >>> 1];
      int i = lo;
      int j = hi;
      while (i <= j) {
        while (a[i] > pivot) {
          i++;
        }
        while (a[j] < pivot) {
          j--;
        }
        if (i <= j) {
          long t = a[i];
          a[i] = a[j];
          a[j] = t;
          i++;
          j--;
        }
      }
      if (target <= j) {
        hi = j;
      } else if (target >= i) {
        lo = i;
      } else {
        return a[target];
      }
    }
    return a[target];
  }

  /** Convenience form that allocates; for tests and cold paths. */
  public static long[] split(long total, long[] weights) {
    long[] shares = new long[weights.length];
    split(total, weights, weights.length, shares, new long[2 * weights.length]);
    return shares;
  }
}
