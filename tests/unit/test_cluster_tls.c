/*
 * Unit tests: cluster trust (src/cluster/tls.h) — CA creation and its
 * refusal to overwrite, certificate issue, credential loading and its
 * errors, the verification policy case by case, claim signatures.
 *
 * Everything lives in a mkdtemp directory removed at the end.
 */
#include "support.h"

#include <errno.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/tls.h"

/* The fixture: our CA with nodeA, nodeB, an expired and a not yet valid
 * certificate; a foreign CA with its own "nodeB". */
typedef struct fx {
  char dir[64];
  char ca[128], fca[128], certs[128], fcerts[128];
  rusm__tls_creds *a, *b, *evil, *old, *future;
} fx;

static void path3(char *out, size_t cap, const char *dir, const char *name,
                  const char *ext) {
  int n = snprintf(out, cap, "%s/%s%s", dir, name, ext);
  assert_true(n > 0 && (size_t)n < cap);
}

static rusm__tls_creds *load(const char *ca_dir, const char *dir,
                             const char *node) {
  char ca[256], crt[256], key[256], why[256] = "";
  path3(ca, sizeof ca, ca_dir, "ca", ".pem");
  path3(crt, sizeof crt, dir, node, ".pem");
  path3(key, sizeof key, dir, node, ".key");
  rusm__tls_creds *c = NULL;
  int rc = rusm__tls_creds_load(ca, crt, key, &c, why, sizeof why);
  if (rc != 0)
    fail_msg("load %s: %d %s", node, rc, why);
  return c;
}

static int fx_setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  strcpy(f->dir, "/tmp/rusm-tls-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  path3(f->ca, sizeof f->ca, f->dir, "ca", "");
  path3(f->fca, sizeof f->fca, f->dir, "fca", "");
  path3(f->certs, sizeof f->certs, f->dir, "certs", "");
  path3(f->fcerts, sizeof f->fcerts, f->dir, "fcerts", "");
  char why[256];
  assert_int_equal(rusm__tls_ca_init(f->ca, why, sizeof why), 0);
  assert_int_equal(rusm__tls_ca_init(f->fca, why, sizeof why), 0);
  assert_int_equal(
      rusm__tls_cert_issue(f->ca, "nodeA", f->certs, 30, why, sizeof why), 0);
  assert_int_equal(
      rusm__tls_cert_issue(f->ca, "nodeB", f->certs, 0, why, sizeof why), 0);
  assert_int_equal(
      rusm__tls_cert_issue(f->fca, "nodeB", f->fcerts, 30, why, sizeof why), 0);
  time_t now = time(NULL);
  assert_int_equal(rusm__tls_cert_issue_at(f->ca, "old", f->certs,
                                           now - 10 * 86400, now - 86400, why,
                                           sizeof why),
                   0);
  assert_int_equal(rusm__tls_cert_issue_at(f->ca, "future", f->certs,
                                           now + 86400, now + 10 * 86400, why,
                                           sizeof why),
                   0);
  f->a = load(f->ca, f->certs, "nodeA");
  f->b = load(f->ca, f->certs, "nodeB");
  /* Someone who copied our (public) CA certificate and made a "nodeB" of
   * their own: it trusts our CA, its certificate comes from another. */
  f->evil = load(f->ca, f->fcerts, "nodeB");
  f->old = load(f->ca, f->certs, "old");
  f->future = load(f->ca, f->certs, "future");
  *state = f;
  return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int fx_teardown(void **state) {
  fx *f = *state;
  rusm__tls_creds_free(f->a);
  rusm__tls_creds_free(f->b);
  rusm__tls_creds_free(f->evil);
  rusm__tls_creds_free(f->old);
  rusm__tls_creds_free(f->future);
  nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static mode_t mode_of(const char *path) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return st.st_mode & 0777;
}

static void test_ca_init(void **state) {
  fx *f = *state;
  char p[256], why[256] = "";
  path3(p, sizeof p, f->ca, "ca", ".key");
  assert_int_equal(mode_of(p), 0600);
  path3(p, sizeof p, f->ca, "ca", ".pem");
  assert_int_equal(mode_of(p), 0644);
  /* refuses to overwrite, and says so */
  assert_int_equal(rusm__tls_ca_init(f->ca, why, sizeof why), RUSM_EEXIST);
  assert_non_null(strstr(why, "refusing to overwrite"));
  /* one file alone is enough to refuse */
  char d[128], k[256];
  path3(d, sizeof d, f->dir, "half", "");
  assert_int_equal(mkdir(d, 0700), 0);
  path3(k, sizeof k, d, "ca", ".key");
  FILE *fp = fopen(k, "w");
  assert_non_null(fp);
  fclose(fp);
  assert_int_equal(rusm__tls_ca_init(d, NULL, 0), RUSM_EEXIST);
  path3(k, sizeof k, d, "ca", ".pem");
  assert_int_equal(access(k, F_OK), -1);
  assert_int_equal(rusm__tls_ca_init(NULL, NULL, 0), RUSM_EINVAL);
  assert_int_equal(rusm__tls_ca_init("", NULL, 0), RUSM_EINVAL);
}

static void test_issue(void **state) {
  fx *f = *state;
  char p[256], why[256] = "";
  path3(p, sizeof p, f->certs, "nodeA", ".key");
  assert_int_equal(mode_of(p), 0600);
  path3(p, sizeof p, f->certs, "nodeA", ".pem");
  assert_int_equal(mode_of(p), 0644);
  assert_string_equal(rusm__tls_creds_node(f->a), "nodeA");
  assert_string_equal(rusm__tls_creds_node(f->evil), "nodeB");
  /* no overwrite */
  assert_int_equal(
      rusm__tls_cert_issue(f->ca, "nodeA", f->certs, 30, why, sizeof why),
      RUSM_EEXIST);
  /* names: 1..63 bytes of [A-Za-z0-9._-] */
  char long_name[70];
  memset(long_name, 'x', 64);
  long_name[64] = '\0';
  const char *bad[] = {"", "a b", "a/b", "nodé", long_name, "a:b"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(
        rusm__tls_cert_issue(f->ca, bad[i], f->certs, 30, why, sizeof why),
        RUSM_EINVAL);
  long_name[63] = '\0';
  assert_true(rusm__tls_node_name_valid(long_name));
  assert_true(rusm__tls_node_name_valid("Node_1.zone-a"));
  assert_false(rusm__tls_node_name_valid(NULL));
  /* a CA directory without a CA */
  assert_int_equal(
      rusm__tls_cert_issue(f->certs, "nodeC", f->certs, 30, why, sizeof why),
      RUSM_ENOTFOUND);
  assert_non_null(strstr(why, "ca.pem"));
  /* an empty validity period */
  assert_int_equal(rusm__tls_cert_issue_at(f->ca, "nodeC", f->certs, 100, 100,
                                           why, sizeof why),
                   RUSM_EINVAL);
}

static void test_load_errors(void **state) {
  fx *f = *state;
  char ca[256], crt[256], key[256], okey[256], junk[256], why[256] = "";
  path3(ca, sizeof ca, f->ca, "ca", ".pem");
  path3(crt, sizeof crt, f->certs, "nodeA", ".pem");
  path3(key, sizeof key, f->certs, "nodeA", ".key");
  path3(okey, sizeof okey, f->certs, "nodeB", ".key");
  path3(junk, sizeof junk, f->dir, "junk", ".pem");
  rusm__tls_creds *c = (rusm__tls_creds *)1;
  /* missing */
  assert_int_equal(
      rusm__tls_creds_load(ca, crt, "/nonexistent/k.key", &c, why, sizeof why),
      RUSM_ENOTFOUND);
  assert_null(c);
  assert_non_null(strstr(why, "/nonexistent/k.key"));
  /* mismatched key */
  assert_int_equal(rusm__tls_creds_load(ca, crt, okey, &c, why, sizeof why),
                   RUSM_ETLS_KEY_MISMATCH);
  assert_non_null(strstr(why, "does not match"));
  /* garbage */
  FILE *fp = fopen(junk, "w");
  assert_non_null(fp);
  fputs("-----BEGIN CERTIFICATE-----\nnot base64!\n", fp);
  fclose(fp);
  assert_int_equal(rusm__tls_creds_load(ca, junk, key, &c, why, sizeof why),
                   RUSM_ETLS_BAD_CERT);
  assert_int_equal(rusm__tls_creds_load(ca, crt, junk, &c, why, sizeof why),
                   RUSM_ETLS_BAD_CERT);
  /* a node certificate is no CA */
  assert_int_equal(rusm__tls_creds_load(crt, crt, key, &c, why, sizeof why),
                   RUSM_ETLS_BAD_CERT);
  assert_non_null(strstr(why, "not a CA"));
  /* unreadable (root reads anything: only checked as a user) */
  if (geteuid() != 0) {
    assert_int_equal(chmod(key, 0), 0);
    assert_int_equal(rusm__tls_creds_load(ca, crt, key, &c, why, sizeof why),
                     RUSM_ESYS);
    assert_non_null(strstr(why, "Permission denied"));
    assert_int_equal(chmod(key, 0600), 0);
  }
  /* and without a why buffer */
  assert_int_equal(rusm__tls_creds_load(ca, crt, okey, &c, NULL, 0),
                   RUSM_ETLS_KEY_MISMATCH);
  assert_int_equal(rusm__tls_creds_load(NULL, crt, key, &c, NULL, 0),
                   RUSM_EINVAL);
}

static void own_der(const rusm__tls_creds *c, const uint8_t **der,
                    size_t *len) {
  rusm__tls_own_cert_der(c, der, len);
  assert_non_null(*der);
  assert_true(*len > 100);
}

static void test_policy(void **state) {
  fx *f = *state;
  const uint8_t *der;
  size_t len;
  char name[RUSM__TLS_NAME_MAX + 1], why[256];
  time_t now = time(NULL);

  /* good, with and without an expected name */
  own_der(f->b, &der, &len);
  assert_int_equal(
      rusm__tls_verify_peer(f->a, der, len, NULL, now, name, why, sizeof why),
      0);
  assert_string_equal(name, "nodeB");
  assert_int_equal(rusm__tls_verify_peer(f->a, der, len, "nodeB", now, NULL,
                                         why, sizeof why),
                   0);
  /* wrong name */
  assert_int_equal(rusm__tls_verify_peer(f->a, der, len, "nodeC", now, name,
                                         why, sizeof why),
                   RUSM_ETLS_WRONG_NAME);
  assert_non_null(strstr(why, "nodeC"));
  /* the same certificate once expired, and before it was valid */
  assert_int_equal(rusm__tls_verify_peer(f->a, der, len, NULL,
                                         now + 400 * 86400, NULL, why,
                                         sizeof why),
                   RUSM_ETLS_EXPIRED);
  assert_int_equal(rusm__tls_verify_peer(f->a, der, len, NULL, now - 86400,
                                         NULL, why, sizeof why),
                   RUSM_ETLS_NOT_YET_VALID);
  /* a foreign CA, even under the expected name */
  own_der(f->evil, &der, &len);
  assert_int_equal(rusm__tls_verify_peer(f->a, der, len, "nodeB", now, NULL,
                                         why, sizeof why),
                   RUSM_ETLS_FOREIGN_CA);
  assert_non_null(strstr(why, "foreign CA"));
  /* expired / not yet valid certificates */
  own_der(f->old, &der, &len);
  assert_int_equal(
      rusm__tls_verify_peer(f->a, der, len, NULL, now, NULL, why, sizeof why),
      RUSM_ETLS_EXPIRED);
  assert_non_null(strstr(why, "expired"));
  own_der(f->future, &der, &len);
  assert_int_equal(
      rusm__tls_verify_peer(f->a, der, len, NULL, now, NULL, why, sizeof why),
      RUSM_ETLS_NOT_YET_VALID);
  /* nothing, garbage */
  assert_int_equal(
      rusm__tls_verify_peer(f->a, NULL, 0, NULL, now, NULL, why, sizeof why),
      RUSM_ETLS_NO_CERT);
  uint8_t junk[200];
  memset(junk, 0x30, sizeof junk);
  assert_int_equal(rusm__tls_verify_peer(f->a, junk, sizeof junk, NULL, now,
                                         NULL, why, sizeof why),
                   RUSM_ETLS_BAD_CERT);
  /* configuration checks of our own certificate */
  assert_int_equal(rusm__tls_creds_check(f->a, why, sizeof why), 0);
  assert_int_equal(rusm__tls_creds_check(f->evil, why, sizeof why),
                   RUSM_ETLS_FOREIGN_CA);
  assert_int_equal(rusm__tls_creds_check(f->old, why, sizeof why),
                   RUSM_ETLS_EXPIRED);
  assert_string_equal(rusm__tls_strerror(RUSM_ETLS_FOREIGN_CA),
                      "certificate not issued by the cluster CA");
}

static void test_ca_cert_as_peer(void **state) {
  fx *f = *state;
  /* The CA's own certificate chains to itself but names no node. */
  char p[256], why[256];
  path3(p, sizeof p, f->ca, "ca", ".pem");
  FILE *fp = fopen(p, "r");
  assert_non_null(fp);
  char pem[4096];
  size_t n = fread(pem, 1, sizeof pem - 1, fp);
  fclose(fp);
  pem[n] = '\0';
  /* base64 body between the armour lines, decoded by hand */
  char *b = strchr(pem, '\n') + 1;
  char *e = strstr(b, "-----END");
  assert_non_null(e);
  static const char tbl[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  uint8_t der[2048];
  size_t dl = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (char *q = b; q < e; q++) {
    const char *pos = strchr(tbl, *q);
    if (!pos || !*q)
      continue;
    acc = (acc << 6) | (uint32_t)(pos - tbl);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      der[dl++] = (uint8_t)(acc >> bits);
    }
  }
  assert_int_equal(rusm__tls_verify_peer(f->a, der, dl, NULL, time(NULL), NULL,
                                         why, sizeof why),
                   RUSM_ETLS_BAD_CERT);
}

static void test_sign_verify(void **state) {
  fx *f = *state;
  const uint8_t msg[] = "claim: name=db owner=<1.2.3> seq=7";
  uint8_t sig[RUSM__TLS_SIG_MAX];
  size_t sl = sizeof sig;
  assert_int_equal(rusm__tls_sign(f->a, msg, sizeof msg, sig, &sl), 0);
  assert_true(sl > 0 && sl <= 72);
  const uint8_t *pa, *pe, *po;
  size_t la, le, lo;
  own_der(f->a, &pa, &la);
  own_der(f->evil, &pe, &le);
  own_der(f->old, &po, &lo);

  /* good, checked by another node */
  assert_true(
      rusm__tls_verify_signed(f->b, "nodeA", pa, la, msg, sizeof msg, sig, sl));
  /* tampered message, tampered signature */
  uint8_t m2[sizeof msg];
  memcpy(m2, msg, sizeof msg);
  m2[3] ^= 1;
  assert_false(
      rusm__tls_verify_signed(f->b, "nodeA", pa, la, m2, sizeof m2, sig, sl));
  uint8_t s2[RUSM__TLS_SIG_MAX];
  memcpy(s2, sig, sl);
  s2[sl - 1] ^= 0x40;
  assert_false(
      rusm__tls_verify_signed(f->b, "nodeA", pa, la, msg, sizeof msg, s2, sl));
  /* the proof names another node than the claim's host */
  assert_false(
      rusm__tls_verify_signed(f->b, "nodeB", pa, la, msg, sizeof msg, sig, sl));
  /* a proof from a foreign CA, with a signature its key really made */
  uint8_t se[RUSM__TLS_SIG_MAX];
  size_t sel = sizeof se;
  assert_int_equal(rusm__tls_sign(f->evil, msg, sizeof msg, se, &sel), 0);
  assert_false(
      rusm__tls_verify_signed(f->a, "nodeB", pe, le, msg, sizeof msg, se, sel));
  /* an expired proof */
  uint8_t so[RUSM__TLS_SIG_MAX];
  size_t sol = sizeof so;
  assert_int_equal(rusm__tls_sign(f->old, msg, sizeof msg, so, &sol), 0);
  assert_false(
      rusm__tls_verify_signed(f->a, "old", po, lo, msg, sizeof msg, so, sol));
  /* A's signature under B's proof */
  const uint8_t *pb;
  size_t lb;
  own_der(f->b, &pb, &lb);
  assert_false(
      rusm__tls_verify_signed(f->a, "nodeB", pb, lb, msg, sizeof msg, sig, sl));
  /* small buffer, bad arguments */
  size_t tiny = 8;
  assert_int_equal(rusm__tls_sign(f->a, msg, sizeof msg, sig, &tiny),
                   RUSM_EINVAL);
  assert_false(
      rusm__tls_verify_signed(f->b, "nodeA", pa, la, msg, sizeof msg, sig, 0));
  assert_false(rusm__tls_verify_signed(f->b, "nodeA", NULL, 0, msg, sizeof msg,
                                       sig, sl));
}

static void test_derive(void **state) {
  fx *f = *state;
  uint8_t x[32], y[32], z[32], w[16];
  rusm__tls_creds_derive(f->a, "quic reset", x, sizeof x);
  rusm__tls_creds *again = load(f->ca, f->certs, "nodeA");
  rusm__tls_creds_derive(again, "quic reset", y, sizeof y);
  rusm__tls_creds_free(again);
  assert_memory_equal(x, y, sizeof x); /* stable across loads */
  rusm__tls_creds_derive(f->b, "quic reset", z, sizeof z);
  assert_memory_not_equal(x, z, sizeof x);
  rusm__tls_creds_derive(f->a, "other", w, sizeof w);
  assert_memory_not_equal(x, w, sizeof w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ca_init),
      cmocka_unit_test(test_issue),
      cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_policy),
      cmocka_unit_test(test_ca_cert_as_peer),
      cmocka_unit_test(test_sign_verify),
      cmocka_unit_test(test_derive),
  };
  return cmocka_run_group_tests(tests, fx_setup, fx_teardown);
}
