// dlopen()s GnuTLS and fills the function table (see include/CGnuTLS.h for why).
#include "CGnuTLS.h"
#include <dlfcn.h>
#include <stdio.h>

static struct cgnutls_api table;

const struct cgnutls_api *cgnutls_table(void) { return &table; }

int cgnutls_load(const char *soname, char *error, size_t size) {
    // RTLD_LAZY, like an ordinary link: RTLD_NOW would bind every PLT entry of GnuTLS and its seven
    // dependencies at once (~0.6 MB more RSS in a TLS server). The entries we call are bound here.
    void *lib = dlopen(soname, RTLD_LAZY | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(error, size, "%s", e ? e : soname);
        return -1;
    }
    struct cgnutls_api t;
    void *p;
#define CGNUTLS_RESOLVE(name)                                                     \
    if (!(p = dlsym(lib, #name))) {                                               \
        snprintf(error, size, "%s: symbol %s not found", soname, #name);         \
        dlclose(lib);                                                             \
        return -1;                                                                \
    }                                                                             \
    t.name = (__typeof__(t.name))p;
    CGNUTLS_FUNCTIONS(CGNUTLS_RESOLVE)
#undef CGNUTLS_RESOLVE
    table = t;  // the library stays open for the life of the process
    return 0;
}
