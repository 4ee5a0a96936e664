// Umbrella header of the C shim. Each concern has its own header; Swift sees them all via `import CLinux`.
// Never define _GNU_SOURCE in a header Swift imports (see ../shared/SWIFT-LINUX.md): the .c files get it
// from Package.swift's cSettings, and these headers only declare plain C functions and constants.
#ifndef CLINUX_H
#define CLINUX_H
#include "clinux_fs.h"
#include "clinux_getopt.h"
#include "clinux_kvm.h"
#endif
