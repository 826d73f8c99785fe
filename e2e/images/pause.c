/* The sandbox ("pause") process of every pod: sleeps until a signal ends it, reaps nothing
 * (containers run in their own PID namespaces here). Built with gcc -static. */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }

int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    for (;;) pause();
    return 0;
}
