/* The kernel floor of a btrfs rollback, for bench/rollback.sh: bench/floor.sh without the shell
 * and without a process per step. One static program making only the system calls that cannot be
 * avoided: mount the top level (subvolid=5), BTRFS_IOC_SUBVOL_CREATE the next root, two
 * renameat2(RENAME_NOREPLACE) (the root aside to SNAPSHOTS/.floor-aside, the next root in place),
 * umount (the last unmount commits the transaction). No checks, no sync.
 *
 * Build: cc -O2 -static -o floor bench/floor.c
 * Usage: floor DEVICE [ROOT] [SNAPSHOTS]   (default @root @snapshots)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/btrfs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

static int fail(const char *what, const char *arg) {
    fprintf(stderr, "floor: %s %s: %m\n", what, arg);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: floor DEVICE [ROOT] [SNAPSHOTS]\n");
        return 2;
    }
    const char *dev = argv[1];
    const char *root = argc > 2 ? argv[2] : "@root";
    const char *snaps = argc > 3 ? argv[3] : "@snapshots";
    char top[] = "/tmp/floor-top.XXXXXX";
    if (!mkdtemp(top))
        return fail("mkdtemp", top);
    if (mount(dev, top, "btrfs", 0, "subvolid=5") != 0)
        return fail("mount", dev);
    int t = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (t < 0)
        return fail("open", top);
    int s = openat(t, snaps, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s < 0)
        return fail("open", snaps);
    struct btrfs_ioctl_vol_args args;
    memset(&args, 0, sizeof args);
    strcpy(args.name, ".new-root");
    if (ioctl(s, BTRFS_IOC_SUBVOL_CREATE, &args) != 0)
        return fail("create subvolume", ".new-root");
    if (renameat2(t, root, s, ".floor-aside", RENAME_NOREPLACE) != 0)
        return fail("rename", root);
    if (renameat2(s, ".new-root", t, root, RENAME_NOREPLACE) != 0)
        return fail("rename", ".new-root");
    close(s);
    close(t);
    if (umount(top) != 0)
        return fail("umount", top);
    rmdir(top);
    return 0;
}
