/*
 * pn-verity-enable: FS_IOC_ENABLE_VERITY on every regular file under the given
 * directories, in one process (powernode's initramfs, 90powernode).
 *
 * Why it exists: busybox has no fs-verity applet and fsverity-utils' `fsverity
 * enable` takes one file per run; a node's first module set holds thousands of
 * objects, and one exec per object costs minutes under TCG. This walks the
 * store once and enables each file (SHA-256, 4096-byte blocks: the digests
 * composefs images record). A file that already has verity (EEXIST) is
 * counted, not an error; names starting with '.' (partial files) are skipped.
 *
 * Usage: pn-verity-enable DIR...
 * Prints "enabled N, already M" and exits 0; on the first failure prints the
 * path and the error and exits 1. Built statically by `powernode image build`
 * with Debian's gcc (the build manifest records its version and this source's
 * SHA-256).
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/fsverity.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static unsigned long enabled, already;

static int visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    if (type != FTW_F)
        return 0;
    if (path[ftw->base] == '.')
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        fprintf(stderr, "pn-verity-enable: %s: open: %s\n", path, strerror(errno));
        return 1;
    }
    struct fsverity_enable_arg arg;
    memset(&arg, 0, sizeof(arg));
    arg.version = 1;
    arg.hash_algorithm = FS_VERITY_HASH_ALG_SHA256;
    arg.block_size = 4096;
    int rc = ioctl(fd, FS_IOC_ENABLE_VERITY, &arg);
    int err = errno;
    close(fd);
    if (rc == 0) {
        enabled++;
    } else if (err == EEXIST) {
        already++;
    } else {
        fprintf(stderr, "pn-verity-enable: %s: FS_IOC_ENABLE_VERITY: %s\n", path, strerror(err));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: pn-verity-enable DIR...\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (nftw(argv[i], visit, 16, FTW_PHYS) != 0) {
            fprintf(stderr, "pn-verity-enable: stopped in %s (enabled %lu, already %lu)\n",
                    argv[i], enabled, already);
            return 1;
        }
    }
    printf("enabled %lu, already %lu\n", enabled, already);
    return 0;
}
