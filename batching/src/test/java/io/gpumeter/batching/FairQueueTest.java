package io.gpumeter.batching;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

class FairQueueTest {
  private final FairQueue<String> queue = new FairQueue<>();

  private List<String> pollAll() {
    List<String> out = new ArrayList<>();
    String s;
    while ((s = queue.poll()) != null) {
      out.add(s);
    }
    return out;
  }

  @Test
  void keysTakeTurnsAndEachKeyKeepsItsOrder() {
    for (int i = 1; i <= 4; i++) {
      queue.add(1, "a" + i);
    }
    queue.add(2, "b1");
    queue.add(2, "b2");
    queue.add(3, "c1");
    assertThat(queue.size()).isEqualTo(7);
    assertThat(pollAll()).containsExactly("a1", "b1", "c1", "a2", "b2", "a3", "a4");
    assertThat(queue.isEmpty()).isTrue();
    assertThat(queue.poll()).isNull();
  }

  @Test
  void aKeyThatRanDryJoinsTheBackOfTheRingWhenItComesBack() {
    queue.add(1, "a1");
    queue.add(2, "b1");
    queue.add(2, "b2");
    assertThat(queue.poll()).isEqualTo("a1"); // key 1 now has nothing waiting
    queue.add(1, "a2"); // and comes back behind key 2
    assertThat(pollAll()).containsExactly("b1", "a2", "b2");
  }

  @Test
  void removeIfTakesOutMatchesAndKeepsTheTurnsOfTheRest() {
    queue.add(1, "a1-x");
    queue.add(1, "a2");
    queue.add(2, "b1-x");
    queue.add(3, "c1");
    queue.add(3, "c2-x");
    List<String> removed = new ArrayList<>();
    queue.removeIf(s -> s.endsWith("-x"), removed::add);
    assertThat(removed).containsExactlyInAnyOrder("a1-x", "b1-x", "c2-x");
    assertThat(queue.size()).isEqualTo(2);
    // key 2 emptied and left the ring; keys 1 and 3 keep their turns
    assertThat(pollAll()).containsExactly("a2", "c1");
  }

  @Test
  void drainHandsOverEverythingAndEmpties() {
    queue.add(1, "a1");
    queue.add(1, "a2");
    queue.add(2, "b1");
    List<String> drained = new ArrayList<>();
    queue.drain(drained::add);
    assertThat(drained).containsExactlyInAnyOrder("a1", "a2", "b1");
    assertThat(queue.size()).isZero();
    assertThat(queue.poll()).isNull();
    queue.add(2, "b2");
    assertThat(pollAll()).containsExactly("b2");
  }
}
