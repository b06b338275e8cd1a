package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

class AuthThrottleTest {
  private final AtomicLong now = new AtomicLong(1_000_000_000L);
  private final AuthThrottle throttle = new AuthThrottle(3, Duration.ofSeconds(60), 4, now::get);

  private static InetSocketAddress at(String ip, int port) throws Exception {
    return new InetSocketAddress(InetAddress.getByName(ip), port);
  }

  private void advanceSeconds(long s) {
    now.addAndGet(TimeUnit.SECONDS.toNanos(s));
  }

  @Test
  void throttlesAfterMaxFailuresUntilTheWindowEnds() throws Exception {
    InetSocketAddress a = at("192.0.2.1", 4000);
    throttle.recordFailure(a);
    advanceSeconds(10);
    throttle.recordFailure(a);
    throttle.check(a); // 2 of 3: still allowed
    throttle.recordFailure(at("192.0.2.1", 4001)); // another port, same address
    advanceSeconds(5);

    assertThat(throttle.blockedForNanos(a)).isEqualTo(TimeUnit.SECONDS.toNanos(45));
    assertThatThrownBy(() -> throttle.check(a))
        .isInstanceOfSatisfying(
            ApiException.class,
            e -> {
              assertThat(e.status().code()).isEqualTo(429);
              assertThat(e.type()).isEqualTo(ApiException.RATE_LIMIT);
              assertThat(e.code()).isEqualTo(AuthThrottle.CODE);
              assertThat(e.headerName().toString()).isEqualToIgnoringCase("retry-after");
              assertThat(e.headerValue()).isEqualTo("45");
            });
    // another address is not affected
    throttle.check(at("192.0.2.2", 4000));

    now.addAndGet(TimeUnit.SECONDS.toNanos(44) + 1); // 0.999999999 s left: rounded up
    assertThatThrownBy(() -> throttle.check(a))
        .isInstanceOfSatisfying(
            ApiException.class, e -> assertThat(e.headerValue()).isEqualTo("1"));
    advanceSeconds(1);
    assertThat(throttle.blockedForNanos(a)).isZero();
    throttle.check(a);

    // the old window's failures are forgotten: a new window opens at the next failure
    throttle.recordFailure(a);
    throttle.recordFailure(a);
    assertThat(throttle.blockedForNanos(a)).isZero();
    throttle.recordFailure(a);
    assertThat(throttle.blockedForNanos(a)).isEqualTo(TimeUnit.SECONDS.toNanos(60));
  }

  @Test
  void ipv6AddressesCountPerSlash64() throws Exception {
    InetSocketAddress one = at("2001:db8:1:2::1", 1);
    InetSocketAddress sameNet = at("2001:db8:1:2:ffff::9", 2);
    InetSocketAddress otherNet = at("2001:db8:1:3::1", 3);
    throttle.recordFailure(one);
    throttle.recordFailure(sameNet);
    throttle.recordFailure(one);
    assertThat(throttle.blockedForNanos(sameNet)).isPositive();
    assertThat(throttle.blockedForNanos(otherNet)).isZero();
  }

  @Test
  void trackedAddressesAreBoundedAndExpiredOnesMakeRoom() throws Exception {
    for (int i = 1; i <= 4; i++) {
      throttle.recordFailure(at("198.51.100." + i, 1));
    }
    assertThat(throttle.trackedAddresses()).isEqualTo(4);
    throttle.recordFailure(at("198.51.100.5", 1)); // full, none expired: not tracked
    assertThat(throttle.trackedAddresses()).isEqualTo(4);
    advanceSeconds(60);
    throttle.recordFailure(at("198.51.100.6", 1)); // the expired windows are purged first
    assertThat(throttle.trackedAddresses()).isEqualTo(1);
  }

  @Test
  void refusesBadSettings() {
    assertThatThrownBy(() -> new AuthThrottle(0, Duration.ofSeconds(1)))
        .hasMessageContaining("maxFailures must be >= 1, was 0");
    assertThatThrownBy(() -> new AuthThrottle(1, Duration.ZERO))
        .hasMessageContaining("window must be positive");
  }
}
