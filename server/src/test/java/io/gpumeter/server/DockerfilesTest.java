package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * What can be checked of the images without a Docker engine (there is none here; {@code
 * deploy/docker/check-build.sh} builds them where there is): every {@code COPY} source exists in
 * the build context, every {@code --from} names an earlier stage or an image, the jar copied is the
 * one the Maven build writes, the final stage runs as the non-root user it creates (the one the
 * Kubernetes manifests expect), the port is the server's, and the CUDA image's libtorch version is
 * the one the build's DJL expects and is never downloaded at run time.
 */
class DockerfilesTest {
  private static final Path ROOT = TestServers.repoRoot();
  private static final Pattern USERADD_UID = Pattern.compile("useradd .*--uid (\\d+) (\\S+)");

  record Instruction(String keyword, String args) {}

  @Test
  void theCpuImage() throws Exception {
    check(ROOT.resolve("Dockerfile"));
  }

  @Test
  void theCudaImage() throws Exception {
    Path dockerfile = ROOT.resolve("deploy/docker/Dockerfile.cuda");
    List<List<Instruction>> stages = check(dockerfile);
    List<Instruction> all = parse(Files.readString(dockerfile)); // with the ARGs before FROM
    String pom = Files.readString(ROOT.resolve("pom.xml"));
    Matcher pt = Pattern.compile("<pytorch.native.version>([^<]+)<").matcher(pom);
    assertThat(pt.find()).isTrue();
    assertThat(all).contains(new Instruction("ARG", "PYTORCH_VERSION=" + pt.group(1)));
    // pytorch-jni carries JNI glue for cpu and cu128 only (metering/README.md).
    assertThat(all).contains(new Instruction("ARG", "PYTORCH_FLAVOR=cu128"));
    List<Instruction> last = stages.get(stages.size() - 1);
    String env =
        String.join(
            " ",
            last.stream().filter(i -> i.keyword().equals("ENV")).map(Instruction::args).toList());
    assertThat(env)
        .contains("PYTORCH_LIBRARY_PATH=/opt/libtorch/lib")
        .contains("PYTORCH_FLAVOR=${PYTORCH_FLAVOR}")
        .contains("-Dai.djl.offline=true");
    assertThat(last.get(0).args()).startsWith("${CUDA_IMAGE}");
    assertThat(all.stream().filter(i -> i.keyword().equals("ARG")).map(Instruction::args))
        .anyMatch(a -> a.startsWith("CUDA_IMAGE=nvidia/cuda:12.8"));
  }

  /** The checks every Dockerfile gets; returns its stages. */
  private static List<List<Instruction>> check(Path dockerfile) throws Exception {
    List<List<Instruction>> stages = stages(parse(Files.readString(dockerfile)));
    Set<String> stageNames = new HashSet<>();
    String jarTarget = null;
    for (List<Instruction> stage : stages) {
      for (Instruction i : stage) {
        if (i.keyword().equals("COPY")) {
          List<String> words = new ArrayList<>(List.of(i.args().split("\\s+")));
          String from = null;
          if (words.get(0).startsWith("--from=")) {
            from = words.remove(0).substring("--from=".length());
          }
          List<String> sources = words.subList(0, words.size() - 1);
          String dest = words.get(words.size() - 1);
          if (from == null) {
            for (String src : sources) {
              assertThat(ROOT.resolve(src)).as(dockerfile + ": COPY source").exists();
            }
          } else if (stageNames.contains(from)) {
            for (String src : sources) {
              if (src.endsWith(".jar")) {
                jarTarget = dest;
                assertThat(Path.of(src))
                    .as(dockerfile + ": the jar is the one the Maven build writes")
                    .isEqualTo(Path.of("/src").resolve(shadedJar()));
              } else if (src.startsWith("/src/")) {
                assertThat(ROOT.resolve(src.substring("/src/".length())))
                    .as(dockerfile + ": " + src)
                    .exists();
              }
            }
          } else {
            assertThat(from).as(dockerfile + ": --from names a stage or an image").contains(":");
          }
        }
      }
      String[] from = stage.get(0).args().split("\\s+");
      if (from.length == 3 && from[1].equalsIgnoreCase("AS")) {
        stageNames.add(from[2]);
      }
    }
    List<Instruction> last = stages.get(stages.size() - 1);
    assertThat(jarTarget).as(dockerfile + ": the final image holds the server jar").isNotNull();
    assertThat(last)
        .as(dockerfile + ": the entry point runs the copied jar")
        .contains(new Instruction("ENTRYPOINT", "[\"java\", \"-jar\", \"" + jarTarget + "\"]"));
    // The user: created with uid 1001 (the manifests' runAsUser) and the last USER, not root.
    String uid = null;
    String userName = null;
    String user = null;
    for (Instruction i : last) {
      Matcher m = USERADD_UID.matcher(i.args());
      if (i.keyword().equals("RUN") && m.find()) {
        uid = m.group(1);
        userName = m.group(2);
      }
      if (i.keyword().equals("USER")) {
        user = i.args();
      }
    }
    assertThat(uid).as(dockerfile + ": useradd --uid").isEqualTo("1001");
    assertThat(user).as(dockerfile + ": USER").isIn(uid, userName).isNotIn("root", "0");
    assertThat(String.valueOf(runAsUserOfTheManifests())).isEqualTo(uid);
    assertThat(last)
        .as(dockerfile + ": EXPOSE the server's default port")
        .contains(new Instruction("EXPOSE", ServerConfig.KEYS.get("port")));
    return stages;
  }

  /** server/pom.xml's shade output, relative to the repository root. */
  private static Path shadedJar() throws Exception {
    Matcher m =
        Pattern.compile("<outputFile>\\$\\{project.build.directory}/([^<]+)</outputFile>")
            .matcher(Files.readString(ROOT.resolve("server/pom.xml")));
    assertThat(m.find()).as("the shade plugin's outputFile in server/pom.xml").isTrue();
    return Path.of("server/target", m.group(1));
  }

  private static int runAsUserOfTheManifests() throws Exception {
    Matcher m =
        Pattern.compile("runAsUser: (\\d+)")
            .matcher(Files.readString(ROOT.resolve("deploy/kubernetes/base/statefulset.yaml")));
    assertThat(m.find()).isTrue();
    return Integer.parseInt(m.group(1));
  }

  /** Instructions, with continuation lines joined and comments dropped. */
  static List<Instruction> parse(String text) {
    List<Instruction> out = new ArrayList<>();
    StringBuilder current = new StringBuilder();
    for (String raw : text.split("\n", -1)) {
      String line = raw.strip();
      if (line.startsWith("#") || (line.isEmpty() && current.length() == 0)) {
        continue;
      }
      if (line.endsWith("\\")) {
        current.append(line, 0, line.length() - 1).append(' ');
        continue;
      }
      current.append(line);
      String joined = current.toString().strip().replaceAll("\\s+", " ");
      current.setLength(0);
      if (joined.isEmpty()) {
        continue;
      }
      int space = joined.indexOf(' ');
      out.add(
          new Instruction(
              joined.substring(0, space).toUpperCase(java.util.Locale.ROOT),
              joined.substring(space + 1)));
    }
    return out;
  }

  private static List<List<Instruction>> stages(List<Instruction> all) {
    List<List<Instruction>> stages = new ArrayList<>();
    for (Instruction i : all) {
      if (i.keyword().equals("FROM")) {
        stages.add(new ArrayList<>());
      }
      if (!stages.isEmpty()) {
        stages.get(stages.size() - 1).add(i);
      }
    }
    assertThat(stages).isNotEmpty();
    return stages;
  }
}
