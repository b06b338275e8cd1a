package io.gpumeter.batching;

import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.Predicate;

/**
 * Waiting requests, queued per API key, with keys taking turns: {@link #poll()} takes the key at
 * the head of a ring, returns that key's oldest item, and puts the key at the back if it has more
 * waiting. A key flooding the queue therefore gets one item per turn, like any other key with work
 * waiting; a key with one item waits at most one turn of every other key.
 *
 * <p>Not thread-safe: the scheduler thread owns it. Adding to a key's empty queue allocates (the
 * boxed key and, the first time, its deque); polling does not.
 *
 * @param <T> the queued items
 */
final class FairQueue<T> {
  private final Map<Long, ArrayDeque<T>> byKey = new HashMap<>();
  private final ArrayDeque<Long> ring = new ArrayDeque<>();
  private int size;

  /** Queues {@code item} behind the other items of {@code key}. */
  void add(long key, T item) {
    Long k = key;
    ArrayDeque<T> q = byKey.get(k);
    if (q == null) {
      q = new ArrayDeque<>();
      byKey.put(k, q);
    }
    if (q.isEmpty()) {
      ring.addLast(k);
    }
    q.addLast(item);
    size++;
  }

  /** The oldest item of the key whose turn it is, or {@code null} if nothing is waiting. */
  T poll() {
    Long key = ring.pollFirst();
    if (key == null) {
      return null;
    }
    ArrayDeque<T> q = byKey.get(key);
    T item = q.pollFirst();
    if (!q.isEmpty()) {
      ring.addLast(key);
    } else {
      byKey.remove(key);
    }
    size--;
    return item;
  }

  /** Items waiting, over all keys. */
  int size() {
    return size;
  }

  boolean isEmpty() {
    return size == 0;
  }

  /**
   * Removes every item that {@code remove} accepts, keeping the order of the others and the turns
   * of the keys still waiting, then hands each removed item to {@code removed}.
   */
  void removeIf(Predicate<? super T> remove, Consumer<? super T> removed) {
    if (size == 0) {
      return;
    }
    for (Iterator<Map.Entry<Long, ArrayDeque<T>>> it = byKey.entrySet().iterator();
        it.hasNext(); ) {
      Map.Entry<Long, ArrayDeque<T>> entry = it.next();
      ArrayDeque<T> q = entry.getValue();
      for (Iterator<T> qi = q.iterator(); qi.hasNext(); ) {
        T item = qi.next();
        if (remove.test(item)) {
          qi.remove();
          size--;
          removed.accept(item);
        }
      }
      if (q.isEmpty()) {
        it.remove();
        ring.remove(entry.getKey());
      }
    }
  }

  /** Empties the queue, handing every item to {@code each} (key by key). */
  void drain(Consumer<? super T> each) {
    for (ArrayDeque<T> q : byKey.values()) {
      for (T item : q) {
        each.accept(item);
      }
    }
    byKey.clear();
    ring.clear();
    size = 0;
  }
}
