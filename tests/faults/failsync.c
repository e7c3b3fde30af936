/*
 * An LD_PRELOAD shim that makes fsync(2) and fdatasync(2) fail with EIO
 * while the file named by the environment variable FAILSYNC_TRIGGER exists,
 * and makes them wait (a disk that stopped answering) while the file named
 * by FAILSYNC_STALL exists, so a test switches the faults on and off by
 * creating and removing those files. Without the variables, or while the
 * files are absent, both calls go to the C library as usual.
 *
 * Built by the end-to-end tests (tests/e2e/faults.rs):
 *   cc -shared -fPIC -o libfailsync.so failsync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int exists(const char *variable) {
    const char *path = getenv(variable);
    return path != NULL && access(path, F_OK) == 0;
}

/* Waits while the stall file exists; then says whether to fail. */
static int faulty(void) {
    while (exists("FAILSYNC_STALL")) {
        usleep(10000);
    }
    return exists("FAILSYNC_TRIGGER");
}

int fsync(int fd) {
    static int (*real)(int);
    if (faulty()) {
        errno = EIO;
        return -1;
    }
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (faulty()) {
        errno = EIO;
        return -1;
    }
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    return real(fd);
}
