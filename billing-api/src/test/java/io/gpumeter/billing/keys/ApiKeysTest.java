package io.gpumeter.billing.keys;

import static io.gpumeter.billing.keys.ApiKeys.PREFIX_LENGTH;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.tuple;

import io.gpumeter.billing.ApiKeyCacheConfig;
import io.gpumeter.billing.ApiKeyInfo;
import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.ApiKeyStateException;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.RotatedApiKey;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ApiKeysTest {
  @TempDir static Path tmp;
  static Database db;
  static ApiKeys keys;

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
    keys = new ApiKeys(db.dataSource());
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  @Test
  void createdKeyAuthenticates() {
    CreatedApiKey k = keys.create("acme");
    assertThat(k.plaintext()).matches("gm_[0-9A-Za-z]{40}");
    assertThat(k.prefix()).isEqualTo(k.plaintext().substring(0, 12));
    assertThat(k.toString()).doesNotContain(k.plaintext());

    Optional<ApiKeyPrincipal> p = keys.authenticate(k.plaintext());
    assertThat(p).contains(new ApiKeyPrincipal(k.keyId(), k.accountId(), "acme", k.prefix()));
    assertThat(k.principal()).isEqualTo(p.orElseThrow());
  }

  @Test
  void secondKeyReusesTheAccount() {
    CreatedApiKey a = keys.create("reuse");
    CreatedApiKey b = keys.create("  reuse ");
    assertThat(b.accountId()).isEqualTo(a.accountId());
    assertThat(b.keyId()).isNotEqualTo(a.keyId());
    assertThat(b.plaintext()).isNotEqualTo(a.plaintext());
    assertThat(keys.authenticate(a.plaintext())).isPresent();
    assertThat(keys.authenticate(b.plaintext())).isPresent();
  }

  @Test
  void wrongOrMalformedKeysAreRejected() {
    CreatedApiKey k = keys.create("wrong");
    char last = k.plaintext().charAt(k.plaintext().length() - 1);
    String altered =
        k.plaintext().substring(0, k.plaintext().length() - 1) + (last == 'a' ? 'b' : 'a');
    assertThat(keys.authenticate(altered)).isEmpty();
    assertThat(keys.authenticate(k.plaintext() + "x")).isEmpty();
    assertThat(keys.authenticate(k.plaintext().substring(1))).isEmpty();
    assertThat(keys.authenticate("gm_" + "!".repeat(40))).isEmpty();
    assertThat(keys.authenticate("")).isEmpty();
    assertThat(keys.authenticate(null)).isEmpty();
    assertThat(keys.authenticate(k.plaintext())).isPresent();
  }

  @Test
  void onlyHashAndPrefixAreStored() throws Exception {
    CreatedApiKey k = keys.create("secretive");
    byte[] expectedHash =
        java.security.MessageDigest.getInstance("SHA-256")
            .digest(k.plaintext().getBytes(StandardCharsets.US_ASCII));
    String secretPart = k.plaintext().substring(12);
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT k::text, a::text FROM api_keys k JOIN accounts a"
                    + " ON a.id = k.account_id WHERE k.id = ?")) {
      ps.setLong(1, k.keyId());
      try (ResultSet rs = ps.executeQuery()) {
        assertThat(rs.next()).isTrue();
        String row = rs.getString(1) + rs.getString(2);
        assertThat(row).doesNotContain(k.plaintext()).doesNotContain(secretPart);
        assertThat(row).contains(k.prefix()).contains(HexFormat.of().formatHex(expectedHash));
      }
    }
    // Nowhere else either: no column of any table holds the secret part.
    try (Connection c = db.dataSource().getConnection();
        Statement s = c.createStatement();
        ResultSet rs =
            s.executeQuery(
                "SELECT (SELECT string_agg(t::text, '|') FROM api_keys t)"
                    + " || (SELECT string_agg(t::text, '|') FROM accounts t)")) {
      rs.next();
      assertThat(rs.getString(1)).doesNotContain(secretPart);
    }
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT key_hash, prefix FROM api_keys WHERE id = ?")) {
      ps.setLong(1, k.keyId());
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        assertThat(rs.getBytes(1)).isEqualTo(expectedHash);
        assertThat(rs.getString(2)).isEqualTo(k.prefix());
      }
    }
  }

  @Test
  void revokedKeyIsRejected() {
    CreatedApiKey k = keys.create("revoked");
    assertThat(keys.authenticate(k.plaintext())).isPresent(); // now cached
    ApiKeyInfo revoked = keys.revoke(k.keyId());
    assertThat(revoked.keyId()).isEqualTo(k.keyId());
    assertThat(revoked.revokedAt()).isNotNull().isAfterOrEqualTo(revoked.createdAt());
    assertThat(keys.authenticate(k.plaintext())).isEmpty();
    assertThatThrownBy(() -> keys.revoke(k.keyId()))
        .isInstanceOfSatisfying(
            ApiKeyStateException.class,
            e -> assertThat(e.problem()).isEqualTo(ApiKeyStateException.Problem.REVOKED));
    // Another instance (another replica) that never cached it rejects it too.
    assertThat(new ApiKeys(db.dataSource()).authenticate(k.plaintext())).isEmpty();
  }

  @Test
  void cachedPrincipalAnswersOnlyFromTheCacheAndForgetsARevokedKey() {
    AtomicLong now = new AtomicLong();
    ApiKeys replica =
        new ApiKeys(
            db.dataSource(),
            new ApiKeyCacheConfig(100, Duration.ofSeconds(60), Duration.ofSeconds(5)),
            now::get);
    CreatedApiKey k = keys.create("cached-only");
    long lookups = replica.databaseLookups();
    // Not cached yet: empty, and no database lookup was made for it.
    assertThat(replica.cachedPrincipal(k.plaintext())).isEmpty();
    assertThat(replica.databaseLookups()).isEqualTo(lookups);
    assertThat(replica.authenticate(k.plaintext())).isPresent();
    assertThat(replica.cachedPrincipal(k.plaintext()))
        .map(ApiKeyPrincipal::keyId)
        .contains(k.keyId());
    // A key cached as unknown, and a malformed one, are empty too.
    String unknown = "gm_" + "Y".repeat(40);
    assertThat(replica.authenticate(unknown)).isEmpty();
    assertThat(replica.cachedPrincipal(unknown)).isEmpty();
    assertThat(replica.cachedPrincipal("not-a-key")).isEmpty();
    // Revoked through this instance: dropped at once.
    replica.revoke(k.keyId());
    assertThat(replica.cachedPrincipal(k.plaintext())).isEmpty();
    // Past the positive TTL an entry is gone as for authenticate.
    CreatedApiKey other = keys.create("cached-only");
    assertThat(replica.authenticate(other.plaintext())).isPresent();
    now.addAndGet(TimeUnit.SECONDS.toNanos(61));
    assertThat(replica.cachedPrincipal(other.plaintext())).isEmpty();
  }

  @Test
  void revocationOnAnotherReplicaIsSeenAfterThePositiveTtl() {
    AtomicLong now = new AtomicLong();
    ApiKeys replica =
        new ApiKeys(
            db.dataSource(),
            new ApiKeyCacheConfig(100, Duration.ofSeconds(60), Duration.ofSeconds(5)),
            now::get);
    CreatedApiKey k = keys.create("ttl");
    assertThat(replica.authenticate(k.plaintext())).isPresent();
    keys.revoke(k.keyId());
    now.addAndGet(TimeUnit.SECONDS.toNanos(59));
    assertThat(replica.authenticate(k.plaintext())).isPresent();
    now.addAndGet(TimeUnit.SECONDS.toNanos(2));
    assertThat(replica.authenticate(k.plaintext())).isEmpty();
  }

  @Test
  void unknownKeysAreCachedBriefly() throws Exception {
    AtomicLong now = new AtomicLong();
    ApiKeys cached =
        new ApiKeys(
            db.dataSource(),
            new ApiKeyCacheConfig(100, Duration.ofSeconds(60), Duration.ofSeconds(5)),
            now::get);
    String unknown = "gm_" + "Z".repeat(40);
    assertThat(cached.authenticate(unknown)).isEmpty();
    // Make it valid behind the cache's back.
    CreatedApiKey k = keys.create("negative");
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("UPDATE api_keys SET key_hash = ? WHERE id = ?")) {
      ps.setBytes(1, ApiKeys.sha256(unknown));
      ps.setLong(2, k.keyId());
      assertThat(ps.executeUpdate()).isEqualTo(1);
    }
    assertThat(cached.authenticate(unknown)).isEmpty();
    now.addAndGet(TimeUnit.SECONDS.toNanos(6));
    assertThat(cached.authenticate(unknown)).map(ApiKeyPrincipal::keyId).contains(k.keyId());
  }

  @Test
  void unknownKeyIdsAreRefused() {
    long unknown = Long.MAX_VALUE;
    assertThat(keys.find(unknown)).isEmpty();
    assertThatThrownBy(() -> keys.revoke(unknown))
        .isInstanceOfSatisfying(
            ApiKeyStateException.class,
            e -> {
              assertThat(e.problem()).isEqualTo(ApiKeyStateException.Problem.UNKNOWN);
              assertThat(e.keyId()).isEqualTo(unknown);
            });
    assertThatThrownBy(() -> keys.rotate(unknown))
        .isInstanceOfSatisfying(
            ApiKeyStateException.class,
            e -> assertThat(e.problem()).isEqualTo(ApiKeyStateException.Problem.UNKNOWN));
  }

  @Test
  void listShowsIdsPrefixesAndTimesButNoSecret() {
    CreatedApiKey a = keys.create("listed");
    CreatedApiKey b = keys.create("listed");
    keys.create("not-listed");
    keys.revoke(a.keyId());

    List<ApiKeyInfo> listed = keys.list("listed");
    assertThat(listed).extracting(ApiKeyInfo::keyId).containsExactly(a.keyId(), b.keyId());
    assertThat(listed).extracting(ApiKeyInfo::prefix).containsExactly(a.prefix(), b.prefix());
    assertThat(listed).extracting(ApiKeyInfo::accountName).containsOnly("listed");
    assertThat(listed.get(0).revoked()).isTrue();
    assertThat(listed.get(1).revoked()).isFalse();
    assertThat(listed.get(1).createdAt()).isEqualTo(b.createdAt());
    assertThat(listed.toString())
        .doesNotContain(a.plaintext().substring(PREFIX_LENGTH))
        .doesNotContain(b.plaintext().substring(PREFIX_LENGTH));

    assertThat(keys.list(null)).extracting(ApiKeyInfo::keyId).contains(a.keyId(), b.keyId());
    assertThat(keys.list("no-such-account")).isEmpty();
    assertThat(keys.find(b.keyId())).contains(listed.get(1));
  }

  @Test
  void rotationMakesANewKeyForTheAccountAndRevokesTheOldOneAtOnce() {
    CreatedApiKey old = keys.create("rotated");
    assertThat(keys.authenticate(old.plaintext())).isPresent(); // now cached

    RotatedApiKey r = keys.rotate(old.keyId());

    assertThat(r.revoked().keyId()).isEqualTo(old.keyId());
    assertThat(r.revoked().revoked()).isTrue();
    assertThat(r.created().accountId()).isEqualTo(old.accountId());
    assertThat(r.created().accountName()).isEqualTo("rotated");
    assertThat(r.created().keyId()).isNotEqualTo(old.keyId());
    assertThat(r.created().plaintext()).isNotEqualTo(old.plaintext());
    assertThat(keys.authenticate(old.plaintext())).isEmpty();
    assertThat(keys.authenticate(r.created().plaintext())).contains(r.created().principal());
    assertThatThrownBy(() -> keys.rotate(old.keyId()))
        .isInstanceOfSatisfying(
            ApiKeyStateException.class,
            e -> assertThat(e.problem()).isEqualTo(ApiKeyStateException.Problem.REVOKED));
    assertThat(keys.list("rotated"))
        .extracting(ApiKeyInfo::keyId, ApiKeyInfo::revoked)
        .containsExactly(tuple(old.keyId(), true), tuple(r.created().keyId(), false));
  }

  @Test
  void everyDistinctWrongKeyCostsOneLookupAndRepeatsAreCached() {
    ApiKeys fresh = new ApiKeys(db.dataSource());
    String wrong1 = "gm_" + "W".repeat(40);
    String wrong2 = "gm_" + "V".repeat(40);
    assertThat(fresh.authenticate(wrong1)).isEmpty();
    assertThat(fresh.authenticate(wrong1)).isEmpty();
    assertThat(fresh.databaseLookups()).isEqualTo(1);
    assertThat(fresh.authenticate(wrong2)).isEmpty();
    assertThat(fresh.databaseLookups()).isEqualTo(2);
    assertThat(fresh.authenticate("gm_short")).isEmpty(); // malformed: no lookup
    assertThat(fresh.databaseLookups()).isEqualTo(2);
  }

  @Test
  void badAccountNamesAreRefused() {
    assertThatThrownBy(() -> keys.create(" ")).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> keys.create("x".repeat(201)))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("201");
  }
}
