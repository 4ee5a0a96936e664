#include "clinux_getopt.h"
void clinux_getopt_reset(void) { optind = 0; opterr = 0; }
int clinux_optind(void) { return optind; }
int clinux_optopt(void) { return optopt; }
const char *clinux_optarg(void) { return optarg; }
