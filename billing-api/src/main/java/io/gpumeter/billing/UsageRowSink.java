package io.gpumeter.billing;

import java.io.IOException;

/** Receives the results of a bucketed usage query one by one, in bucket then group order. */
@FunctionalInterface
public interface UsageRowSink {
  /**
   * @throws IOException to stop the query (the client went away); it is rethrown to the caller
   */
  void accept(UsageBucketRow row) throws IOException;
}
