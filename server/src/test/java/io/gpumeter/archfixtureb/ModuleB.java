package io.gpumeter.archfixtureb;

import io.gpumeter.archfixturea.ModuleA;

/** ArchitectureTest fixture: the other half of a cycle between two modules. */
public class ModuleB {
  ModuleA other;
}
