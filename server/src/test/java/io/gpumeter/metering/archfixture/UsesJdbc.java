package io.gpumeter.metering.archfixture;

import javax.sql.DataSource;

/** ArchitectureTest fixture: metering code using JDBC. */
public class UsesJdbc {
  DataSource dataSource;
}
