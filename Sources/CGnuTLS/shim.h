// GnuTLS for the NBD module's TLS transport (x509 and PSK credentials in QEMU's layout).
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
