// Compiled with _GNU_SOURCE (Package.swift), so the Linux-only names are visible here.
#include "clinux_fs.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

const int clinux_O_DIRECT = O_DIRECT;
const int clinux_SEEK_DATA = SEEK_DATA;
const int clinux_SEEK_HOLE = SEEK_HOLE;
const int clinux_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int clinux_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
const int clinux_FALLOC_FL_ZERO_RANGE = FALLOC_FL_ZERO_RANGE;
const short clinux_F_RDLCK = F_RDLCK;
const short clinux_F_WRLCK = F_WRLCK;
const short clinux_F_UNLCK = F_UNLCK;

int clinux_fallocate(int fd, int mode, int64_t offset, int64_t length) {
    int r;
    do { r = fallocate(fd, mode, offset, length); } while (r < 0 && errno == EINTR);
    return r;
}

int clinux_on_ext4(int fd) {
    struct statfs fs;
    return fstatfs(fd, &fs) == 0 && fs.f_type == 0xEF53;
}

int64_t clinux_lseek(int fd, int64_t offset, int whence) { return lseek(fd, offset, whence); }

int clinux_ofd_setlk(int fd, int64_t start, int64_t len, short type) {
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len, .l_pid = 0 };
    int r;
    do { r = fcntl(fd, F_OFD_SETLK, &fl); } while (r < 0 && errno == EINTR);
    return r;
}

int clinux_ofd_getlk(int fd, int64_t start, int64_t len, short type, short *conflict_type) {
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len, .l_pid = 0 };
    int r;
    do { r = fcntl(fd, F_OFD_GETLK, &fl); } while (r < 0 && errno == EINTR);
    if (r == 0) *conflict_type = fl.l_type;
    return r;
}

int clinux_blk_getsize64(int fd, uint64_t *size) { return ioctl(fd, BLKGETSIZE64, size); }

int clinux_blk_discard(int fd, uint64_t offset, uint64_t length) {
    uint64_t range[2] = { offset, length };
    return ioctl(fd, BLKDISCARD, range);
}

int clinux_blk_zeroout(int fd, uint64_t offset, uint64_t length) {
    uint64_t range[2] = { offset, length };
    return ioctl(fd, BLKZEROOUT, range);
}

int clinux_is_block_device(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0) return 0;
    return S_ISBLK(st.st_mode) ? 1 : 0;
}

int64_t clinux_copy_file_range(int fd_in, int64_t off_in, int fd_out, int64_t off_out, uint64_t len) {
    loff_t i = off_in, o = off_out;
    ssize_t r;
    do { r = copy_file_range(fd_in, &i, fd_out, &o, len, 0); } while (r < 0 && errno == EINTR);
    return r;
}

int64_t clinux_allocated_bytes(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0) return -1;
    return (int64_t)st.st_blocks * 512;
}

int clinux_online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
