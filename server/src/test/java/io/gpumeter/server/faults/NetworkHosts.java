package io.gpumeter.server.faults;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Two network hosts on this machine: two network namespaces ({@code gm-a-XXXX}, {@code gm-b-XXXX})
 * that this creates, each joined to the root namespace by a veth pair of its own, with addresses in
 * {@code 10.231.N.0/29}: the root side of host 1's pair is {@code .1} (where PostgreSQL listens),
 * host 1 is {@code .2}; the root side of host 2's pair is {@code .5}, host 2 is {@code .6}. Each
 * namespace has its loopback and a default route to its root side only, so a process started with
 * {@link #launcher} reaches the root namespace's {@code .1} over its veth pair and nothing of the
 * root namespace's loopback; the root namespace reaches each host at its address. {@link #close()}
 * removes the pairs and the namespaces (also after a failed {@link #create()}).
 *
 * <p>Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2's {@code ip}: {@link
 * #unavailableReason()} says why not.
 */
final class NetworkHosts implements AutoCloseable {
  private static final List<Path> IP_CANDIDATES =
      List.of(Path.of("/usr/sbin/ip"), Path.of("/sbin/ip"), Path.of("/usr/bin/ip"));
  private static final long COMMAND_TIMEOUT_S = 20;

  private final String ip;
  private final String prefix;
  private final String[] namespaces;
  private final String[] rootLinks;
  private final List<String> created = new ArrayList<>();
  private final List<String> createdLinks = new ArrayList<>();

  private NetworkHosts(String ip, int subnet, String suffix) {
    this.ip = ip;
    this.prefix = "10.231." + subnet + ".";
    this.namespaces = new String[] {"gm-a-" + suffix, "gm-b-" + suffix};
    this.rootLinks = new String[] {"gm" + suffix + "a", "gm" + suffix + "b"};
  }

  /** Null when namespaces can be tried here, else why not (for the test's skip message). */
  static String unavailableReason() {
    try {
      boolean root =
          Files.readAllLines(Path.of("/proc/self/status"), StandardCharsets.US_ASCII).stream()
              .anyMatch(l -> l.matches("Uid:\\s+0\\s.*"));
      if (!root) {
        return "creating network namespaces needs root (CI runs as root), and this is not";
      }
    } catch (IOException e) {
      return "no /proc/self/status to tell whether this runs as root: " + e;
    }
    if (ipCommand() == null) {
      return "iproute2's ip is not installed (looked for " + IP_CANDIDATES + ")";
    }
    return null;
  }

  private static String ipCommand() {
    for (Path p : IP_CANDIDATES) {
      if (Files.isExecutable(p)) {
        return p.toString();
      }
    }
    return null;
  }

  /**
   * Creates both hosts on a {@code 10.231.N.0/29} no route of this machine covers yet.
   *
   * @throws IOException naming the failed {@code ip} command and its output (no namespaces here: a
   *     container without CAP_SYS_ADMIN), after removing whatever was created
   */
  static NetworkHosts create() throws IOException, InterruptedException {
    String ip = ipCommand();
    if (ip == null) {
      throw new IOException(unavailableReason());
    }
    SecureRandom random = new SecureRandom();
    for (int attempt = 0; attempt < 16; attempt++) {
      int subnet = random.nextInt(256);
      if (!run(List.of(ip, "-4", "route", "show", "to", "match", "10.231." + subnet + ".1"))
          .contains("10.231.")) {
        byte[] b = new byte[2];
        random.nextBytes(b);
        NetworkHosts hosts = new NetworkHosts(ip, subnet, HexFormat.of().formatHex(b));
        try {
          hosts.build();
          return hosts;
        } catch (IOException | InterruptedException | RuntimeException e) {
          hosts.close();
          throw e;
        }
      }
    }
    throw new IOException("every 10.231.N.0/29 tried is routed on this machine already");
  }

  private void build() throws IOException, InterruptedException {
    for (int h = 0; h < 2; h++) {
      String ns = namespaces[h];
      String rootSide = rootLinks[h];
      String hostSide = rootSide + "n";
      String gateway = prefix + (4 * h + 1);
      String address = prefix + (4 * h + 2);
      ipRun("netns", "add", ns);
      created.add(ns);
      ipRun("link", "add", rootSide, "type", "veth", "peer", "name", hostSide);
      createdLinks.add(rootSide);
      ipRun("link", "set", hostSide, "netns", ns);
      ipRun("addr", "add", gateway + "/30", "dev", rootSide);
      ipRun("link", "set", rootSide, "up");
      ipRun("-n", ns, "link", "set", "lo", "up");
      ipRun("-n", ns, "addr", "add", address + "/30", "dev", hostSide);
      ipRun("-n", ns, "link", "set", hostSide, "up");
      ipRun("-n", ns, "route", "add", "default", "via", gateway);
    }
  }

  /** Where PostgreSQL listens: the root side of host 1's pair. */
  String databaseAddress() {
    return prefix + "1";
  }

  /** The network both hosts' addresses lie in (CIDR). */
  String clientNetwork() {
    return prefix + "0/29";
  }

  /** The address of host {@code host} (1 or 2). */
  String address(int host) {
    return prefix + (4 * (host - 1) + 2);
  }

  /** The command prefix that runs a program on host {@code host} (it execs it: same pid). */
  List<String> launcher(int host) {
    return List.of(ip, "netns", "exec", namespaces[host - 1]);
  }

  @Override
  public String toString() {
    return "two network hosts " + namespaces[0] + " and " + namespaces[1];
  }

  /** Deletes the veth pairs (both ends) and the namespaces; reports what could not be deleted. */
  @Override
  public void close() throws IOException {
    List<String> failures = new ArrayList<>();
    boolean interrupted = false;
    for (String link : createdLinks) {
      try {
        ipRun("link", "del", link);
      } catch (IOException e) {
        failures.add(e.getMessage());
      } catch (InterruptedException e) {
        interrupted = true; // keep removing: nothing may be left behind
        failures.add("interrupted while deleting " + link);
      }
    }
    createdLinks.clear();
    for (String ns : created) {
      try {
        ipRun("netns", "del", ns);
      } catch (IOException e) {
        failures.add(e.getMessage());
      } catch (InterruptedException e) {
        interrupted = true;
        failures.add("interrupted while deleting " + ns);
      }
    }
    if (interrupted) {
      Thread.currentThread().interrupt();
    }
    created.clear();
    if (!failures.isEmpty()) {
      throw new IOException("could not remove the network hosts: " + failures);
    }
  }

  private void ipRun(String... args) throws IOException, InterruptedException {
    List<String> cmd = new ArrayList<>();
    cmd.add(ip);
    cmd.addAll(List.of(args));
    run(cmd);
  }

  /** Runs {@code cmd}, returning its output; IOException naming it if it fails or hangs. */
  private static String run(List<String> cmd) throws IOException, InterruptedException {
    Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
    if (!p.waitFor(COMMAND_TIMEOUT_S, TimeUnit.SECONDS)) {
      p.destroyForcibly();
      throw new IOException(
          String.join(" ", cmd) + " did not finish in " + COMMAND_TIMEOUT_S + " s");
    }
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).strip();
    if (p.exitValue() != 0) {
      throw new IOException(String.join(" ", cmd) + " exited " + p.exitValue() + ": " + out);
    }
    return out;
  }
}
