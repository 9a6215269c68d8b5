/*
 * tls.c — cluster CA, node certificates, the verification policy and
 * claim signing, on GnuTLS (docs/internals/cluster-transport.md).
 */
#include "cluster/tls.h"

#include "otp/alloc.h"
#include "rusm/otp.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CA_YEARS 10
#define SKEW_SECS 3600                 /* validity starts an hour back */
#define MAX_PEM_FILE (1u << 20)        /* larger files are not ours */
#define OID_SERVER "1.3.6.1.5.5.7.3.1" /* id-kp-serverAuth */
#define OID_CLIENT "1.3.6.1.5.5.7.3.2" /* id-kp-clientAuth */

struct rusm__tls_creds {
  gnutls_certificate_credentials_t cred;
  gnutls_x509_crt_t ca;
  gnutls_x509_crt_t cert;
  gnutls_privkey_t key;
  gnutls_datum_t cert_der;
  uint8_t secret[32]; /* HMAC key for rusm__tls_creds_derive */
  char name[RUSM__TLS_NAME_MAX + 1];
};

/* ---- messages ----------------------------------------------------- */

static void setwhy(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void setwhy(char *why, size_t whylen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (why && whylen)
    (void)vsnprintf(why, whylen, fmt, ap);
  va_end(ap);
}

static const char *errno_text(int e, char *buf, size_t len) {
  return strerror_r(e, buf, len); /* GNU variant: returns the text */
}

const char *rusm__tls_strerror(int err) {
  switch (err) {
  case RUSM_ETLS_FOREIGN_CA:
    return "certificate not issued by the cluster CA";
  case RUSM_ETLS_EXPIRED:
    return "certificate expired";
  case RUSM_ETLS_NOT_YET_VALID:
    return "certificate not yet valid";
  case RUSM_ETLS_WRONG_NAME:
    return "certificate names another node";
  case RUSM_ETLS_NO_CERT:
    return "no certificate";
  case RUSM_ETLS_BAD_CERT:
    return "unusable certificate";
  case RUSM_ETLS_KEY_MISMATCH:
    return "key does not match the certificate";
  case RUSM_ETLS:
    return "TLS library failure";
  default:
    return rusm_strerror(err);
  }
}

bool rusm__tls_node_name_valid(const char *name) {
  if (!name)
    return false;
  size_t n = 0;
  for (; name[n]; n++) {
    char ch = name[n];
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
    if (!ok || n >= RUSM__TLS_NAME_MAX)
      return false;
  }
  return n > 0;
}

/* ---- files -------------------------------------------------------- */

static int join(char *out, size_t cap, const char *dir, const char *file,
                const char *ext) {
  int n = snprintf(out, cap, "%s/%s%s", dir, file, ext);
  return n < 0 || (size_t)n >= cap ? RUSM_EINVAL : 0;
}

/* Reads a whole (small) file. The caller gnutls_free()s out->data. */
static int read_file(const char *path, gnutls_datum_t *out, char *why,
                     size_t whylen) {
  char eb[128];
  out->data = NULL;
  out->size = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    setwhy(why, whylen, "cannot open %s: %s", path,
           errno_text(e, eb, sizeof eb));
    return e == ENOENT ? RUSM_ENOTFOUND : RUSM_ESYS;
  }
  uint8_t *buf = gnutls_malloc(MAX_PEM_FILE + 1);
  if (!buf) {
    close(fd);
    return RUSM_ENOMEM;
  }
  size_t len = 0;
  for (;;) {
    ssize_t r = read(fd, buf + len, MAX_PEM_FILE + 1 - len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      int e = errno;
      setwhy(why, whylen, "cannot read %s: %s", path,
             errno_text(e, eb, sizeof eb));
      gnutls_free(buf);
      close(fd);
      return RUSM_ESYS;
    }
    if (r == 0)
      break;
    len += (size_t)r;
    if (len > MAX_PEM_FILE) {
      setwhy(why, whylen, "%s: too large for a PEM file", path);
      gnutls_free(buf);
      close(fd);
      return RUSM_ETLS_BAD_CERT;
    }
  }
  close(fd);
  out->data = buf;
  out->size = (unsigned)len;
  return 0;
}

/* Creates path exclusively (never overwrites), writes and syncs data. */
static int write_file_excl(const char *path, const gnutls_datum_t *d,
                           mode_t mode, char *why, size_t whylen) {
  char eb[128];
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    int e = errno;
    if (e == EEXIST) {
      setwhy(why, whylen, "%s already exists (refusing to overwrite)", path);
      return RUSM_EEXIST;
    }
    setwhy(why, whylen, "cannot create %s: %s", path,
           errno_text(e, eb, sizeof eb));
    return RUSM_ESYS;
  }
  size_t off = 0;
  while (off < d->size) {
    ssize_t w = write(fd, d->data + off, d->size - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      int e = w < 0 ? errno : EIO;
      setwhy(why, whylen, "cannot write %s: %s", path,
             errno_text(e, eb, sizeof eb));
      close(fd);
      unlink(path);
      return RUSM_ESYS;
    }
    off += (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    int e = errno;
    setwhy(why, whylen, "cannot write %s: %s", path,
           errno_text(e, eb, sizeof eb));
    unlink(path);
    return RUSM_ESYS;
  }
  return 0;
}

static int ensure_dir(const char *dir, char *why, size_t whylen) {
  char eb[128];
  if (mkdir(dir, 0700) == 0 || errno == EEXIST)
    return 0;
  int e = errno;
  setwhy(why, whylen, "cannot create directory %s: %s", dir,
         errno_text(e, eb, sizeof eb));
  return RUSM_ESYS;
}

static bool exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* ---- certificate building ----------------------------------------- */

static int tls_fail(int gerr, const char *what, char *why, size_t whylen) {
  setwhy(why, whylen, "%s: %s", what, gnutls_strerror(gerr));
  return gerr == GNUTLS_E_MEMORY_ERROR ? RUSM_ENOMEM : RUSM_ETLS;
}

static int gen_key(gnutls_x509_privkey_t *out, char *why, size_t whylen) {
  int r = gnutls_x509_privkey_init(out);
  if (r < 0)
    return tls_fail(r, "key", why, whylen);
  r = gnutls_x509_privkey_generate2(
      *out, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1),
      0, NULL, 0);
  if (r < 0) {
    gnutls_x509_privkey_deinit(*out);
    *out = NULL;
    return tls_fail(r, "key generation", why, whylen);
  }
  return 0;
}

/* Version, a random positive 128-bit serial, the validity period, the
 * subject CN and the public key: what CA and node certificates share. */
static int crt_common(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key,
                      const char *cn, time_t nb, time_t na) {
  uint8_t serial[16];
  int r = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial);
  if (r < 0)
    return r;
  serial[0] = (uint8_t)((serial[0] & 0x7f) | 0x01); /* positive, 16 bytes */
  if ((r = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
      (r = gnutls_x509_crt_set_serial(crt, serial, sizeof serial)) < 0 ||
      (r = gnutls_x509_crt_set_activation_time(crt, nb)) < 0 ||
      (r = gnutls_x509_crt_set_expiration_time(crt, na)) < 0 ||
      (r = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0,
                                         cn, (unsigned)strlen(cn))) < 0 ||
      (r = gnutls_x509_crt_set_key(crt, key)) < 0)
    return r;
  uint8_t kid[64];
  size_t kidlen = sizeof kid;
  r = gnutls_x509_privkey_get_key_id(key, GNUTLS_KEYID_USE_SHA1, kid, &kidlen);
  if (r < 0)
    return r;
  return gnutls_x509_crt_set_subject_key_id(crt, kid, kidlen);
}

/* Writes key (0600) then certificate (0644); removes the key when the
 * certificate cannot be written, so a failure leaves nothing behind. */
static int write_pair(const char *key_path, const char *crt_path,
                      gnutls_x509_privkey_t key, gnutls_x509_crt_t crt,
                      char *why, size_t whylen) {
  gnutls_datum_t kd = {NULL, 0}, cd = {NULL, 0};
  int r = gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL,
                                            GNUTLS_PKCS_PLAIN, &kd);
  if (r < 0)
    return tls_fail(r, "key export", why, whylen);
  r = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &cd);
  if (r < 0) {
    gnutls_memset(kd.data, 0, kd.size);
    gnutls_free(kd.data);
    return tls_fail(r, "certificate export", why, whylen);
  }
  int rc = write_file_excl(key_path, &kd, 0600, why, whylen);
  if (rc == 0) {
    rc = write_file_excl(crt_path, &cd, 0644, why, whylen);
    if (rc != 0)
      unlink(key_path);
  }
  gnutls_memset(kd.data, 0, kd.size);
  gnutls_free(kd.data);
  gnutls_free(cd.data);
  return rc;
}

int rusm__tls_ca_init(const char *dir, char *why, size_t whylen) {
  char kpath[PATH_MAX], cpath[PATH_MAX];
  if (!dir || !*dir || join(kpath, sizeof kpath, dir, "ca", ".key") ||
      join(cpath, sizeof cpath, dir, "ca", ".pem")) {
    setwhy(why, whylen, "bad CA directory");
    return RUSM_EINVAL;
  }
  int rc = ensure_dir(dir, why, whylen);
  if (rc)
    return rc;
  if (exists(kpath) || exists(cpath)) {
    setwhy(why, whylen, "%s already holds a CA (refusing to overwrite)", dir);
    return RUSM_EEXIST;
  }
  gnutls_x509_privkey_t key = NULL;
  gnutls_x509_crt_t crt = NULL;
  if ((rc = gen_key(&key, why, whylen)) != 0)
    return rc;
  int r = gnutls_x509_crt_init(&crt);
  if (r < 0) {
    gnutls_x509_privkey_deinit(key);
    return tls_fail(r, "certificate", why, whylen);
  }
  /* A random tag in the CN tells clusters' CAs apart to a human eye. */
  uint8_t tag[4];
  char cn[64];
  time_t now = time(NULL);
  r = gnutls_rnd(GNUTLS_RND_NONCE, tag, sizeof tag);
  if (r >= 0) {
    (void)snprintf(cn, sizeof cn, "rusm cluster CA %02x%02x%02x%02x", tag[0],
                   tag[1], tag[2], tag[3]);
    r = crt_common(crt, key, cn, now - SKEW_SECS,
                   now + (time_t)CA_YEARS * 365 * 86400);
  }
  if (r >= 0)
    r = gnutls_x509_crt_set_basic_constraints(crt, 1, 0);
  if (r >= 0)
    r = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_KEY_CERT_SIGN |
                                               GNUTLS_KEY_CRL_SIGN);
  if (r >= 0)
    r = gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0);
  if (r < 0)
    rc = tls_fail(r, "CA certificate", why, whylen);
  else
    rc = write_pair(kpath, cpath, key, crt, why, whylen);
  gnutls_x509_crt_deinit(crt);
  gnutls_x509_privkey_deinit(key);
  return rc;
}

static bool same_key(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key) {
  uint8_t a[64], b[64];
  size_t al = sizeof a, bl = sizeof b;
  if (gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA256, a, &al) < 0 ||
      gnutls_x509_privkey_get_key_id(key, GNUTLS_KEYID_USE_SHA256, b, &bl) < 0)
    return false;
  return al == bl && memcmp(a, b, al) == 0;
}

static int import_crt(const gnutls_datum_t *d, gnutls_x509_crt_fmt_t fmt,
                      gnutls_x509_crt_t *out) {
  int r = gnutls_x509_crt_init(out);
  if (r < 0)
    return r;
  r = gnutls_x509_crt_import(*out, d, fmt);
  if (r < 0) {
    gnutls_x509_crt_deinit(*out);
    *out = NULL;
  }
  return r;
}

static int import_key(const gnutls_datum_t *d, gnutls_x509_privkey_t *out) {
  int r = gnutls_x509_privkey_init(out);
  if (r < 0)
    return r;
  r = gnutls_x509_privkey_import2(*out, d, GNUTLS_X509_FMT_PEM, NULL, 0);
  if (r < 0) {
    gnutls_x509_privkey_deinit(*out);
    *out = NULL;
  }
  return r;
}

static void free_datum(gnutls_datum_t *d, bool secret) {
  if (d->data && secret)
    gnutls_memset(d->data, 0, d->size);
  gnutls_free(d->data);
  d->data = NULL;
  d->size = 0;
}

/* Loads a PEM certificate file and/or a PEM key file. */
static int load_crt(const char *path, gnutls_x509_crt_t *out, char *why,
                    size_t whylen) {
  gnutls_datum_t d;
  int rc = read_file(path, &d, why, whylen);
  if (rc)
    return rc;
  int r = import_crt(&d, GNUTLS_X509_FMT_PEM, out);
  free_datum(&d, false);
  if (r < 0) {
    setwhy(why, whylen, "%s: not a PEM certificate (%s)", path,
           gnutls_strerror(r));
    return RUSM_ETLS_BAD_CERT;
  }
  return 0;
}

static int load_key(const char *path, gnutls_x509_privkey_t *out, char *why,
                    size_t whylen) {
  gnutls_datum_t d;
  int rc = read_file(path, &d, why, whylen);
  if (rc)
    return rc;
  int r = import_key(&d, out);
  free_datum(&d, true);
  if (r < 0) {
    setwhy(why, whylen, "%s: not a PEM private key (%s)", path,
           gnutls_strerror(r));
    return RUSM_ETLS_BAD_CERT;
  }
  return 0;
}

static bool is_ca(gnutls_x509_crt_t crt) {
  unsigned ca = 0;
  int r = gnutls_x509_crt_get_basic_constraints(crt, NULL, &ca, NULL);
  return r >= 0 && ca;
}

int rusm__tls_cert_issue_at(const char *ca_dir, const char *node,
                            const char *out_dir, time_t not_before,
                            time_t not_after, char *why, size_t whylen) {
  char cak[PATH_MAX], cac[PATH_MAX], kpath[PATH_MAX], cpath[PATH_MAX];
  if (!rusm__tls_node_name_valid(node)) {
    setwhy(why, whylen, "bad node name (1..63 bytes of A-Z a-z 0-9 . _ -)");
    return RUSM_EINVAL;
  }
  if (!ca_dir || !out_dir || not_after <= not_before ||
      join(cak, sizeof cak, ca_dir, "ca", ".key") ||
      join(cac, sizeof cac, ca_dir, "ca", ".pem") ||
      join(kpath, sizeof kpath, out_dir, node, ".key") ||
      join(cpath, sizeof cpath, out_dir, node, ".pem")) {
    setwhy(why, whylen, "bad directory or validity period");
    return RUSM_EINVAL;
  }
  gnutls_x509_crt_t ca = NULL, crt = NULL;
  gnutls_x509_privkey_t cakey = NULL, key = NULL;
  int rc = load_crt(cac, &ca, why, whylen);
  if (rc == 0)
    rc = load_key(cak, &cakey, why, whylen);
  if (rc == 0 && !is_ca(ca)) {
    setwhy(why, whylen, "%s is not a CA certificate", cac);
    rc = RUSM_ETLS_BAD_CERT;
  }
  if (rc == 0 && !same_key(ca, cakey)) {
    setwhy(why, whylen, "%s does not match %s", cak, cac);
    rc = RUSM_ETLS_KEY_MISMATCH;
  }
  if (rc == 0)
    rc = ensure_dir(out_dir, why, whylen);
  if (rc == 0 && (exists(kpath) || exists(cpath))) {
    setwhy(why, whylen, "%s already holds a certificate for %s", out_dir, node);
    rc = RUSM_EEXIST;
  }
  if (rc == 0)
    rc = gen_key(&key, why, whylen);
  int r = 0;
  if (rc == 0 && (r = gnutls_x509_crt_init(&crt)) < 0)
    rc = tls_fail(r, "certificate", why, whylen);
  if (rc == 0) {
    char uri[sizeof RUSM__TLS_URI_PREFIX + RUSM__TLS_NAME_MAX];
    (void)snprintf(uri, sizeof uri, "%s%s", RUSM__TLS_URI_PREFIX, node);
    uint8_t akid[64];
    size_t akidlen = sizeof akid;
    r = crt_common(crt, key, node, not_before, not_after);
    if (r >= 0)
      r = gnutls_x509_crt_set_basic_constraints(crt, 0, -1);
    if (r >= 0)
      r = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE);
    if (r >= 0)
      r = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0);
    if (r >= 0)
      r = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_CLIENT, 0);
    if (r >= 0)
      r = gnutls_x509_crt_set_subject_alt_name(
          crt, GNUTLS_SAN_URI, uri, (unsigned)strlen(uri), GNUTLS_FSAN_SET);
    if (r >= 0 &&
        gnutls_x509_crt_get_subject_key_id(ca, akid, &akidlen, NULL) >= 0)
      r = gnutls_x509_crt_set_authority_key_id(crt, akid, akidlen);
    if (r >= 0)
      r = gnutls_x509_crt_sign2(crt, ca, cakey, GNUTLS_DIG_SHA256, 0);
    rc = r < 0 ? tls_fail(r, "node certificate", why, whylen)
               : write_pair(kpath, cpath, key, crt, why, whylen);
  }
  if (crt)
    gnutls_x509_crt_deinit(crt);
  if (key)
    gnutls_x509_privkey_deinit(key);
  if (cakey)
    gnutls_x509_privkey_deinit(cakey);
  if (ca)
    gnutls_x509_crt_deinit(ca);
  return rc;
}

int rusm__tls_cert_issue(const char *ca_dir, const char *node,
                         const char *out_dir, unsigned days, char *why,
                         size_t whylen) {
  if (days == 0)
    days = 365;
  if (days > 100 * 366) {
    setwhy(why, whylen, "validity too long");
    return RUSM_EINVAL;
  }
  time_t now = time(NULL);
  time_t na = now + (time_t)days * 86400;
  /* Never past the CA: such a certificate would fail with it anyway. */
  char cac[PATH_MAX];
  gnutls_x509_crt_t ca = NULL;
  if (ca_dir && join(cac, sizeof cac, ca_dir, "ca", ".pem") == 0 &&
      load_crt(cac, &ca, NULL, 0) == 0) {
    time_t caexp = gnutls_x509_crt_get_expiration_time(ca);
    if (caexp != (time_t)-1 && caexp < na)
      na = caexp;
    gnutls_x509_crt_deinit(ca);
  }
  return rusm__tls_cert_issue_at(ca_dir, node, out_dir, now - SKEW_SECS, na,
                                 why, whylen);
}

/* ---- credentials -------------------------------------------------- */

/* The node named by the certificate's one rusm URI SAN, or
 * RUSM_ETLS_BAD_CERT (none, several, or an invalid name). */
static int crt_node_name(gnutls_x509_crt_t crt, char *out) {
  const size_t plen = sizeof RUSM__TLS_URI_PREFIX - 1;
  int found = 0;
  for (unsigned i = 0;; i++) {
    char buf[256];
    size_t sz = sizeof buf - 1;
    int t = gnutls_x509_crt_get_subject_alt_name(crt, i, buf, &sz, NULL);
    if (t == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
      break;
    if (t == GNUTLS_E_SHORT_MEMORY_BUFFER)
      continue; /* too long to be ours */
    if (t < 0)
      return RUSM_ETLS_BAD_CERT;
    if (t != GNUTLS_SAN_URI || sz <= plen ||
        memcmp(buf, RUSM__TLS_URI_PREFIX, plen) != 0)
      continue;
    buf[sz] = '\0';
    if (strlen(buf) != sz || !rusm__tls_node_name_valid(buf + plen))
      return RUSM_ETLS_BAD_CERT;
    if (found++)
      return RUSM_ETLS_BAD_CERT; /* a certificate names one node */
    memcpy(out, buf + plen, sz - plen + 1);
  }
  return found ? 0 : RUSM_ETLS_BAD_CERT;
}

void rusm__tls_creds_free(rusm__tls_creds *c) {
  if (!c)
    return;
  if (c->cred)
    gnutls_certificate_free_credentials(c->cred);
  if (c->ca)
    gnutls_x509_crt_deinit(c->ca);
  if (c->cert)
    gnutls_x509_crt_deinit(c->cert);
  if (c->key)
    gnutls_privkey_deinit(c->key);
  gnutls_free(c->cert_der.data);
  gnutls_memset(c->secret, 0, sizeof c->secret);
  rusm__xfree(c);
}

int rusm__tls_creds_load(const char *ca_pem, const char *cert_pem,
                         const char *key_pem, rusm__tls_creds **out, char *why,
                         size_t whylen) {
  if (!ca_pem || !cert_pem || !key_pem || !out)
    return RUSM_EINVAL;
  *out = NULL;
  rusm__tls_creds *c = rusm__xcalloc(1, sizeof *c);
  if (!c)
    return RUSM_ENOMEM;
  gnutls_x509_privkey_t xkey = NULL;
  gnutls_datum_t kder = {NULL, 0};
  int r = 0;
  int rc = load_crt(ca_pem, &c->ca, why, whylen);
  if (rc == 0 && !is_ca(c->ca)) {
    setwhy(why, whylen, "%s is not a CA certificate", ca_pem);
    rc = RUSM_ETLS_BAD_CERT;
  }
  if (rc == 0)
    rc = load_crt(cert_pem, &c->cert, why, whylen);
  if (rc == 0)
    rc = load_key(key_pem, &xkey, why, whylen);
  if (rc == 0 && !same_key(c->cert, xkey)) {
    setwhy(why, whylen, "%s does not match %s", key_pem, cert_pem);
    rc = RUSM_ETLS_KEY_MISMATCH;
  }
  if (rc == 0 && crt_node_name(c->cert, c->name) != 0) {
    setwhy(why, whylen, "%s names no valid node (URI SAN %s<name>)", cert_pem,
           RUSM__TLS_URI_PREFIX);
    rc = RUSM_ETLS_BAD_CERT;
  }
  if (rc == 0 &&
      ((r = gnutls_certificate_allocate_credentials(&c->cred)) < 0 ||
       (r = gnutls_certificate_set_x509_key(c->cred, &c->cert, 1, xkey)) < 0 ||
       (r = gnutls_privkey_init(&c->key)) < 0 ||
       (r = gnutls_privkey_import_x509(c->key, xkey,
                                       GNUTLS_PRIVKEY_IMPORT_COPY)) < 0 ||
       (r = gnutls_x509_crt_export2(c->cert, GNUTLS_X509_FMT_DER,
                                    &c->cert_der)) < 0 ||
       (r = gnutls_x509_privkey_export2_pkcs8(xkey, GNUTLS_X509_FMT_DER, NULL,
                                              GNUTLS_PKCS_PLAIN, &kder)) < 0 ||
       (r = gnutls_hmac_fast(GNUTLS_MAC_SHA256, kder.data, kder.size,
                             "rusm creds", 10, c->secret)) < 0))
    rc = tls_fail(r, "credentials", why, whylen);
  free_datum(&kder, true);
  if (xkey)
    gnutls_x509_privkey_deinit(xkey);
  if (rc) {
    rusm__tls_creds_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

const char *rusm__tls_creds_node(const rusm__tls_creds *c) { return c->name; }

void rusm__tls_own_cert_der(const rusm__tls_creds *c, const uint8_t **der,
                            size_t *len) {
  *der = c->cert_der.data;
  *len = c->cert_der.size;
}

struct gnutls_certificate_credentials_st *
rusm__tls_creds_gnutls(const rusm__tls_creds *c) {
  return c->cred;
}

void rusm__tls_creds_derive(const rusm__tls_creds *c, const char *label,
                            uint8_t *out, size_t out_len) {
  uint8_t full[32];
  if (out_len > sizeof full)
    out_len = sizeof full;
  if (gnutls_hmac_fast(GNUTLS_MAC_SHA256, c->secret, sizeof c->secret, label,
                       strlen(label), full) < 0)
    memset(full, 0, sizeof full); /* cannot happen with a valid MAC */
  memcpy(out, full, out_len);
  gnutls_memset(full, 0, sizeof full);
}

/* ---- the verification policy -------------------------------------- */

static void fmt_time(time_t t, char *buf, size_t len) {
  struct tm tm;
  if (!gmtime_r(&t, &tm) ||
      strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
    (void)snprintf(buf, len, "%lld", (long long)t);
}

static bool has_purpose(gnutls_x509_crt_t crt, const char *oid) {
  for (unsigned i = 0;; i++) {
    char buf[128];
    size_t sz = sizeof buf;
    int r = gnutls_x509_crt_get_key_purpose_oid(crt, i, buf, &sz, NULL);
    if (r < 0)
      return false;
    if (strcmp(buf, oid) == 0)
      return true;
  }
}

static int verify_crt(const rusm__tls_creds *c, gnutls_x509_crt_t crt,
                      const char *expected, time_t now, char *name_out,
                      char *why, size_t whylen) {
  unsigned status = 0;
  const unsigned flags = GNUTLS_VERIFY_DISABLE_TIME_CHECKS |
                         GNUTLS_VERIFY_DISABLE_TRUSTED_TIME_CHECKS;
  int r = gnutls_x509_crt_verify(crt, &c->ca, 1, flags, &status);
  if (r < 0)
    return tls_fail(r, "certificate verification", why, whylen);
  if (status & GNUTLS_CERT_INVALID) {
    if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNATURE_FAILURE |
                  GNUTLS_CERT_SIGNER_NOT_CA)) {
      setwhy(why, whylen,
             "foreign CA: certificate not issued by the cluster CA");
      return RUSM_ETLS_FOREIGN_CA;
    }
    gnutls_datum_t txt = {NULL, 0};
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509,
                                                     &txt, 0) >= 0) {
      setwhy(why, whylen, "bad certificate: %s", (const char *)txt.data);
      gnutls_free(txt.data);
    } else {
      setwhy(why, whylen, "bad certificate (status 0x%x)", status);
    }
    return RUSM_ETLS_BAD_CERT;
  }
  char name[RUSM__TLS_NAME_MAX + 1];
  if (is_ca(crt) || !has_purpose(crt, OID_SERVER) ||
      !has_purpose(crt, OID_CLIENT)) {
    setwhy(why, whylen,
           "bad certificate: a CA certificate, or not for TLS client and "
           "server use");
    return RUSM_ETLS_BAD_CERT;
  }
  if (crt_node_name(crt, name) != 0) {
    setwhy(why, whylen, "bad certificate: no valid node name (URI SAN %s)",
           RUSM__TLS_URI_PREFIX);
    return RUSM_ETLS_BAD_CERT;
  }
  char tb[64];
  time_t nb = gnutls_x509_crt_get_activation_time(crt);
  time_t na = gnutls_x509_crt_get_expiration_time(crt);
  time_t cana = gnutls_x509_crt_get_expiration_time(c->ca);
  if (nb == (time_t)-1 || na == (time_t)-1) {
    setwhy(why, whylen, "bad certificate of %s: no validity period", name);
    return RUSM_ETLS_BAD_CERT;
  }
  if (now < nb) {
    fmt_time(nb, tb, sizeof tb);
    setwhy(why, whylen, "certificate of %s not valid before %s", name, tb);
    return RUSM_ETLS_NOT_YET_VALID;
  }
  if (now > na) {
    fmt_time(na, tb, sizeof tb);
    setwhy(why, whylen, "certificate of %s expired %s", name, tb);
    return RUSM_ETLS_EXPIRED;
  }
  if (cana != (time_t)-1 && now > cana) {
    fmt_time(cana, tb, sizeof tb);
    setwhy(why, whylen, "the cluster CA expired %s", tb);
    return RUSM_ETLS_EXPIRED;
  }
  if (expected && strcmp(expected, name) != 0) {
    setwhy(why, whylen, "wrong name: expected %s, certificate names %s",
           expected, name);
    return RUSM_ETLS_WRONG_NAME;
  }
  if (name_out)
    memcpy(name_out, name, strlen(name) + 1);
  return 0;
}

int rusm__tls_verify_peer(const rusm__tls_creds *c, const uint8_t *der,
                          size_t len, const char *expected, time_t now,
                          char *name_out, char *why, size_t whylen) {
  if (!der || len == 0) {
    setwhy(why, whylen, "no certificate");
    return RUSM_ETLS_NO_CERT;
  }
  if (len > UINT_MAX) {
    setwhy(why, whylen, "bad certificate: too large");
    return RUSM_ETLS_BAD_CERT;
  }
  gnutls_x509_crt_t crt;
  gnutls_datum_t d = {(unsigned char *)(uintptr_t)der, (unsigned)len};
  int r = import_crt(&d, GNUTLS_X509_FMT_DER, &crt);
  if (r < 0) {
    setwhy(why, whylen, "bad certificate: %s", gnutls_strerror(r));
    return r == GNUTLS_E_MEMORY_ERROR ? RUSM_ENOMEM : RUSM_ETLS_BAD_CERT;
  }
  int rc = verify_crt(c, crt, expected, now, name_out, why, whylen);
  gnutls_x509_crt_deinit(crt);
  return rc;
}

int rusm__tls_creds_check(const rusm__tls_creds *c, char *why, size_t whylen) {
  return verify_crt(c, c->cert, NULL, time(NULL), NULL, why, whylen);
}

/* ---- claim signatures --------------------------------------------- */

int rusm__tls_sign(const rusm__tls_creds *c, const uint8_t *msg, size_t n,
                   uint8_t *sig, size_t *sig_len) {
  if (!c || (!msg && n) || !sig || !sig_len || n > UINT_MAX)
    return RUSM_EINVAL;
  gnutls_datum_t data = {(unsigned char *)(uintptr_t)msg, (unsigned)n};
  gnutls_datum_t out = {NULL, 0};
  int r = gnutls_privkey_sign_data(c->key, GNUTLS_DIG_SHA256, 0, &data, &out);
  if (r < 0)
    return r == GNUTLS_E_MEMORY_ERROR ? RUSM_ENOMEM : RUSM_ETLS;
  int rc = 0;
  if (out.size > *sig_len) {
    rc = RUSM_EINVAL;
  } else {
    memcpy(sig, out.data, out.size);
    *sig_len = out.size;
  }
  gnutls_free(out.data);
  return rc;
}

bool rusm__tls_verify_signed(const rusm__tls_creds *c, const char *host_node,
                             const uint8_t *proof_der, size_t proof_len,
                             const uint8_t *msg, size_t n, const uint8_t *sig,
                             size_t sig_len) {
  if (!c || !host_node || !proof_der || (!msg && n) || !sig ||
      proof_len > UINT_MAX || n > UINT_MAX || sig_len == 0 ||
      sig_len > RUSM__TLS_SIG_MAX)
    return false;
  gnutls_x509_crt_t crt;
  gnutls_datum_t d = {(unsigned char *)(uintptr_t)proof_der,
                      (unsigned)proof_len};
  if (import_crt(&d, GNUTLS_X509_FMT_DER, &crt) < 0)
    return false;
  bool ok = false;
  gnutls_pubkey_t pub = NULL;
  if (verify_crt(c, crt, host_node, time(NULL), NULL, NULL, 0) == 0 &&
      gnutls_pubkey_init(&pub) >= 0 &&
      gnutls_pubkey_import_x509(pub, crt, 0) >= 0) {
    gnutls_sign_algorithm_t algo = gnutls_pk_to_sign(
        (gnutls_pk_algorithm_t)gnutls_pubkey_get_pk_algorithm(pub, NULL),
        GNUTLS_DIG_SHA256);
    gnutls_datum_t data = {(unsigned char *)(uintptr_t)msg, (unsigned)n};
    gnutls_datum_t s = {(unsigned char *)(uintptr_t)sig, (unsigned)sig_len};
    ok = algo != GNUTLS_SIGN_UNKNOWN &&
         gnutls_pubkey_verify_data2(pub, algo, 0, &data, &s) >= 0;
  }
  if (pub)
    gnutls_pubkey_deinit(pub);
  gnutls_x509_crt_deinit(crt);
  return ok;
}
