/*
 * registry.c — the list of scenarios. A new scenario is one file defining
 * its descriptor plus one line here (an explicit table rather than linker
 * sections: objects of a static library that nothing references would be
 * dropped, and their scenarios with them).
 */
#include <string.h>

#include "bench/bench_int.h"

static const rusm_bench_scenario *const scenarios[] = {
    &rusm__bench_spawn_storm,
    &rusm__bench_ping_pong,
    &rusm__bench_fan_in,
    &rusm__bench_idle_memory,
    &rusm__bench_idle_memory_stackful,
    &rusm__bench_cascade,
    &rusm__bench_fault_recovery,
    &rusm__bench_timers,
    &rusm__bench_connection_storm,
    &rusm__bench_connection_scale,
    &rusm__bench_distributed_fanout,
#ifdef RUSM_HAVE_WASM
    &rusm__bench_module_storm,
    &rusm__bench_wasm_ping_pong,
    &rusm__bench_fairness,
    &rusm__bench_wasm_idle_memory,
#endif
};

size_t rusm_bench_count(void) { return sizeof scenarios / sizeof scenarios[0]; }

const rusm_bench_scenario *rusm_bench_at(size_t i) {
  return i < rusm_bench_count() ? scenarios[i] : NULL;
}

const rusm_bench_scenario *rusm_bench_find(const char *name) {
  if (!name)
    return NULL;
  for (size_t i = 0; i < rusm_bench_count(); i++)
    if (strcmp(scenarios[i]->name, name) == 0)
      return scenarios[i];
  return NULL;
}
