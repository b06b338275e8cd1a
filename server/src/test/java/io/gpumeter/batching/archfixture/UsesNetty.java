package io.gpumeter.batching.archfixture;

import io.netty.buffer.ByteBuf;

/** ArchitectureTest fixture: batching code using Netty. */
public class UsesNetty {
  ByteBuf buffer;
}
