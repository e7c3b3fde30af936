/*
 * An LD_PRELOAD shim that makes fsync(2) and fdatasync(2) fail with EIO
 * while the file named by the environment variable FAILSYNC_TRIGGER exists,
 * so a test switches the fault on and off by creating and removing that
 * file. Without the variable, or while the file is absent, both calls go
 * to the C library as usual.
 *
 * Built by the end-to-end tests (tests/e2e/faults.rs):
 *   cc -shared -fPIC -o libfailsync.so failsync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int faulty(void) {
    const char *trigger = getenv("FAILSYNC_TRIGGER");
    return trigger != NULL && access(trigger, F_OK) == 0;
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
