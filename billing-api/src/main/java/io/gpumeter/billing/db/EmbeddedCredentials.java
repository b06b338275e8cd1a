package io.gpumeter.billing.db;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import java.util.Base64;
import java.util.Set;

/**
 * The embedded server's roles and their passwords, kept in files of mode 0600 in its data folder,
 * and the {@code pg_hba.conf} that makes them necessary.
 *
 * <p>Roles: {@link #OWNER} ({@code postgres}, the superuser that owns the schema: migrations and
 * partition maintenance) and {@link #APP} ({@code gpumeter_app}: the server's and tools' queries,
 * with no right to change the schema). Each password is 32 random bytes (base64url), generated
 * once: the owner's before {@code initdb} (which sets it with {@code --pwfile}), the app's at the
 * first start that creates the role.
 *
 * <p>{@code pg_hba.conf}: one line, {@code host all all 127.0.0.1/32 scram-sha-256}; the server
 * listens on 127.0.0.1 only and has no Unix socket, so there is no other way in, and no
 * replication.
 */
final class EmbeddedCredentials {
  static final String OWNER = "postgres";
  static final String APP = "gpumeter_app";
  static final String OWNER_PASSWORD_FILE = "gpumeter-owner.password";
  static final String APP_PASSWORD_FILE = "gpumeter-app.password";

  /** First line of the {@code pg_hba.conf} written here; a file without it is an older one. */
  static final String HBA_MARKER = "# gpumeter: scram-sha-256 over loopback only";

  static final String HBA =
      HBA_MARKER
          + "\n"
          + "# Written by gpumeter at every start of its embedded PostgreSQL; edits are lost.\n"
          + "# The server listens on 127.0.0.1 only, with no Unix socket and no replication.\n"
          + "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
          + "host    all       all   127.0.0.1/32  scram-sha-256\n";

  private static final Set<PosixFilePermission> OWNER_ONLY =
      PosixFilePermissions.fromString("rw-------");
  private static final SecureRandom RANDOM = new SecureRandom();

  private EmbeddedCredentials() {}

  static String generatePassword() {
    byte[] b = new byte[32];
    RANDOM.nextBytes(b);
    return Base64.getUrlEncoder().withoutPadding().encodeToString(b);
  }

  /** The password in {@code file} (its first line). */
  static String read(Path file) throws IOException {
    String s = Files.readString(file, StandardCharsets.UTF_8).strip();
    if (s.isEmpty()) {
      throw new IOException("password file " + file + " is empty");
    }
    return s;
  }

  /**
   * Writes {@code text} to {@code file} with mode 0600: to a temporary file created with that mode
   * in the same folder, forced to disk, then renamed into place, so no reader ever sees a partial
   * or world-readable file.
   */
  static void writeOwnerOnly(Path file, String text) throws IOException {
    Path dir = file.toAbsolutePath().getParent();
    Files.createDirectories(dir);
    Path tmp =
        Files.createTempFile(
            dir,
            "." + file.getFileName() + "-",
            ".tmp",
            PosixFilePermissions.asFileAttribute(OWNER_ONLY));
    try {
      Files.writeString(tmp, text, StandardCharsets.UTF_8);
      try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE)) {
        ch.force(true);
      }
      try {
        Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
      } catch (AtomicMoveNotSupportedException e) {
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING);
      }
      Files.setPosixFilePermissions(file, OWNER_ONLY);
    } finally {
      Files.deleteIfExists(tmp);
    }
  }

  /** The password in {@code file}, created (0600) if the file does not exist yet. */
  static String readOrCreate(Path file) throws IOException {
    if (Files.isRegularFile(file)) {
      Files.setPosixFilePermissions(file, OWNER_ONLY);
      return read(file);
    }
    String pw = generatePassword();
    writeOwnerOnly(file, pw + "\n");
    return pw;
  }

  /** True when {@code pg_hba.conf} in {@code dataDir} is the one this class writes. */
  static boolean hasGpumeterHba(Path dataDir) throws IOException {
    Path hba = dataDir.resolve("pg_hba.conf");
    if (!Files.isRegularFile(hba)) {
      return false;
    }
    return Files.readString(hba, StandardCharsets.UTF_8).startsWith(HBA_MARKER);
  }

  static void writeHba(Path dataDir) throws IOException {
    writeHba(dataDir, null);
  }

  /**
   * {@link #HBA}, plus, when {@code clientNetwork} is not null ({@link
   * io.gpumeter.billing.DatabaseConfig#embeddedClientNetwork()}), one more line accepting password
   * connections from that network.
   */
  static void writeHba(Path dataDir, String clientNetwork) throws IOException {
    String hba =
        clientNetwork == null
            ? HBA
            : HBA
                + "# DatabaseConfig.embeddedRemoteAccess: server processes on other hosts.\n"
                + "host    all       all   "
                + clientNetwork
                + "  scram-sha-256\n";
    writeOwnerOnly(dataDir.resolve("pg_hba.conf"), hba);
  }
}
