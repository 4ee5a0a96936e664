// GnuTLS for the NBD module's TLS transport, loaded at run time instead of linked.
//
// Why: linking libgnutls pulls in p11-kit, nettle, hogweed, gmp, idn2, unistring and tasn1, which
// cost every program ~2.6 MB of resident memory at start even when no TLS is used (imgtool info).
// Only TLS needs it, so cgnutls_load() dlopen()s libgnutls.so.30 on first use and fills a table of
// function pointers. The types and constants still come from GnuTLS's headers (libgnutls28-dev at
// build time), and each table entry takes its type from GnuTLS's own prototype (__typeof__), so a
// signature cannot drift. Swift calls the entries as `GnuTLS.fn.gnutls_init(...)` (NBD/TLS).
// Add a function: one CGNUTLS_FUNCTIONS entry. Nothing here defines _GNU_SOURCE (Swift imports it).
#ifndef CGNUTLS_H
#define CGNUTLS_H

#include <stddef.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <gnutls/crypto.h>

#define CGNUTLS_SONAME "libgnutls.so.30"

#define CGNUTLS_FUNCTIONS(F) \
    F(gnutls_strerror) F(gnutls_error_is_fatal) \
    F(gnutls_init) F(gnutls_deinit) F(gnutls_priority_set_direct) F(gnutls_credentials_set) \
    F(gnutls_server_name_set) F(gnutls_handshake) F(gnutls_bye) \
    F(gnutls_transport_set_ptr) F(gnutls_transport_set_push_function) \
    F(gnutls_transport_set_pull_function) F(gnutls_transport_set_errno) \
    F(gnutls_record_recv) F(gnutls_record_send) F(gnutls_record_cork) F(gnutls_record_uncork) \
    F(gnutls_certificate_allocate_credentials) F(gnutls_certificate_free_credentials) \
    F(gnutls_certificate_set_x509_trust_file) F(gnutls_certificate_set_x509_crl_file) \
    F(gnutls_certificate_set_x509_key_file2) F(gnutls_certificate_set_known_dh_params) \
    F(gnutls_certificate_server_set_request) F(gnutls_certificate_get_peers) \
    F(gnutls_certificate_type_get) F(gnutls_certificate_verification_status_print) \
    F(gnutls_session_set_verify_cert) F(gnutls_session_get_verify_cert_status) \
    F(gnutls_x509_crt_init) F(gnutls_x509_crt_deinit) F(gnutls_x509_crt_import) F(gnutls_x509_crt_get_dn) \
    F(gnutls_psk_allocate_server_credentials) F(gnutls_psk_free_server_credentials) \
    F(gnutls_psk_set_server_credentials_file) F(gnutls_psk_set_server_known_dh_params) \
    F(gnutls_psk_server_get_username) \
    F(gnutls_psk_allocate_client_credentials) F(gnutls_psk_free_client_credentials) \
    F(gnutls_psk_set_client_credentials) \
    F(gnutls_anon_allocate_server_credentials) F(gnutls_anon_free_server_credentials) \
    F(gnutls_anon_set_server_known_dh_params) \
    F(gnutls_anon_allocate_client_credentials) F(gnutls_anon_free_client_credentials) \
    F(gnutls_cipher_init) F(gnutls_cipher_decrypt2) F(gnutls_cipher_deinit) \
    F(gnutls_certificate_verify_peers2) F(gnutls_x509_crt_get_activation_time) \
    F(gnutls_x509_crt_get_expiration_time) F(gnutls_x509_crt_check_hostname) \
    F(gnutls_x509_crt_list_import) F(gnutls_x509_crt_list_verify) F(gnutls_x509_crt_get_basic_constraints) \
    F(gnutls_x509_crt_get_key_usage) F(gnutls_x509_crt_get_key_purpose_oid)

#define CGNUTLS_FIELD(name) __typeof__(&name) _Nonnull name;
/// GnuTLS's entry points; every one is set once cgnutls_load() returned 0, none before.
struct cgnutls_api {
    CGNUTLS_FUNCTIONS(CGNUTLS_FIELD)
};
#undef CGNUTLS_FIELD

/// Opens `soname` and resolves every entry point. 0 on success; else -1 with a message in `error`
/// (dlerror's text), the table untouched. Not thread-safe: the Swift side calls it under a lock.
int cgnutls_load(const char *_Nonnull soname, char *_Nonnull error, size_t size);

/// The table cgnutls_load() fills.
const struct cgnutls_api *_Nonnull cgnutls_table(void);

#endif
