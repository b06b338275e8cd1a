package io.gpumeter.billing;

import java.io.IOException;

/** Receives the results of a bucketed cost query one by one, in bucket then group order. */
@FunctionalInterface
public interface CostRowSink {
  /**
   * @throws IOException to stop the query (the client went away); it is rethrown to the caller
   */
  void accept(CostBucketRow row) throws IOException;
}
