package io.gpumeter.billing.ledger;

import java.io.EOFException;
import java.net.ConnectException;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.sql.SQLException;
import java.sql.SQLRecoverableException;
import java.sql.SQLTransientException;
import java.util.concurrent.TimeoutException;

/**
 * Which failures of a ledger write are worth retrying at once: the connection or the server went
 * away or timed out, so the same batch may succeed a moment later. A record error ({@link
 * LedgerWriteException#isRecordError()}, SQLState class 22 or 23) never is: it would fail again.
 */
final class TransientErrors {
  private TransientErrors() {}

  /**
   * True for: SQLState class 08 (connection exception), 57P01/57P02/57P03 (admin or crash shutdown,
   * cannot connect now), 57014 (statement timeout or cancel), 53300 (too many connections),
   * 40001/40P01 (serialization failure, deadlock), 55P03 (lock not available); {@link
   * SQLTransientException} (HikariCP's "connection is not available, request timed out") and {@link
   * SQLRecoverableException}; and socket errors and timeouts anywhere in the cause chain.
   */
  public static boolean isTransient(Throwable e) {
    for (Throwable t = e; t != null; t = t.getCause()) {
      if (t instanceof LedgerWriteException lwe && lwe.isRecordError()) {
        return false;
      }
      if (t instanceof SQLTransientException || t instanceof SQLRecoverableException) {
        return true;
      }
      if (t instanceof SQLException s && isTransientState(s.getSQLState())) {
        return true;
      }
      if (t instanceof ConnectException
          || t instanceof SocketTimeoutException
          || t instanceof SocketException
          || t instanceof EOFException
          || t instanceof TimeoutException) {
        return true;
      }
      if (t.getCause() == t) {
        break;
      }
    }
    return false;
  }

  static boolean isTransientState(String state) {
    if (state == null) {
      return false;
    }
    return state.startsWith("08")
        || state.equals("57P01")
        || state.equals("57P02")
        || state.equals("57P03")
        || state.equals("57014")
        || state.equals("53300")
        || state.equals("40001")
        || state.equals("40P01")
        || state.equals("55P03");
  }
}
