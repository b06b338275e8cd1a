package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.gpumeter.batching.StepListener;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.config.ConfigLoader;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.yaml.snakeyaml.Yaml;

/**
 * The Kubernetes manifests in {@code deploy/kubernetes/}: every overlay is rendered with {@code
 * kubectl kustomize}, and the objects are checked against the server itself: the config file in the
 * ConfigMap loads through {@link ServerConfig} (so every key is one the server knows and every
 * value parses), the environment variables name known keys, the probes hit paths and the port a
 * real running server serves, the outbox folder the config names is on the pod's persistent volume,
 * and the shutdown budget covers the drain. Skipped, with the reason, where {@code kubectl} is not
 * installed.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class DeployManifestsTest {
  private static final Path KUBERNETES = TestServers.repoRoot().resolve("deploy/kubernetes");
  private static final String ENV_PREFIX = "GPUMETER_";

  /** What the drain needs after shutdown.grace: the ledger's last commit and the JVM's exit. */
  private static final long DRAIN_MARGIN_SECONDS = 15;

  private static GpumeterServer server;
  private static Client client;

  @BeforeAll
  static void startARealServer() throws Exception {
    assumeTrue(
        kubectl() != null,
        "kubectl is not on the PATH, so the kustomize overlays cannot be rendered here");
    server =
        GpumeterServer.start(TestServers.config("deploy-manifests").build(), StepListener.NONE);
    client = new Client(server.port());
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  @Test
  void everyOverlayRendersObjectsTheServerAgreesWith(@TempDir Path tmp) throws Exception {
    List<Path> overlays;
    try (Stream<Path> s = Files.list(KUBERNETES.resolve("overlays"))) {
      overlays = s.filter(Files::isDirectory).sorted().toList();
    }
    assertThat(overlays.stream().map(p -> p.getFileName().toString()))
        .containsExactlyInAnyOrder("cpu", "gpu");
    for (Path overlay : overlays) {
      checkOverlay(overlay.getFileName().toString(), render(overlay), tmp);
    }
  }

  @Test
  void theProbePathsAreServedAndAnUnknownPathIsNot() throws Exception {
    // The probes' paths, as the manifests name them, on a real server: 200 once it is ready.
    for (String path : List.of("/healthz", "/readyz")) {
      assertThat(client.get(path, null).status()).as(path).isEqualTo(200);
    }
    assertThat(client.get("/no-such-probe", null).status()).isEqualTo(404);
  }

  private static void checkOverlay(String name, List<Map<String, Object>> objects, Path tmp)
      throws IOException {
    Map<String, Map<String, Object>> byKind = new TreeMap<>();
    for (Map<String, Object> o : objects) {
      String kind = (String) o.get("kind");
      if (kind.equals("Service") && name(o).endsWith("-headless")) {
        kind = "HeadlessService";
      }
      assertThat(byKind.put(kind, o)).as(name + ": one " + kind).isNull();
    }
    assertThat(byKind.keySet())
        .as(name)
        .containsExactlyInAnyOrder(
            "ConfigMap",
            "Secret",
            "Service",
            "HeadlessService",
            "StatefulSet",
            "PodDisruptionBudget",
            "ServiceMonitor");

    Map<String, Object> sts = byKind.get("StatefulSet");
    Map<String, Object> spec = map(sts, "spec");
    Map<String, Object> podTemplate = map(spec, "template");
    Map<String, Object> podLabels = map(map(podTemplate, "metadata"), "labels");
    Map<String, Object> pod = map(podTemplate, "spec");
    assertThat(map(map(spec, "selector"), "matchLabels")).isNotEmpty();
    assertThat(podLabels).containsAllEntriesOf(map(map(spec, "selector"), "matchLabels"));
    assertThat(spec.get("serviceName")).isEqualTo(name(byKind.get("HeadlessService")));
    Map<String, Object> container = only(list(pod, "containers"));
    assertThat((String) container.get("image")).as(name + ": image").isNotBlank();

    // The config file: from the ConfigMap, at the path the command line gives, loaded through
    // ServerConfig with the container's environment (secrets resolved from the Secret).
    List<Object> args = list(container, "args");
    int at = args.indexOf("--config");
    assertThat(at).as(name + ": --config in " + args).isNotNegative();
    Path configPath = Path.of((String) args.get(at + 1));
    Map<String, Object> configMap = byKind.get("ConfigMap");
    Map<String, Object> configMount = mountOf(container, pod, configPath, "configMap");
    assertThat(map(configMount, "configMap").get("name")).isEqualTo(name(configMap));
    String fileText = (String) map(configMap, "data").get(configPath.getFileName().toString());
    assertThat(fileText).as(name + ": " + configPath + " in the ConfigMap").isNotNull();
    Properties fileProps = new Properties();
    fileProps.load(new java.io.StringReader(fileText));
    for (String key : fileProps.stringPropertyNames()) {
      assertThat(ServerConfig.KEYS).as(name + ": key in the ConfigMap").containsKey(key);
    }
    Map<String, String> env = environment(container, byKind.get("Secret"), name);
    Path file = tmp.resolve(name + ".properties");
    Files.writeString(file, fileText, StandardCharsets.UTF_8);
    ServerConfig config = ServerConfig.load(file, env, new Properties());
    assertThat(config.dbUrl()).as(name + ": one external ledger").startsWith("jdbc:postgresql:");
    if (name.equals("gpu")) {
      assertThat(config.device()).startsWith("cuda:");
    } else {
      assertThat(config.device()).isEqualTo("cpu");
    }

    // Ports: the container port named http is the server's port; the probes, the Service and the
    // ServiceMonitor all reach it by that name.
    Map<String, Object> port = only(list(container, "ports"));
    assertThat(port.get("name")).isEqualTo("http");
    assertThat(port.get("containerPort")).isEqualTo(config.port());
    Map<String, Object> startup = map(container, "startupProbe");
    Map<String, Object> readiness = map(container, "readinessProbe");
    Map<String, Object> liveness = map(container, "livenessProbe");
    assertThat(map(startup, "httpGet"))
        .containsEntry("path", "/healthz")
        .containsEntry("port", "http");
    assertThat(map(readiness, "httpGet"))
        .containsEntry("path", "/readyz")
        .containsEntry("port", "http");
    assertThat(map(liveness, "httpGet"))
        .containsEntry("path", "/healthz")
        .containsEntry("port", "http");
    // The listener binds after migration, model load and warm-up: give that minutes, not seconds.
    assertThat(seconds(startup, "periodSeconds") * seconds(startup, "failureThreshold"))
        .as(name + ": start-up window in seconds")
        .isGreaterThanOrEqualTo(180);
    Map<String, Object> service = byKind.get("Service");
    assertThat(podLabels).containsAllEntriesOf(map(map(service, "spec"), "selector"));
    Map<String, Object> servicePort = only(list(map(service, "spec"), "ports"));
    assertThat(servicePort).containsEntry("targetPort", "http").containsEntry("name", "http");
    Map<String, Object> monitor = map(byKind.get("ServiceMonitor"), "spec");
    assertThat(map(map(service, "metadata"), "labels"))
        .containsAllEntriesOf(map(map(monitor, "selector"), "matchLabels"));
    Map<String, Object> endpoint = only(list(monitor, "endpoints"));
    assertThat(endpoint).containsEntry("port", "http").containsEntry("path", "/metrics");
    Map<String, Object> pdb = map(byKind.get("PodDisruptionBudget"), "spec");
    assertThat(podLabels).containsAllEntriesOf(map(map(pdb, "selector"), "matchLabels"));
    assertThat(pdb.get("maxUnavailable")).isEqualTo(1);

    // The outbox (and the data folder) on the pod's own persistent volume.
    String claim = (String) map(only(list(spec, "volumeClaimTemplates")), "metadata").get("name");
    Map<String, Object> dataMount = mountCovering(container, config.outboxDir(), name);
    assertThat(dataMount.get("name"))
        .as(name + ": volume of " + config.outboxDir())
        .isEqualTo(claim);
    assertThat(config.dataDir().startsWith(Path.of((String) dataMount.get("mountPath"))))
        .as(name + ": data.dir " + config.dataDir() + " on the volume too")
        .isTrue();

    // Shutdown: preStop, then SIGTERM's drain (shutdown.grace and the ledger) within the grace.
    List<Object> preStop = list(map(map(container, "lifecycle"), "preStop"), "exec", "command");
    assertThat(preStop).hasSize(2).first().isEqualTo("sleep");
    long preStopSeconds = Long.parseLong((String) preStop.get(1));
    long budget = seconds(pod, "terminationGracePeriodSeconds");
    assertThat(budget)
        .as(name + ": terminationGracePeriodSeconds covers preStop + shutdown.grace + drain")
        .isGreaterThanOrEqualTo(
            preStopSeconds + config.shutdownGrace().toSeconds() + DRAIN_MARGIN_SECONDS);

    // The security context the images are built for (user 1001, PostgreSQL never as root).
    assertThat(map(pod, "securityContext")).containsEntry("runAsNonRoot", true);

    // GPU overlay: exactly one GPU per pod, requested and limited.
    Map<String, Object> resources = map(container, "resources");
    if (name.equals("gpu")) {
      assertThat(map(resources, "limits")).containsEntry("nvidia.com/gpu", 1);
      assertThat(map(resources, "requests")).containsEntry("nvidia.com/gpu", 1);
    } else {
      assertThat(map(resources, "limits")).doesNotContainKey("nvidia.com/gpu");
    }
  }

  /** The container's environment, secrets resolved; every GPUMETER_ variable names a known key. */
  private static Map<String, String> environment(
      Map<String, Object> container, Map<String, Object> secret, String overlay) {
    Map<String, String> known = new HashMap<>();
    for (String key : ServerConfig.KEYS.keySet()) {
      known.put(ConfigLoader.envName(key), key);
    }
    Map<String, String> env = new HashMap<>();
    for (Object o : list(container, "env")) {
      @SuppressWarnings("unchecked")
      Map<String, Object> e = (Map<String, Object>) o;
      String name = (String) e.get("name");
      String value;
      if (e.containsKey("valueFrom")) {
        Map<String, Object> ref = map(map(e, "valueFrom"), "secretKeyRef");
        assertThat(ref.get("name")).as(overlay + ": " + name).isEqualTo(name(secret));
        value = (String) map(secret, "stringData").get(ref.get("key"));
        assertThat(value).as(overlay + ": " + name + " from the Secret").isNotNull();
      } else {
        value = String.valueOf(e.get("value"));
      }
      if (name.startsWith(ENV_PREFIX)) {
        assertThat(known)
            .as(overlay + ": environment variable of a ServerConfig key")
            .containsKey(name);
      }
      env.put(name, value);
    }
    assertThat(env).containsKeys("GPUMETER_DB_USER", "GPUMETER_DB_PASSWORD");
    return env;
  }

  /** The volume (of {@code kind}) mounted over {@code path}. */
  private static Map<String, Object> mountOf(
      Map<String, Object> container, Map<String, Object> pod, Path path, String kind) {
    String volume = (String) mountCovering(container, path, kind).get("name");
    for (Object o : list(pod, "volumes")) {
      @SuppressWarnings("unchecked")
      Map<String, Object> v = (Map<String, Object>) o;
      if (volume.equals(v.get("name"))) {
        assertThat(v).as("volume " + volume).containsKey(kind);
        return v;
      }
    }
    throw new AssertionError("no volume " + volume + " in the pod");
  }

  /** The container's mount with the longest mount path that contains {@code path}. */
  private static Map<String, Object> mountCovering(
      Map<String, Object> container, Path path, String what) {
    Map<String, Object> best = null;
    for (Object o : list(container, "volumeMounts")) {
      @SuppressWarnings("unchecked")
      Map<String, Object> m = (Map<String, Object>) o;
      Path mount = Path.of((String) m.get("mountPath"));
      if (path.normalize().startsWith(mount)
          && (best == null
              || mount.getNameCount() > Path.of((String) best.get("mountPath")).getNameCount())) {
        best = m;
      }
    }
    assertThat(best).as(what + ": a volume mounted over " + path).isNotNull();
    return best;
  }

  private static List<Map<String, Object>> render(Path overlay) throws Exception {
    Process p =
        new ProcessBuilder(kubectl(), "kustomize", overlay.toString())
            .redirectErrorStream(true)
            .start();
    byte[] out = p.getInputStream().readAllBytes();
    assertThat(p.waitFor(Duration.ofMinutes(1).toMillis(), TimeUnit.MILLISECONDS)).isTrue();
    String text = new String(out, StandardCharsets.UTF_8);
    assertThat(p.exitValue()).as("kubectl kustomize " + overlay + ":\n" + text).isZero();
    List<Map<String, Object>> objects = new ArrayList<>();
    for (Object doc : new Yaml().loadAll(text)) {
      if (doc != null) {
        @SuppressWarnings("unchecked")
        Map<String, Object> m = (Map<String, Object>) doc;
        objects.add(m);
      }
    }
    return objects;
  }

  private static String kubectl() {
    String path = System.getenv("PATH");
    if (path == null) {
      return null;
    }
    for (String dir : path.split(java.io.File.pathSeparator)) {
      Path candidate = Path.of(dir, "kubectl");
      if (Files.isExecutable(candidate)) {
        return candidate.toString();
      }
    }
    return null;
  }

  private static String name(Map<String, Object> o) {
    return (String) map(o, "metadata").get("name");
  }

  private static long seconds(Map<String, Object> o, String key) {
    Object v = o.get(key);
    assertThat(v).as(key).isInstanceOf(Integer.class);
    return ((Integer) v).longValue();
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> map(Map<String, Object> o, String key) {
    Object v = o.get(key);
    assertThat(v).as(key + " in " + o.keySet()).isInstanceOf(Map.class);
    return (Map<String, Object>) v;
  }

  @SuppressWarnings("unchecked")
  private static List<Object> list(Map<String, Object> o, String... path) {
    Map<String, Object> at = o;
    for (int i = 0; i < path.length - 1; i++) {
      at = map(at, path[i]);
    }
    Object v = at.get(path[path.length - 1]);
    assertThat(v).as(path[path.length - 1] + " in " + at.keySet()).isInstanceOf(List.class);
    return (List<Object>) v;
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> only(List<Object> items) {
    assertThat(items).hasSize(1);
    return (Map<String, Object>) items.get(0);
  }
}
