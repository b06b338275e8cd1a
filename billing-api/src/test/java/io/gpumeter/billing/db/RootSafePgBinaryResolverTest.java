package io.gpumeter.billing.db;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.zonky.test.db.postgres.embedded.PgBinaryResolver;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.commons.compress.archivers.tar.TarArchiveEntry;
import org.apache.commons.compress.archivers.tar.TarArchiveInputStream;
import org.apache.commons.compress.archivers.tar.TarArchiveOutputStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tukaani.xz.LZMA2Options;
import org.tukaani.xz.XZInputStream;
import org.tukaani.xz.XZOutputStream;

class RootSafePgBinaryResolverTest {
  @TempDir Path tmp;

  /** A tiny stand-in for zonky's archive: three programs, a library and a symlink. */
  static byte[] fakeArchive(boolean withPostgres) throws IOException {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    try (TarArchiveOutputStream tar =
        new TarArchiveOutputStream(new XZOutputStream(bytes, new LZMA2Options(0)))) {
      dir(tar, "bin/");
      for (String p :
          withPostgres ? List.of("initdb", "pg_ctl", "postgres", "psql") : List.of("initdb")) {
        file(tar, "bin/" + p, 0755, "#!/bin/sh\necho " + p + " \"$@\"\n");
      }
      dir(tar, "lib/");
      file(tar, "lib/libpq.so.5.14", 0644, "ELF");
      TarArchiveEntry link = new TarArchiveEntry("lib/libpq.so.5", TarArchiveEntry.LF_SYMLINK);
      link.setLinkName("libpq.so.5.14");
      tar.putArchiveEntry(link);
      tar.closeArchiveEntry();
      tar.finish();
    }
    return bytes.toByteArray();
  }

  static void dir(TarArchiveOutputStream tar, String name) throws IOException {
    tar.putArchiveEntry(new TarArchiveEntry(name));
    tar.closeArchiveEntry();
  }

  static void file(TarArchiveOutputStream tar, String name, int mode, String content)
      throws IOException {
    byte[] b = content.getBytes(StandardCharsets.UTF_8);
    TarArchiveEntry e = new TarArchiveEntry(name);
    e.setMode(0100000 | mode);
    e.setSize(b.length);
    tar.putArchiveEntry(e);
    tar.write(b);
    tar.closeArchiveEntry();
  }

  static Map<String, TarArchiveEntry> entries(byte[] txz, Map<String, String> contents)
      throws IOException {
    Map<String, TarArchiveEntry> out = new LinkedHashMap<>();
    try (TarArchiveInputStream in =
        new TarArchiveInputStream(new XZInputStream(new ByteArrayInputStream(txz)))) {
      TarArchiveEntry e;
      while ((e = in.getNextEntry()) != null) {
        out.put(e.getName(), e);
        if (e.isFile()) {
          contents.put(e.getName(), new String(in.readAllBytes(), StandardCharsets.UTF_8));
        }
      }
    }
    return out;
  }

  @Test
  void repackWrapsTheThreeProgramsAndKeepsTheRest() throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    String wrapper = RootSafePgBinaryResolver.wrapperScript(1000, 1000);
    RootSafePgBinaryResolver.repack(new ByteArrayInputStream(fakeArchive(true)), out, wrapper);
    Map<String, String> contents = new LinkedHashMap<>();
    Map<String, TarArchiveEntry> entries = entries(out.toByteArray(), contents);

    for (String p : RootSafePgBinaryResolver.WRAPPED) {
      assertThat(contents.get("bin/" + p)).isEqualTo(wrapper);
      assertThat(entries.get("bin/" + p).getMode() & 0777).isEqualTo(0755);
      assertThat(contents.get("bin/" + p + ".real"))
          .isEqualTo("#!/bin/sh\necho " + p + " \"$@\"\n");
      assertThat(entries.get("bin/" + p + ".real").getMode() & 0777).isEqualTo(0755);
    }
    assertThat(contents.get("bin/psql")).contains("echo psql"); // not wrapped
    assertThat(entries).doesNotContainKey("bin/psql.real");
    assertThat(contents.get("lib/libpq.so.5.14")).isEqualTo("ELF");
    assertThat(entries.get("lib/libpq.so.5").isSymbolicLink()).isTrue();
    assertThat(entries.get("lib/libpq.so.5").getLinkName()).isEqualTo("libpq.so.5.14");
    assertThat(wrapper)
        .contains("exec unshare --user --map-user=1000 --map-group=1000 \"$0.real\" \"$@\"")
        .contains("exec \"$0.real\" \"$@\"");
  }

  @Test
  void theWrapperRunsTheRealProgramWithItsArguments() throws Exception {
    Path bin = Files.createDirectories(tmp.resolve("bin"));
    Path real = bin.resolve("initdb.real");
    Files.writeString(real, "#!/bin/sh\necho \"uid=$(id -u) args=$*\"\n");
    real.toFile().setExecutable(true);
    Path wrapper = bin.resolve("initdb");
    int[] ids =
        RootSafePgBinaryResolver.runningAsRoot()
            ? RootSafePgBinaryResolver.pickMappedIds()
            : new int[] {1000, 1000};
    Files.writeString(wrapper, RootSafePgBinaryResolver.wrapperScript(ids[0], ids[1]));
    wrapper.toFile().setExecutable(true);

    Process p =
        new ProcessBuilder(wrapper.toString(), "-D", "some dir").redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
    assertThat(p.waitFor()).isZero();
    String uid = RootSafePgBinaryResolver.runningAsRoot() ? String.valueOf(ids[0]) : currentUid();
    assertThat(out).isEqualTo("uid=" + uid + " args=-D some dir");
  }

  private static String currentUid() throws Exception {
    Process p = new ProcessBuilder("id", "-u").start();
    return new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
  }

  @Test
  void repackIsCachedOnDiskAndBuiltOnce() throws IOException {
    byte[] archive = fakeArchive(true);
    AtomicInteger reads = new AtomicInteger();
    PgBinaryResolver source =
        (system, hw) -> {
          reads.incrementAndGet();
          return new ByteArrayInputStream(archive);
        };
    Path cache = tmp.resolve("cache");
    RootSafePgBinaryResolver r = new RootSafePgBinaryResolver(source, cache, 1000, 1000);
    byte[] first;
    try (InputStream in = r.getPgBinary("Linux", "x86_64")) {
      first = in.readAllBytes();
    }
    List<Path> files;
    try (var s = Files.list(cache)) {
      files = s.toList();
    }
    assertThat(files).hasSize(1);
    Path cached = files.get(0);
    assertThat(cached.getFileName().toString())
        .matches("postgres-linux-x86_64-[0-9a-f]{16}-rootsafe-v1-u1000\\.txz");
    FileTime written = FileTime.fromMillis(1_000_000L);
    Files.setLastModifiedTime(cached, written);

    RootSafePgBinaryResolver again = new RootSafePgBinaryResolver(source, cache, 1000, 1000);
    try (InputStream in = again.getPgBinary("Linux", "x86_64")) {
      assertThat(in.readAllBytes()).isEqualTo(first);
    }
    assertThat(Files.getLastModifiedTime(cached)).isEqualTo(written); // not rebuilt
    assertThat(again).isEqualTo(r).hasSameHashCodeAs(r);

    // Another uid gets its own file.
    try (InputStream in =
        new RootSafePgBinaryResolver(source, cache, 1001, 1001).getPgBinary("Linux", "x86_64")) {
      in.readAllBytes();
    }
    try (var s = Files.list(cache)) {
      assertThat(s.count()).isEqualTo(2);
    }
  }

  @Test
  void anArchiveWithoutTheProgramsIsRefused() throws IOException {
    assertThatThrownBy(
            () ->
                RootSafePgBinaryResolver.repack(
                    new ByteArrayInputStream(fakeArchive(false)), new ByteArrayOutputStream(), "x"))
        .isInstanceOf(IOException.class)
        .hasMessageContaining("bin/pg_ctl");
  }

  @Test
  void candidateUidsPreferPostgresThen1000AndNobodyLast() {
    List<int[]> c =
        RootSafePgBinaryResolver.candidateIds(
            List.of(
                "root:x:0:0:root:/root:/bin/bash",
                "daemon:x:1:1::/:/usr/sbin/nologin",
                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
                "app:x:1001:1001::/home/app:/bin/sh",
                "user:x:1000:1000::/home/user:/bin/sh",
                "postgres:x:101:104::/var/lib/postgresql:/bin/bash",
                "broken line"));
    assertThat(c).extracting(ids -> ids[0]).containsExactly(101, 1000, 1001, 65534);
    assertThat(c.get(0)[1]).isEqualTo(104);
  }
}
