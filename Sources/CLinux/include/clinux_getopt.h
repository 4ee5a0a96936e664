// getopt_long's global state, behind functions (Swift 6 refuses direct access to C globals).
#ifndef CLINUX_GETOPT_H
#define CLINUX_GETOPT_H
#include <getopt.h>
void clinux_getopt_reset(void);
int clinux_optind(void);
int clinux_optopt(void);
const char *clinux_optarg(void);
#endif
