/* PID 1 of a tool_runtime session's PID namespace, exec'd by the session's first process once it has forked
 * the session proper (child.py). It does what init does on a host: reaps every process that ends in the
 * namespace, orphans included; it forwards SIGINT (a cell's timeout) from the pool to the session, and exits
 * when the session does, with an exit code that says how: 128+N = killed by signal N, 255 = exited with a
 * code >= 128 (or no session to wait for), else the session's own exit code. The template reads that code;
 * when this process exits the kernel kills whatever is left in the namespace.
 *
 * Why native: a forked Python reaper keeps about 2 MiB of the template's pages private (copy-on-write) per
 * session; this one keeps a few pages.
 *
 * Usage: tool-runtime-reaper SESSION_PID [READY_FD]. Once it is set up (not dumpable, SIGINT handled) it writes
 * one byte to READY_FD and closes it: the session waits for that byte before it says it is ready, so no cell
 * runs while its PID 1 is still the template's copy, and no SIGINT of the pool can arrive before the handler.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile pid_t session;

static void forward(int sig) {
    int saved = errno;
    kill(session, sig);
    errno = saved;
}

static int exit_code(int status) {
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    int code = WEXITSTATUS(status);
    return code < 128 ? code : 255;
}

int main(int argc, char **argv) {
    /* exec made us dumpable again: the session must not read our memory or /proc/1/root (the host tree: we are
     * not chrooted) */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    /* exec'd from a descriptor (fexecve) our name would be its number: say what we are in ps and top */
    prctl(PR_SET_NAME, "session-reaper", 0, 0, 0);
    char *end = NULL;
    long pid = argc == 2 || argc == 3 ? strtol(argv[1], &end, 10) : 0;
    if (pid <= 1 || *end != '\0') return 255;
    session = (pid_t)pid;
    long ready = -1;
    if (argc == 3) {
        ready = strtol(argv[2], &end, 10);
        if (ready < 0 || *end != '\0') return 255;
    }

    struct sigaction sa = {0};
    sa.sa_handler = forward;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (ready >= 0) {
        while (write((int)ready, "1", 1) < 0 && errno == EINTR) {
        }
        close((int)ready);
    }

    for (;;) {
        int status;
        pid_t got = waitpid(-1, &status, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            _exit(255); /* ECHILD: the session is gone and was reaped by nobody else: cannot happen */
        }
        if (got == session) _exit(exit_code(status));
    }
}
