package io.gpumeter.archfixturea;

import io.gpumeter.archfixtureb.ModuleB;

/** ArchitectureTest fixture: one half of a cycle between two modules. */
public class ModuleA {
  ModuleB other;
}
