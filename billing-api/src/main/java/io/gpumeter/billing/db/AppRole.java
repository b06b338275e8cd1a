package io.gpumeter.billing.db;

import java.sql.Connection;
import java.sql.SQLException;
import java.sql.Statement;
import javax.sql.DataSource;
import org.postgresql.PGConnection;

/**
 * The embedded server's application role, {@code gpumeter_app}: created if missing, then given its
 * password and exactly the rights the server and the tools need, at every start (after the
 * migrations, so new tables are covered).
 *
 * <p>Rights: {@code SELECT, INSERT, UPDATE, DELETE} on the tables of schema {@code public} (the
 * partitions of {@code usage_records} included; the ledger also creates temporary staging tables,
 * which every role may) and {@code USAGE, SELECT} on its sequences; nothing on Flyway's history.
 * Not: {@code CREATE} in the schema, {@code TRUNCATE}, {@code REFERENCES}, {@code TRIGGER}, owning
 * anything, superuser, creating roles or databases, replication. So it cannot drop, alter or create
 * tables; partition maintenance runs as the owner ({@link Database#maintenanceDataSource()}).
 */
final class AppRole {
  private AppRole() {}

  static void grant(DataSource owner, String password) throws SQLException {
    String app = EmbeddedCredentials.APP;
    String ownerRole = EmbeddedCredentials.OWNER;
    try (Connection c = owner.getConnection()) {
      c.setAutoCommit(false);
      try (Statement st = c.createStatement()) {
        st.execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '"
                + app
                + "') THEN CREATE ROLE "
                + app
                + " LOGIN; END IF; END $$");
        st.execute(
            "ALTER ROLE "
                + app
                + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
                + " INHERIT CONNECTION LIMIT -1");
        st.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC");
        st.execute("REVOKE ALL ON SCHEMA public FROM " + app);
        st.execute("GRANT USAGE ON SCHEMA public TO " + app);
        st.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM " + app);
        st.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO " + app);
        st.execute("REVOKE ALL ON TABLE flyway_schema_history FROM " + app);
        st.execute("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO " + app);
        st.execute(
            "ALTER DEFAULT PRIVILEGES FOR ROLE "
                + ownerRole
                + " IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "
                + app);
        st.execute(
            "ALTER DEFAULT PRIVILEGES FOR ROLE "
                + ownerRole
                + " IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO "
                + app);
      }
      c.commit();
      c.setAutoCommit(true);
      // Hashed (SCRAM) by the driver: the password itself never reaches the server or its logs.
      c.unwrap(PGConnection.class).alterUserPassword(app, password.toCharArray(), "scram-sha-256");
    }
  }
}
