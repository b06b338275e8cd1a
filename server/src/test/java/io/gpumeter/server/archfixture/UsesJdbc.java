package io.gpumeter.server.archfixture;

import java.sql.Connection;

/** ArchitectureTest fixture: server code using JDBC. */
public class UsesJdbc {
  Connection connection;
}
