// ctest-labels: concurrent
/*
 * Unit tests: two nodes in one process (two runtimes, node ids 1 and 2,
 * QUIC on loopback with certificates from a fresh cluster CA): they join,
 * and send, link, monitor, exit, remote spawn, the global registry and
 * remote introspection work across them; stopping a node gives links
 * noconnection and monitors Down { noconnection }.
 */
#include "support.h"

#include <ftw.h>
#include <stdlib.h>
#include <unistd.h>

#include "cluster/greg.h"
#include "cluster/node.h"
#include "cluster/tls.h"
#include "cluster/wire.h"
#include "rusm/cluster.h"

#define T_ECHO UINT64_C(0x4500000000000001)
#define T_GO UINT64_C(0x4500000000000002)

static char g_dir[64];

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void certs(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/rusm-node-XXXXXX");
  assert_non_null(mkdtemp(g_dir));
  char ca[96], why[256];
  snprintf(ca, sizeof ca, "%s/ca", g_dir);
  assert_int_equal(rusm_cluster_ca_init(ca, why, sizeof why), 0);
  assert_int_equal(
      rusm_cluster_cert_issue(ca, "alpha", g_dir, 1, why, sizeof why), 0);
  assert_int_equal(
      rusm_cluster_cert_issue(ca, "beta", g_dir, 1, why, sizeof why), 0);
  assert_int_equal(
      rusm_cluster_cert_issue(ca, "gamma", g_dir, 1, why, sizeof why), 0);
}

static void quiet(void *ud, const char *line) {
  (void)ud;
  (void)line;
}

static rusm_node *start(rusm_rt *rt, const char *name, const char *seed) {
  char cert[128], key[128], ca[128];
  snprintf(ca, sizeof ca, "%s/ca/ca.pem", g_dir);
  snprintf(cert, sizeof cert, "%s/%s.pem", g_dir, name);
  snprintf(key, sizeof key, "%s/%s.key", g_dir, name);
  rusm_node_opts o;
  rusm_node_opts_init(&o);
  o.name = name;
  o.listen = "127.0.0.1:0";
  o.ca_file = ca;
  o.cert_file = cert;
  o.key_file = key;
  o.seeds = &seed;
  o.n_seeds = seed ? 1 : 0;
  o.log = getenv("RUSM_TEST_NODE_LOG") ? NULL : quiet;
  rusm_node *n = NULL;
  int rc = rusm_node_start(rt, &o, &n);
  if (rc != 0)
    fail_msg("rusm_node_start %s: %s", name, rusm_err_name(rc));
  return n;
}

static rusm_rt *runtime(uint16_t id) {
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = 2;
  o.node_id = id;
  rusm_rt *rt = NULL;
  assert_int_equal(rusm_rt_create(&o, &rt), 0);
  return rt;
}

static bool both_up(void *arg) {
  rusm_node **n = arg;
  rusm_node_member m[4];
  return rusm_node_members(n[0], m, 4) == 2 &&
         rusm_node_members(n[1], m, 4) == 2;
}

/* echo: answers every message to its sender, same tag and payload */
static rusm_next echo_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)state;
  if (m && rusm_msg_tag(m) == T_ECHO)
    rusm_send(rusm_proc_rt(self), rusm_msg_from(m), T_ECHO, rusm_msg_data(m),
              rusm_msg_len(m));
  return rusm_next_wait();
}
static const rusm_stackless_ops echo_ops = {.handle = echo_handle};

static int echo_factory(rusm_rt *rt, void *ud, const void *arg, size_t len,
                        rusm_pid_t *out) {
  (void)ud;
  (void)arg;
  (void)len;
  return rusm_spawn_stackless(rt, &echo_ops, NULL, NULL, out);
}

typedef struct world {
  t_env e; /* alpha's runtime; the test thread is attached to it */
  rusm_rt *rb;
  rusm_node *n[2];
} world;

static void world_up(world *w) {
  certs();
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = 2;
  o.node_id = 1;
  t_start_opts(&w->e, &o);
  w->rb = runtime(2);
  w->n[0] = start(w->e.rt, "alpha", NULL);
  char seed[64];
  snprintf(seed, sizeof seed, "127.0.0.1:%u", rusm_node_port(w->n[0]));
  w->n[1] = start(w->rb, "beta", seed);
  assert_true(t_poll_until(both_up, w->n));
}

static void world_down(world *w) {
  if (w->n[1])
    rusm_node_stop(w->n[1]);
  rusm_node_stop(w->n[0]);
  rusm_rt_destroy(w->rb);
  t_stop(&w->e);
  nftw(g_dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void send_link_monitor(void **state) {
  (void)state;
  world w;
  world_up(&w);
  rusm_pid_t echo;
  assert_int_equal(rusm_spawn_stackless(w.rb, &echo_ops, NULL, NULL, &echo), 0);
  assert_int_equal(rusm_pid_node(echo), 2);
  /* send there and back */
  assert_int_equal(rusm_send(w.e.rt, echo, T_ECHO, "ping", 4), 0);
  rusm_msg *m = t_recv_tag(&w.e, T_ECHO);
  assert_true(rusm_msg_from(m) == echo);
  assert_int_equal(rusm_msg_len(m), 4);
  assert_memory_equal(rusm_msg_data(m), "ping", 4);
  rusm_msg_free(m);
  /* monitor + kill from here: Down killed */
  rusm_ref ref;
  assert_int_equal(rusm_monitor(w.e.me, echo, &ref), 0);
  assert_int_equal(rusm_kill(w.e.rt, echo), 0);
  m = t_recv_tag(&w.e, RUSM_TAG_DOWN);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.ref == ref && d.pid == echo);
  assert_int_equal(d.reason.code, RUSM_EXIT_KILLED);
  rusm_msg_free(m);
  /* a monitor on a dead remote pid: Down noproc */
  assert_int_equal(rusm_monitor(w.e.me, echo, &ref), 0);
  m = t_recv_tag(&w.e, RUSM_TAG_DOWN);
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_int_equal(d.reason.code, RUSM_EXIT_NOPROC);
  rusm_msg_free(m);
  /* link + exit with a custom reason: trapped Exit */
  assert_int_equal(rusm_spawn_stackless(w.rb, &echo_ops, NULL, NULL, &echo), 0);
  rusm_trap_exit(w.e.me, true);
  assert_int_equal(rusm_link(w.e.me, echo), 0);
  /* the echo answers after the link arrived: links are in place */
  assert_int_equal(rusm_send(w.e.rt, echo, T_ECHO, "x", 1), 0);
  rusm_msg_free(t_recv_tag(&w.e, T_ECHO));
  assert_int_equal(rusm_exit(w.e.rt, echo, rusm_reason_str("boom")), 0);
  m = t_recv_tag(&w.e, RUSM_TAG_EXIT);
  rusm_exit_info x;
  assert_int_equal(rusm_msg_exit(m, &x), 0);
  assert_true(x.from == echo);
  assert_int_equal(x.reason.code, RUSM_EXIT_CUSTOM);
  assert_int_equal(x.reason.len, 4);
  rusm_msg_free(m);
  world_down(&w);
}

static void lost_node_noconnection(void **state) {
  (void)state;
  world w;
  world_up(&w);
  rusm_pid_t a, b;
  assert_int_equal(rusm_spawn_stackless(w.rb, &echo_ops, NULL, NULL, &a), 0);
  assert_int_equal(rusm_spawn_stackless(w.rb, &echo_ops, NULL, NULL, &b), 0);
  rusm_trap_exit(w.e.me, true);
  assert_int_equal(rusm_link(w.e.me, a), 0);
  rusm_ref ref;
  assert_int_equal(rusm_monitor(w.e.me, b, &ref), 0);
  assert_int_equal(rusm_send(w.e.rt, b, T_ECHO, "x", 1), 0);
  rusm_msg_free(t_recv_tag(&w.e, T_ECHO)); /* link and monitor arrived */
  assert_int_equal(rusm_node_subscribe(w.n[0], w.e.pid), 0);
  rusm_node_stop(w.n[1]);
  w.n[1] = NULL;
  rusm_msg *m = t_recv_tag(&w.e, RUSM_TAG_EXIT);
  rusm_exit_info x;
  assert_int_equal(rusm_msg_exit(m, &x), 0);
  assert_true(x.from == a);
  assert_int_equal(x.reason.code, RUSM_EXIT_NOCONNECTION);
  rusm_msg_free(m);
  m = t_recv_tag(&w.e, RUSM_TAG_DOWN);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.ref == ref && d.pid == b);
  assert_int_equal(d.reason.code, RUSM_EXIT_NOCONNECTION);
  rusm_msg_free(m);
  m = t_recv_tag(&w.e, RUSM_TAG_NODEDOWN);
  assert_int_equal(rusm_msg_len(m), 4);
  assert_memory_equal(rusm_msg_data(m), "beta", 4);
  rusm_msg_free(m);
  /* a send to the gone node is dropped, not an error */
  assert_int_equal(rusm_send(w.e.rt, a, T_ECHO, "x", 1), 0);
  world_down(&w);
}

static bool global_seen(void *arg) {
  world *w = arg;
  return rusm_whereis_global(w->n[0], "echo") != RUSM_PID_NONE;
}

static bool global_gone(void *arg) {
  world *w = arg;
  return rusm_whereis_global(w->n[0], "echo") == RUSM_PID_NONE;
}

static void global_registry(void **state) {
  (void)state;
  world w;
  world_up(&w);
  rusm_pid_t echo;
  assert_int_equal(rusm_spawn_stackless(w.rb, &echo_ops, NULL, NULL, &echo), 0);
  assert_int_equal(rusm_register_global(w.n[1], "echo", echo), 0);
  assert_int_equal(rusm_register_global(w.n[1], "echo", echo), RUSM_EEXIST);
  assert_true(t_poll_until(global_seen, &w));
  assert_true(rusm_whereis_global(w.n[0], "echo") == echo);
  /* taken cluster-wide */
  assert_int_equal(rusm_register_global(w.n[0], "echo", w.e.pid), RUSM_EEXIST);
  assert_int_equal(rusm_send_global(w.n[0], "echo", T_ECHO, "g", 1), 0);
  rusm_msg *m = t_recv_tag(&w.e, T_ECHO);
  assert_true(rusm_msg_from(m) == echo);
  rusm_msg_free(m);
  assert_int_equal(rusm_send_global(w.n[0], "nobody", T_ECHO, "g", 1),
                   RUSM_ENOTFOUND);
  /* released when the process exits */
  assert_int_equal(rusm_kill(w.rb, echo), 0);
  assert_true(t_poll_until(global_gone, &w));
  world_down(&w);
}

static int t_sign(void *ctx, const uint8_t *msg, size_t n, uint8_t *sig,
                  size_t *sig_len) {
  return rusm__tls_sign(ctx, msg, n, sig, sig_len);
}

static bool t_verify(void *ctx, const char *host, const uint8_t *proof,
                     size_t plen, const uint8_t *msg, size_t n,
                     const uint8_t *sig, size_t slen) {
  return rusm__tls_verify_signed(ctx, host, proof, plen, msg, n, sig, slen);
}

static bool rejected(void *arg) {
  world *w = arg;
  rusm_node_stats st;
  rusm_node_stats_get(w->n[0], &st);
  return st.claims_rejected >= 1;
}

/* beta, authenticated, claims a name for a process it does not host (one
 * of alpha's): alpha rejects the claim and counts it. */
static void forged_claim_rejected(void **state) {
  (void)state;
  world w;
  world_up(&w);
  char ca[128], cert[128], key[128], why[256];
  snprintf(ca, sizeof ca, "%s/ca/ca.pem", g_dir);
  snprintf(cert, sizeof cert, "%s/beta.pem", g_dir);
  snprintf(key, sizeof key, "%s/beta.key", g_dir);
  rusm__tls_creds *creds = NULL;
  assert_int_equal(rusm__tls_creds_load(ca, cert, key, &creds, why, sizeof why),
                   0);
  const uint8_t *der;
  size_t der_len;
  rusm__tls_own_cert_der(creds, &der, &der_len);
  /* a registry that signs as beta but takes pids of node 1 */
  rusm__greg_config gc = {.node_name = "beta",
                          .node_id = 1,
                          .boot_id = 7,
                          .proof = der,
                          .proof_len = der_len,
                          .sign = t_sign,
                          .verify = t_verify,
                          .crypto_ctx = creds};
  rusm__greg *g = NULL;
  assert_int_equal(rusm__greg_new(&gc, &g), 0);
  assert_int_equal(rusm__greg_register(g, "stolen", w.e.pid), 0);
  rusm__greg_transmit t;
  assert_true(rusm__greg_poll_transmit(g, &t));
  assert_int_equal(
      rusm__node_inject(w.n[1], "alpha", RUSM__WIRE_GREG, t.data, t.len), 0);
  rusm__greg_transmit_free(&t);
  assert_true(t_poll_until(rejected, &w));
  assert_true(rusm_whereis_global(w.n[0], "stolen") == RUSM_PID_NONE);
  /* the connection survives a rejected claim: traffic still flows */
  rusm_pid_t echo;
  assert_int_equal(rusm_spawn_stackless(w.rb, &echo_ops, NULL, NULL, &echo), 0);
  assert_int_equal(rusm_send(w.e.rt, echo, T_ECHO, "x", 1), 0);
  rusm_msg_free(t_recv_tag(&w.e, T_ECHO));
  rusm__greg_free(g);
  rusm__tls_creds_free(creds);
  world_down(&w);
}

static bool bad_frame_seen(void *arg) {
  world *w = arg;
  rusm_node_stats st;
  rusm_node_stats_get(w->n[0], &st);
  return st.bad_frames >= 1;
}

/* A corrupt frame closes that connection (the peer is down for us, with
 * noconnection), never the node; the nodes then connect again. */
static void malformed_frame_closes_connection(void **state) {
  (void)state;
  world w;
  world_up(&w);
  rusm_pid_t echo;
  assert_int_equal(rusm_spawn_stackless(w.rb, &echo_ops, NULL, NULL, &echo), 0);
  rusm_ref ref;
  assert_int_equal(rusm_monitor(w.e.me, echo, &ref), 0);
  assert_int_equal(rusm_send(w.e.rt, echo, T_ECHO, "x", 1), 0);
  rusm_msg_free(t_recv_tag(&w.e, T_ECHO));
  /* a header announcing a body past every limit */
  const uint8_t junk[] = {
      RUSM__WIRE_MAGIC, 1, RUSM__WIRE_SEND, 0, 0xff, 0xff, 0xff, 0x7f};
  assert_int_equal(rusm__node_inject_raw(w.n[1], "alpha", junk, sizeof junk),
                   0);
  rusm_msg *m = t_recv_tag(&w.e, RUSM_TAG_DOWN);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_int_equal(d.reason.code, RUSM_EXIT_NOCONNECTION);
  rusm_msg_free(m);
  assert_true(t_poll_until(bad_frame_seen, &w));
  /* both nodes still run, and meet again */
  assert_true(t_poll_until(both_up, w.n));
  assert_int_equal(rusm_send(w.e.rt, echo, T_ECHO, "y", 1), 0);
  m = t_recv_tag(&w.e, T_ECHO);
  assert_memory_equal(rusm_msg_data(m), "y", 1);
  rusm_msg_free(m);
  world_down(&w);
}

static bool three_up(void *arg) {
  rusm_node **n = arg;
  rusm_node_member m[4];
  for (int i = 0; i < 3; i++)
    if (rusm_node_members(n[i], m, 4) != 3)
      return false;
  return true;
}

/* gamma joins through beta only: membership tells everyone, and every
 * pair connects (alpha learns gamma from gossip and dials it). */
static void three_nodes_converge(void **state) {
  (void)state;
  world w;
  world_up(&w);
  rusm_rt *rc = runtime(3);
  char seed[64];
  snprintf(seed, sizeof seed, "127.0.0.1:%u", rusm_node_port(w.n[1]));
  rusm_node *all[3] = {w.n[0], w.n[1], NULL};
  all[2] = start(rc, "gamma", seed);
  assert_true(t_poll_until(three_up, all));
  assert_int_equal(rusm_node_id_of(w.n[0], "gamma"), 3);
  /* alpha -> gamma directly */
  rusm_pid_t echo;
  assert_int_equal(rusm_spawn_stackless(rc, &echo_ops, NULL, NULL, &echo), 0);
  assert_int_equal(rusm_send(w.e.rt, echo, T_ECHO, "3", 1), 0);
  rusm_msg *m = t_recv_tag(&w.e, T_ECHO);
  assert_true(rusm_msg_from(m) == echo);
  rusm_msg_free(m);
  rusm_node_stop(all[2]);
  rusm_rt_destroy(rc);
  world_down(&w);
}

/* A request in flight when its peer goes down fails at once (here with
 * no deadline: it would hang if the loss did not answer it). */
static void request_fails_when_peer_lost(void **state) {
  (void)state;
  world w;
  world_up(&w);
  assert_int_equal(rusm_node_factory(w.n[1], "echo", echo_factory, NULL), 0);
  /* garbage ahead of the request on the stream: beta closes on it */
  const uint8_t junk[] = {0, 0, 0, 0, 0, 0, 0, 0};
  assert_int_equal(rusm__node_inject_raw(w.n[0], "beta", junk, sizeof junk), 0);
  rusm_pid_t child = 0;
  int rc = rusm_spawn_on(w.e.me, "beta", "echo", NULL, 0, 0, -1, &child, NULL);
  assert_int_equal(rc, RUSM_ENODE_DOWN);
  world_down(&w);
}

static void remote_spawn_and_attach(void **state) {
  (void)state;
  world w;
  world_up(&w);
  assert_int_equal(rusm_node_factory(w.n[1], "echo", echo_factory, NULL), 0);
  rusm_pid_t child = 0;
  assert_int_equal(rusm_spawn_on(w.e.me, "beta", "nope", NULL, 0, 0, T_GUARD_MS,
                                 &child, NULL),
                   RUSM_ENOFACTORY);
  assert_int_equal(rusm_spawn_on(w.e.me, "gamma", "echo", NULL, 0, 0,
                                 T_GUARD_MS, &child, NULL),
                   RUSM_ENODE_DOWN);
  rusm_ref ref = 0;
  assert_int_equal(rusm_spawn_on(w.e.me, "beta", "echo", "arg", 3,
                                 RUSM_SPAWN_LINK | RUSM_SPAWN_MONITOR,
                                 T_GUARD_MS, &child, &ref),
                   0);
  assert_int_equal(rusm_pid_node(child), 2);
  assert_true(ref != 0);
  /* live attach: the remote node's processes and one's details */
  rusm_obs_proc procs[64];
  size_t total = 0;
  int k = rusm_node_processes(w.e.me, "beta", 0, procs, 64, &total, T_GUARD_MS);
  assert_true(k >= 1);
  bool found = false;
  for (int i = 0; i < k; i++)
    found |= procs[i].pid == child;
  assert_true(found);
  rusm_obs_proc one;
  assert_int_equal(rusm_node_process_info(w.e.me, child, &one, T_GUARD_MS), 0);
  assert_true(one.pid == child);
  /* linked and monitored from its first instant */
  rusm_trap_exit(w.e.me, true);
  assert_int_equal(rusm_kill(w.rb, child), 0);
  rusm_msg *m = t_recv_tag(&w.e, RUSM_TAG_EXIT);
  rusm_exit_info x;
  assert_int_equal(rusm_msg_exit(m, &x), 0);
  assert_true(x.from == child);
  assert_int_equal(x.reason.code, RUSM_EXIT_KILLED);
  rusm_msg_free(m);
  m = t_recv_tag(&w.e, RUSM_TAG_DOWN);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.ref == ref && d.pid == child);
  rusm_msg_free(m);
  assert_int_equal(rusm_node_process_info(w.e.me, child, &one, T_GUARD_MS),
                   RUSM_ENOPROC);
  world_down(&w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(send_link_monitor),
      cmocka_unit_test(three_nodes_converge),
      cmocka_unit_test(lost_node_noconnection),
      cmocka_unit_test(global_registry),
      cmocka_unit_test(remote_spawn_and_attach),
      cmocka_unit_test(forged_claim_rejected),
      cmocka_unit_test(malformed_frame_closes_connection),
      cmocka_unit_test(request_fails_when_peer_lost),
  };
  return t_run("cluster_node", tests, sizeof tests / sizeof tests[0]);
}
