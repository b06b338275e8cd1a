package io.gpumeter.billing.db;

import io.zonky.test.db.postgres.embedded.DefaultPostgresBinaryResolver;
import io.zonky.test.db.postgres.embedded.PgBinaryResolver;
import java.io.BufferedOutputStream;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.commons.compress.archivers.tar.TarArchiveEntry;
import org.apache.commons.compress.archivers.tar.TarArchiveInputStream;
import org.apache.commons.compress.archivers.tar.TarArchiveOutputStream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.tukaani.xz.LZMA2Options;
import org.tukaani.xz.XZInputStream;
import org.tukaani.xz.XZOutputStream;

/**
 * Lets the embedded PostgreSQL run when the JVM runs as root (CI, containers).
 *
 * <p>Problem: {@code initdb}, {@code pg_ctl} and {@code postgres} refuse to run as uid 0.
 *
 * <p>Fix: this resolver takes zonky's archive ({@link DefaultPostgresBinaryResolver}) and repacks
 * it with those three programs renamed {@code *.real} and replaced by small {@code sh} wrappers
 * that, when started as root, {@code exec unshare --user --map-user=U --map-group=G "$0.real"}. In
 * the new user namespace the program sees a non-root uid {@code U}; files it creates are still
 * owned by root outside, and it can still be signalled by root ({@code pg_ctl stop} from another
 * namespace works because the kernel compares the real uids). When not root the wrapper just {@code
 * exec}s the real program, so the same archive works for everyone.
 *
 * <p>Why the wrappers keep the names: {@code pg_ctl} and {@code initdb} locate {@code postgres} in
 * the directory of their own executable ({@code find_other_exec}, which resolves {@code argv[0]};
 * the wrappers pass {@code "$0.real"}, so that is still {@code bin/}) and check its version with
 * {@code postgres -V}; {@code bin/postgres} is the wrapper, which forwards to {@code
 * postgres.real}. {@code pg_ctl} checks that the pid in {@code postmaster.pid} is the one it
 * forked; every step ({@code sh -c exec}, the wrapper, {@code unshare} without {@code --fork}) is
 * an {@code exec}, so the pid is kept. {@code postgres.real} finds {@code share/} and {@code lib/}
 * relative to its own path, which is unchanged.
 *
 * <p>Uid: the first of the user {@code postgres}, uid 1000, any other ordinary uid in {@code
 * /etc/passwd}, and {@code nobody} for which {@code unshare ... id -un} succeeds ({@code initdb}
 * needs {@code getpwuid} to know the uid).
 *
 * <p>Cache: the repacked archive is written once to {@code cacheDirectory} under a name that holds
 * the digest of the original archive, the wrapper format and the uid, then renamed into place
 * atomically; later starts read it from there.
 */
final class RootSafePgBinaryResolver implements PgBinaryResolver {
  private static final Logger LOG = LoggerFactory.getLogger(RootSafePgBinaryResolver.class);

  /** The programs that refuse to run as root and get a wrapper. */
  public static final List<String> WRAPPED = List.of("initdb", "pg_ctl", "postgres");

  /** Bump when the wrapper script changes, so old caches are not reused. */
  private static final int FORMAT = 1;

  private static final int XZ_PRESET = 1; // fast; the archive is a local cache

  private final PgBinaryResolver source;
  private final Path cacheDirectory;
  private final int uid;
  private final int gid;
  private final Object lock = new Object();

  RootSafePgBinaryResolver(PgBinaryResolver source, Path cacheDirectory, int uid, int gid) {
    this.source = Objects.requireNonNull(source, "source");
    this.cacheDirectory = cacheDirectory.toAbsolutePath().normalize();
    this.uid = uid;
    this.gid = gid;
  }

  /**
   * A resolver over zonky's default archive, caching its repack in {@code cacheDirectory}.
   *
   * @throws IllegalStateException if {@code unshare --user} does not work here
   */
  public static RootSafePgBinaryResolver create(Path cacheDirectory) {
    int[] ids = pickMappedIds();
    return new RootSafePgBinaryResolver(
        DefaultPostgresBinaryResolver.INSTANCE, cacheDirectory, ids[0], ids[1]);
  }

  /** True when this JVM runs as uid 0. */
  public static boolean runningAsRoot() {
    try {
      return new com.sun.security.auth.module.UnixSystem().getUid() == 0;
    } catch (LinkageError | RuntimeException e) {
      String out = run(List.of("id", "-u"));
      return out != null && out.trim().equals("0");
    }
  }

  public int mappedUid() {
    return uid;
  }

  @Override
  public InputStream getPgBinary(String system, String machineHardware) throws IOException {
    byte[] original;
    try (InputStream in = source.getPgBinary(system, machineHardware)) {
      if (in == null) {
        return null;
      }
      original = in.readAllBytes();
    }
    String digest = HexFormat.of().formatHex(sha256(original), 0, 8);
    Path cached =
        cacheDirectory.resolve(
            String.format(
                Locale.ROOT,
                "postgres-%s-%s-%s-rootsafe-v%d-u%d.txz",
                system.toLowerCase(Locale.ROOT),
                machineHardware,
                digest,
                FORMAT,
                uid));
    synchronized (lock) {
      if (!Files.isRegularFile(cached)) {
        Files.createDirectories(cacheDirectory);
        Path tmp = Files.createTempFile(cacheDirectory, ".postgres-repack-", ".tmp");
        try {
          long t0 = System.nanoTime();
          try (OutputStream out = new BufferedOutputStream(Files.newOutputStream(tmp), 1 << 16)) {
            repack(new ByteArrayInputStream(original), out, wrapperScript(uid, gid));
          }
          moveIntoPlace(tmp, cached);
          LOG.info(
              "Repacked PostgreSQL binaries to run as root via unshare (uid {}) in {} ms: {}",
              uid,
              TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0),
              cached);
        } finally {
          Files.deleteIfExists(tmp);
        }
      }
    }
    return Files.newInputStream(cached);
  }

  private static void moveIntoPlace(Path tmp, Path target) throws IOException {
    try {
      Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE);
    } catch (AtomicMoveNotSupportedException e) {
      Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
    }
  }

  /** The {@code sh} wrapper put in place of each program in {@link #WRAPPED}. */
  static String wrapperScript(int uid, int gid) {
    return "#!/bin/sh\n"
        + "# Written by gpumeter (RootSafePgBinaryResolver). PostgreSQL refuses to run as root:\n"
        + "# as root, run the real program as uid "
        + uid
        + " in a new user namespace (files stay owned\n"
        + "# by root outside it); otherwise run it as is.\n"
        + "if [ \"$(id -u)\" = 0 ]; then\n"
        + "  exec unshare --user --map-user="
        + uid
        + " --map-group="
        + gid
        + " \"$0.real\" \"$@\"\n"
        + "fi\n"
        + "exec \"$0.real\" \"$@\"\n";
  }

  /**
   * Copies a {@code .txz} archive, renaming {@code bin/NAME} to {@code bin/NAME.real} for each name
   * in {@link #WRAPPED} and adding {@code bin/NAME} with {@code wrapper} as its content.
   *
   * @throws IOException if the archive lacks one of the programs
   */
  static void repack(InputStream txz, OutputStream out, String wrapper) throws IOException {
    byte[] script = wrapper.getBytes(StandardCharsets.UTF_8);
    Set<String> missing = new LinkedHashSet<>(WRAPPED);
    try (TarArchiveInputStream tarIn = new TarArchiveInputStream(new XZInputStream(txz));
        TarArchiveOutputStream tarOut =
            new TarArchiveOutputStream(new XZOutputStream(out, new LZMA2Options(XZ_PRESET)))) {
      tarOut.setLongFileMode(TarArchiveOutputStream.LONGFILE_POSIX);
      tarOut.setBigNumberMode(TarArchiveOutputStream.BIGNUMBER_POSIX);
      TarArchiveEntry entry;
      while ((entry = tarIn.getNextEntry()) != null) {
        String name = entry.getName();
        String bare = name.startsWith("./") ? name.substring(2) : name;
        String program = bare.startsWith("bin/") ? bare.substring(4) : null;
        if (entry.isFile() && program != null && missing.remove(program)) {
          TarArchiveEntry real = new TarArchiveEntry(name + ".real");
          copyAttributes(entry, real);
          real.setSize(entry.getSize());
          tarOut.putArchiveEntry(real);
          tarIn.transferTo(tarOut);
          tarOut.closeArchiveEntry();

          TarArchiveEntry wrap = new TarArchiveEntry(name);
          copyAttributes(entry, wrap);
          wrap.setMode(0100755);
          wrap.setSize(script.length);
          tarOut.putArchiveEntry(wrap);
          tarOut.write(script);
          tarOut.closeArchiveEntry();
        } else {
          tarOut.putArchiveEntry(entry);
          if (entry.isFile()) {
            tarIn.transferTo(tarOut);
          }
          tarOut.closeArchiveEntry();
        }
      }
      tarOut.finish();
    }
    if (!missing.isEmpty()) {
      throw new IOException("PostgreSQL archive has no bin/" + String.join(", bin/", missing));
    }
  }

  private static void copyAttributes(TarArchiveEntry from, TarArchiveEntry to) {
    to.setMode(from.getMode());
    to.setModTime(from.getModTime());
    to.setUserId(from.getLongUserId());
    to.setGroupId(from.getLongGroupId());
    to.setUserName(from.getUserName());
    to.setGroupName(from.getGroupName());
  }

  private static byte[] sha256(byte[] data) {
    try {
      return MessageDigest.getInstance("SHA-256").digest(data);
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }

  /** Returns {uid, gid} of the first candidate user that {@code unshare} can map to. */
  static int[] pickMappedIds() {
    List<int[]> candidates = candidateIds(readPasswd());
    List<String> tried = new ArrayList<>();
    for (int[] ids : candidates) {
      List<String> cmd =
          List.of(
              "unshare", "--user", "--map-user=" + ids[0], "--map-group=" + ids[1], "id", "-un");
      String out = run(cmd);
      if (out != null && !out.isBlank()) {
        return ids;
      }
      tried.add(String.valueOf(ids[0]));
      if (tried.size() >= 4) {
        break;
      }
    }
    throw new IllegalStateException(
        "The embedded PostgreSQL cannot run as root, and this JVM runs as root: tried to run it"
            + " in a user namespace with 'unshare --user --map-user=UID' (uids "
            + String.join(", ", tried)
            + "), which is not available here (util-linux unshare missing or too old, or user"
            + " namespaces disabled). Run as a non-root user, or configure an external database"
            + " with "
            + "GPUMETER_DB_URL"
            + ".");
  }

  /** Orders passwd entries: postgres, uid 1000, other ordinary uids, nobody. */
  static List<int[]> candidateIds(List<String> passwdLines) {
    List<int[]> first = new ArrayList<>();
    List<int[]> second = new ArrayList<>();
    List<int[]> rest = new ArrayList<>();
    List<int[]> last = new ArrayList<>();
    for (String line : passwdLines) {
      String[] f = line.split(":", -1);
      if (f.length < 4) {
        continue;
      }
      int u;
      int g;
      try {
        u = Integer.parseInt(f[2]);
        g = Integer.parseInt(f[3]);
      } catch (NumberFormatException e) {
        continue;
      }
      if (u <= 0) {
        continue;
      }
      int[] ids = {u, g};
      if (f[0].equals("postgres")) {
        first.add(ids);
      } else if (u == 1000) {
        second.add(ids);
      } else if (u == 65534) {
        last.add(ids);
      } else if (u >= 100) {
        rest.add(ids);
      }
    }
    List<int[]> all = new ArrayList<>(first);
    all.addAll(second);
    all.addAll(rest);
    all.addAll(last);
    return all;
  }

  private static List<String> readPasswd() {
    try {
      return Files.readAllLines(Path.of("/etc/passwd"), StandardCharsets.UTF_8);
    } catch (IOException | RuntimeException e) {
      return List.of();
    }
  }

  /** Runs a short command; returns its output, or null if it could not run or exited non-zero. */
  private static String run(List<String> command) {
    try {
      Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
      p.getOutputStream().close();
      byte[] out = p.getInputStream().readAllBytes();
      if (!p.waitFor(10, TimeUnit.SECONDS)) {
        p.destroyForcibly();
        return null;
      }
      return p.exitValue() == 0 ? new String(out, StandardCharsets.UTF_8) : null;
    } catch (IOException e) {
      return null;
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return null;
    }
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof RootSafePgBinaryResolver r
        && r.source.equals(source)
        && r.cacheDirectory.equals(cacheDirectory)
        && r.uid == uid
        && r.gid == gid;
  }

  @Override
  public int hashCode() {
    return Objects.hash(source, cacheDirectory, uid, gid);
  }

  @Override
  public String toString() {
    return "RootSafePgBinaryResolver{cache=" + cacheDirectory + ", uid=" + uid + "}";
  }
}
