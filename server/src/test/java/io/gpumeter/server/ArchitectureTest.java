package io.gpumeter.server;

import static com.tngtech.archunit.base.DescribedPredicate.not;
import static com.tngtech.archunit.core.domain.JavaClass.Predicates.belongToAnyOf;
import static com.tngtech.archunit.core.domain.JavaClass.Predicates.resideInAPackage;
import static com.tngtech.archunit.lang.syntax.ArchRuleDefinition.noClasses;
import static com.tngtech.archunit.library.dependencies.SlicesRuleDefinition.slices;
import static org.assertj.core.api.Assertions.assertThat;

import com.tngtech.archunit.core.domain.Dependency;
import com.tngtech.archunit.core.domain.JavaClass;
import com.tngtech.archunit.core.domain.JavaClasses;
import com.tngtech.archunit.core.importer.ClassFileImporter;
import com.tngtech.archunit.core.importer.ImportOption;
import com.tngtech.archunit.lang.ArchRule;
import io.gpumeter.billing.Billing;
import io.gpumeter.billing.BillingAdmin;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.keys.ApiKeys;
import io.gpumeter.billing.reconcile.Reconciliation;
import io.gpumeter.billing.usage.UsageQueries;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;

/**
 * The module tree, {@code docs/DESIGN.md} and the code agree. The production classes of every
 * module on the server's classpath are checked (metering, model-store, batching, billing-api,
 * server; benchmarks is built after the server and is not on its classpath). {@link RulesCanFail}
 * shows each rule failing on a small set of fixture classes that break it.
 */
class ArchitectureTest {

  /** Module (as named in DESIGN.md) → its root package. */
  static final Map<String, String> MODULES = new LinkedHashMap<>();

  static {
    MODULES.put("metering", "io.gpumeter.metering");
    MODULES.put("model-store", "io.gpumeter.model");
    MODULES.put("batching", "io.gpumeter.batching");
    MODULES.put("billing-api", "io.gpumeter.billing");
    MODULES.put("server", "io.gpumeter.server");
    MODULES.put("benchmarks", "io.gpumeter.benchmarks");
  }

  /** What server may use of billing-api besides its root package. */
  static final Class<?>[] BILLING_API_BEYOND_ROOT = {
    ApiKeys.class, UsageQueries.class, Reconciliation.class, Accounting.class
  };

  /** Cycles between modules ({@code io.gpumeter.X}). */
  static final ArchRule NO_MODULE_CYCLES =
      slices().matching("io.gpumeter.(*)..").should().beFreeOfCycles();

  /** Cycles between the sub-packages of a module ({@code io.gpumeter.billing.db}, ...). */
  static final ArchRule NO_SUBPACKAGE_CYCLES =
      slices().matching("io.gpumeter.(*).(*)..").should().beFreeOfCycles();

  /**
   * billing-api's root package is its API and facade. The sub-packages may use the API types
   * (configuration, values, exceptions) but not the facade that wires them, and those API types use
   * no sub-package: so facade → sub-packages → API types, never back.
   */
  static final ArchRule BILLING_SUBPACKAGES_DO_NOT_USE_THE_FACADE =
      noClasses()
          .that()
          .resideInAPackage("io.gpumeter.billing.*..")
          .should()
          .dependOnClassesThat()
          .belongToAnyOf(Billing.class, BillingAdmin.class);

  static final ArchRule BILLING_API_TYPES_DO_NOT_USE_SUBPACKAGES =
      noClasses()
          .that()
          .resideInAPackage("io.gpumeter.billing")
          .and(not(belongToAnyOf(Billing.class, BillingAdmin.class)))
          .should()
          .dependOnClassesThat()
          .resideInAPackage("io.gpumeter.billing.*..");

  static final ArchRule SERVER_USES_NO_JDBC =
      noClasses()
          .that()
          .resideInAPackage("io.gpumeter.server..")
          .should()
          .dependOnClassesThat()
          .resideInAnyPackage("java.sql..", "javax.sql..");

  static final ArchRule SERVER_USES_ONLY_BILLING_API =
      noClasses()
          .that()
          .resideInAPackage("io.gpumeter.server..")
          .should()
          .dependOnClassesThat(
              resideInAPackage("io.gpumeter.billing.*..")
                  .and(not(belongToAnyOf(BILLING_API_BEYOND_ROOT))))
          .because("billing-api's sub-packages are its machinery (db, ledger, retention, ...)");

  static final ArchRule BATCHING_AND_METERING_USE_NO_NETTY_OR_JDBC =
      noClasses()
          .that()
          .resideInAnyPackage("io.gpumeter.batching..", "io.gpumeter.metering..")
          .should()
          .dependOnClassesThat()
          .resideInAnyPackage("io.netty..", "java.sql..", "javax.sql..");

  static JavaClasses production;

  @BeforeAll
  static void importClasses() {
    production =
        new ClassFileImporter()
            .withImportOption(ImportOption.Predefined.DO_NOT_INCLUDE_TESTS)
            .importPackages("io.gpumeter..");
    // every module on the classpath was found, so the rules below check something
    for (String module : List.of("metering", "model-store", "batching", "billing-api", "server")) {
      String root = MODULES.get(module);
      assertThat(production.stream().anyMatch(c -> c.getPackageName().startsWith(root)))
          .as("classes of %s (%s) imported", module, root)
          .isTrue();
    }
  }

  @Test
  void noPackageCycles() {
    NO_MODULE_CYCLES.check(production);
    NO_SUBPACKAGE_CYCLES.check(production);
    BILLING_SUBPACKAGES_DO_NOT_USE_THE_FACADE.check(production);
    BILLING_API_TYPES_DO_NOT_USE_SUBPACKAGES.check(production);
  }

  @Test
  void moduleEdgesAreTheOnesInDesignMd() throws IOException {
    Set<String> allowed = allowedEdges(designMd());
    assertThat(allowed).as("edges parsed from docs/DESIGN.md").isNotEmpty();
    for (String edge : allowed) {
      String[] ends = edge.split(" -> ");
      assertThat(MODULES).as("modules named in %s", edge).containsKeys(ends[0], ends[1]);
    }
    assertThat(edgeViolations(production, allowed)).isEmpty();
  }

  @Test
  void serverUsesNoJdbcAndNoBillingInternals() {
    SERVER_USES_NO_JDBC.check(production);
    SERVER_USES_ONLY_BILLING_API.check(production);
  }

  @Test
  void batchingAndMeteringUseNoNettyOrJdbc() {
    BATCHING_AND_METERING_USE_NO_NETTY_OR_JDBC.check(production);
  }

  /** Each rule, run on fixture classes that break it, reports the break. */
  @Nested
  class RulesCanFail {
    @Test
    void aModuleCycle() {
      JavaClasses fixture =
          new ClassFileImporter()
              .importClasses(
                  io.gpumeter.archfixturea.ModuleA.class, io.gpumeter.archfixtureb.ModuleB.class);
      assertThat(NO_MODULE_CYCLES.evaluate(fixture).hasViolation()).isTrue();
    }

    @Test
    void aSubPackageCycle() {
      JavaClasses fixture =
          new ClassFileImporter()
              .importClasses(
                  io.gpumeter.billing.archfixture1.Left.class,
                  io.gpumeter.billing.archfixture2.Right.class);
      assertThat(NO_SUBPACKAGE_CYCLES.evaluate(fixture).hasViolation()).isTrue();
      assertThat(NO_MODULE_CYCLES.evaluate(fixture).hasViolation()).isFalse();
    }

    @Test
    void aSubPackageUsingTheFacade() {
      JavaClasses fixture =
          new ClassFileImporter().importClasses(io.gpumeter.billing.archfixture1.Left.class);
      assertThat(BILLING_SUBPACKAGES_DO_NOT_USE_THE_FACADE.evaluate(fixture).hasViolation())
          .isTrue();
    }

    @Test
    void anApiTypeUsingASubPackage() {
      JavaClasses fixture =
          new ClassFileImporter().importClasses(io.gpumeter.billing.ArchFixtureApiType.class);
      assertThat(BILLING_API_TYPES_DO_NOT_USE_SUBPACKAGES.evaluate(fixture).hasViolation())
          .isTrue();
    }

    @Test
    void serverUsingJdbcOrBillingInternals() {
      JavaClasses jdbc =
          new ClassFileImporter().importClasses(io.gpumeter.server.archfixture.UsesJdbc.class);
      assertThat(SERVER_USES_NO_JDBC.evaluate(jdbc).hasViolation()).isTrue();
      JavaClasses internals =
          new ClassFileImporter()
              .importClasses(io.gpumeter.server.archfixture.UsesBillingInternals.class);
      assertThat(SERVER_USES_ONLY_BILLING_API.evaluate(internals).hasViolation()).isTrue();
      // the explicitly public API types are allowed
      JavaClasses api =
          new ClassFileImporter()
              .importClasses(io.gpumeter.server.archfixture.UsesBillingApi.class);
      assertThat(SERVER_USES_ONLY_BILLING_API.evaluate(api).hasViolation()).isFalse();
    }

    @Test
    void batchingOrMeteringUsingNettyOrJdbc() {
      JavaClasses netty =
          new ClassFileImporter().importClasses(io.gpumeter.batching.archfixture.UsesNetty.class);
      assertThat(BATCHING_AND_METERING_USE_NO_NETTY_OR_JDBC.evaluate(netty).hasViolation())
          .isTrue();
      JavaClasses jdbc =
          new ClassFileImporter().importClasses(io.gpumeter.metering.archfixture.UsesJdbc.class);
      assertThat(BATCHING_AND_METERING_USE_NO_NETTY_OR_JDBC.evaluate(jdbc).hasViolation()).isTrue();
    }

    @Test
    void anEdgeMissingFromDesignMd() throws IOException {
      Set<String> allowed = allowedEdges(designMd());
      assertThat(allowed).contains("server -> billing-api");
      allowed.remove("server -> billing-api");
      assertThat(edgeViolations(production, allowed))
          .isNotEmpty()
          .allMatch(v -> v.startsWith("server -> billing-api: "));
    }

    @Test
    void theModulesBlockIsParsedFromTheFencedBlockOnly() {
      String md =
          "# t\n\nserver -> metering in prose\n\n## Module graph\n\n```modules\n"
              + "a -> b\n\n  c -> d  \n```\n\n```text\ne -> f\n```\n";
      assertThat(allowedEdges(md)).containsExactly("a -> b", "c -> d");
    }
  }

  /** docs/DESIGN.md, found from the working directory (the module's folder under Maven). */
  static String designMd() throws IOException {
    for (Path dir = Path.of("").toAbsolutePath(); dir != null; dir = dir.getParent()) {
      Path design = dir.resolve("docs").resolve("DESIGN.md");
      if (Files.isRegularFile(design) && Files.isRegularFile(dir.resolve("pom.xml"))) {
        return Files.readString(design);
      }
    }
    throw new AssertionError(
        "no docs/DESIGN.md in " + Path.of("").toAbsolutePath() + " or a folder above it");
  }

  /** The lines {@code from -> to} of the fenced block tagged {@code modules}. */
  static Set<String> allowedEdges(String markdown) {
    Set<String> edges = new LinkedHashSet<>();
    boolean in = false;
    boolean seen = false;
    for (String line : markdown.split("\n", -1)) {
      String t = line.strip();
      if (!in && t.equals("```modules")) {
        in = true;
        seen = true;
      } else if (in && t.startsWith("```")) {
        in = false;
      } else if (in && !t.isEmpty()) {
        String[] ends = t.split("\\s*->\\s*");
        if (ends.length != 2 || ends[0].isEmpty() || ends[1].isEmpty()) {
          throw new AssertionError("not an edge 'from -> to' in the modules block: " + line);
        }
        edges.add(ends[0] + " -> " + ends[1]);
      }
    }
    if (!seen) {
      throw new AssertionError("no ```modules block in docs/DESIGN.md");
    }
    return edges;
  }

  /** Each dependency between two modules that is not an allowed edge, with an example. */
  static List<String> edgeViolations(JavaClasses classes, Set<String> allowed) {
    Map<String, String> firstExample = new LinkedHashMap<>();
    for (JavaClass c : classes) {
      String from = moduleOf(c.getPackageName());
      if (from == null) {
        continue;
      }
      for (Dependency d : c.getDirectDependenciesFromSelf()) {
        String to = moduleOf(d.getTargetClass().getBaseComponentType().getPackageName());
        if (to == null || to.equals(from)) {
          continue;
        }
        String edge = from + " -> " + to;
        if (!allowed.contains(edge)) {
          firstExample.putIfAbsent(edge, d.getDescription());
        }
      }
    }
    List<String> out = new ArrayList<>();
    for (Map.Entry<String, String> e : firstExample.entrySet()) {
      out.add(e.getKey() + ": " + e.getValue());
    }
    return out;
  }

  static String moduleOf(String packageName) {
    for (Map.Entry<String, String> m : MODULES.entrySet()) {
      String root = m.getValue();
      if (packageName.equals(root) || packageName.startsWith(root + ".")) {
        return m.getKey();
      }
    }
    return null;
  }
}
