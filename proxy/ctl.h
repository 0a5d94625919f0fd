/* ctl.h - `veer ctl`: a thin command-line client of the admin API (SPEC
 * "Admin API") for operators and CI: a status table, weight changes, reload,
 * drain. Plain blocking sockets and a minimal HTTP/1.1 client; the admin
 * server's JSON "error" field is what the user sees when a call is refused. */
#ifndef VEER_CTL_H
#define VEER_CTL_H

/* Exit codes: 0 done, 1 the server refused or answered something unusable,
 * 2 bad usage, 3 the admin API could not be reached. */
enum { VEER_CTL_OK = 0, VEER_CTL_EREFUSED = 1, VEER_CTL_EUSAGE = 2, VEER_CTL_EUNREACHABLE = 3 };

/* argv[0] is the first argument after "ctl". */
int veer_ctl_main(int argc, char **argv);

#endif
