/*
 * tls.h — the cluster's trust: a cluster CA, per-node certificates, the
 * verification policy both ends of a connection apply, and claim signing
 * with the node key (GnuTLS).
 *
 * Layout on disk (docs/internals/cluster-transport.md):
 *   <ca_dir>/ca.pem  ca.key          the cluster CA (ECDSA P-256, 10 years)
 *   <out_dir>/<node>.pem <node>.key  a node's certificate and key
 * Keys are written 0600, certificates 0644; nothing is ever overwritten.
 *
 * A node certificate names its node with exactly one URI subject
 * alternative name "rusm://node/<node>" (the CN repeats the name for
 * humans; the verifier reads only the URI). Node names are 1..63 bytes of
 * [A-Za-z0-9._-].
 *
 * Functions that touch files take an optional `why` buffer (may be NULL)
 * that receives a one-line message naming the file and the cause.
 */
#ifndef RUSM_CLUSTER_TLS_H
#define RUSM_CLUSTER_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Cluster error codes of this module (-260..-269; the cluster range is
 * -200..-299). Each verification refusal has its own code. */
enum {
  RUSM_ETLS_FOREIGN_CA = -260,    /* not issued by the cluster CA */
  RUSM_ETLS_EXPIRED = -261,       /* past its notAfter (or the CA's) */
  RUSM_ETLS_NOT_YET_VALID = -262, /* before its notBefore */
  RUSM_ETLS_WRONG_NAME = -263,    /* names another node than expected */
  RUSM_ETLS_NO_CERT = -264,       /* the peer sent no certificate */
  RUSM_ETLS_BAD_CERT = -265,      /* unreadable, no valid node name, a CA
                                     certificate, or missing client/server use */
  RUSM_ETLS_KEY_MISMATCH = -266,  /* the key does not match the certificate */
  RUSM_ETLS = -267                /* a GnuTLS call failed */
};

#define RUSM__TLS_NAME_MAX 63 /* bytes of a node name, NUL excluded */
#define RUSM__TLS_SIG_MAX 144 /* bytes of a signature (ECDSA P-256: <= 72) */
#define RUSM__TLS_URI_PREFIX "rusm://node/"

/* Loaded credentials: the CA certificate, our certificate and key. */
typedef struct rusm__tls_creds rusm__tls_creds;

/* True when name is 1..63 bytes of [A-Za-z0-9._-]. */
bool rusm__tls_node_name_valid(const char *name);

/* A static message for a RUSM_ETLS_* code (falls back to rusm_strerror). */
const char *rusm__tls_strerror(int err);

/* Creates dir (0700) if missing, then dir/ca.key (0600) and dir/ca.pem: a
 * self-signed ECDSA P-256 CA (CA:TRUE, pathlen 0, 10 years). Returns 0,
 * RUSM_EEXIST when either file exists (nothing is touched), RUSM_ESYS,
 * RUSM_ETLS, RUSM_EINVAL. */
int rusm__tls_ca_init(const char *dir, char *why, size_t whylen);

/* Issues a certificate for `node` signed by the CA in ca_dir, valid for
 * `days` days (0: 365) from an hour ago (clock skew), never past the CA's
 * own expiry: writes out_dir/<node>.key (0600) and out_dir/<node>.pem,
 * creating out_dir (0700) if missing. Returns 0, RUSM_EINVAL (bad name),
 * RUSM_EEXIST, RUSM_ENOTFOUND / RUSM_ESYS (CA files), RUSM_ETLS_*. */
int rusm__tls_cert_issue(const char *ca_dir, const char *node,
                         const char *out_dir, unsigned days, char *why,
                         size_t whylen);

/* As rusm__tls_cert_issue with an explicit validity period (unclamped),
 * for tests: an already expired or not yet valid certificate. */
int rusm__tls_cert_issue_at(const char *ca_dir, const char *node,
                            const char *out_dir, time_t not_before,
                            time_t not_after, char *why, size_t whylen);

/* Loads the CA certificate, our certificate and our key (PEM files).
 * Returns 0 and *out (free with rusm__tls_creds_free), RUSM_ENOTFOUND (a
 * missing file), RUSM_ESYS (unreadable), RUSM_ETLS_BAD_CERT (unparseable,
 * the CA file is not a CA, our certificate names no valid node),
 * RUSM_ETLS_KEY_MISMATCH, RUSM_ENOMEM, RUSM_ETLS. Whether our certificate
 * chains to the CA is not checked here: rusm__tls_creds_check says. */
int rusm__tls_creds_load(const char *ca_pem, const char *cert_pem,
                         const char *key_pem, rusm__tls_creds **out, char *why,
                         size_t whylen);
void rusm__tls_creds_free(rusm__tls_creds *c);

/* Our own certificate under our own policy (a configuration check for
 * start-up): 0 or the RUSM_ETLS_* a peer would answer. */
int rusm__tls_creds_check(const rusm__tls_creds *c, char *why, size_t whylen);

/* Our node name, from our certificate (valid while c lives). */
const char *rusm__tls_creds_node(const rusm__tls_creds *c);

/* Our certificate, DER: the proof that goes with signed claims. Valid
 * while c lives. */
void rusm__tls_own_cert_der(const rusm__tls_creds *c, const uint8_t **der,
                            size_t *len);

/* The verification policy, applied to a peer's leaf certificate (DER) at
 * time `now`: it chains directly to the cluster CA; it is no CA and allows
 * TLS client and server use; it names a valid node (name_out, 64 bytes,
 * may be NULL); it is within its validity period and the CA within its
 * own; and when `expected` is not NULL it names that node. Returns 0 or
 * the RUSM_ETLS_* of the first rule broken, with a message in why. */
int rusm__tls_verify_peer(const rusm__tls_creds *c, const uint8_t *der,
                          size_t len, const char *expected, time_t now,
                          char *name_out, char *why, size_t whylen);

/* Signs msg with our node key (ECDSA, SHA-256). *sig_len: in, the
 * capacity of sig (RUSM__TLS_SIG_MAX is enough); out, the signature's
 * length. Returns 0, RUSM_EINVAL (capacity), RUSM_ETLS. */
int rusm__tls_sign(const rusm__tls_creds *c, const uint8_t *msg, size_t n,
                   uint8_t *sig, size_t *sig_len);

/* True when proof (a DER certificate) passes the policy now with
 * host_node as the expected name, and its key signed msg. */
bool rusm__tls_verify_signed(const rusm__tls_creds *c, const char *host_node,
                             const uint8_t *proof_der, size_t proof_len,
                             const uint8_t *msg, size_t n, const uint8_t *sig,
                             size_t sig_len);

/* out_len (<= 32) bytes derived from our private key and label
 * (HMAC-SHA256): stable across restarts of the same node, secret to it.
 * The QUIC adapter keys its stateless reset tokens with it. */
void rusm__tls_creds_derive(const rusm__tls_creds *c, const char *label,
                            uint8_t *out, size_t out_len);

/* The GnuTLS certificate credentials (our certificate and key), for the
 * QUIC adapter's sessions. Owned by c. */
struct gnutls_certificate_credentials_st *
rusm__tls_creds_gnutls(const rusm__tls_creds *c);

#endif
