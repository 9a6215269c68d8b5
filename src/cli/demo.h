/*
 * demo.h — a small supervised application for `rusm top` and `rusm
 * dashboard`: something real to observe. A top supervisor ("demo_sup")
 * holds a ticker, a key-value server ("kv"), a pool of workers under a
 * dynamic supervisor that crash now and then (and are restarted), and a
 * client that keeps the server busy.
 */
#ifndef RUSM_CLI_DEMO_H
#define RUSM_CLI_DEMO_H

#include "rusm/otp.h"

typedef struct rusm__demo rusm__demo;

/* Starts the demo in rt from a non-scheduler thread. *out is released with
 * rusm__demo_free after the runtime stopped it (shutdown or destroy). */
int rusm__demo_start(rusm_rt *rt, rusm__demo **out);
void rusm__demo_free(rusm__demo *d);

#endif
