// File and block-device calls Swift's Glibc module hides (they need _GNU_SOURCE or are macros).
#ifndef CLINUX_FS_H
#define CLINUX_FS_H
#include <stdint.h>
#include <sys/types.h>

// Open flags and whence values.
extern const int clinux_O_DIRECT;
extern const int clinux_SEEK_DATA;
extern const int clinux_SEEK_HOLE;

// fallocate(2) modes.
extern const int clinux_FALLOC_FL_KEEP_SIZE;
extern const int clinux_FALLOC_FL_PUNCH_HOLE;
extern const int clinux_FALLOC_FL_ZERO_RANGE;
int clinux_fallocate(int fd, int mode, int64_t offset, int64_t length);

// The file lives on ext4 (fstatfs f_type EXT4_SUPER_MAGIC): 1, else 0.
int clinux_on_ext4(int fd);

// lseek that can take SEEK_DATA / SEEK_HOLE.
int64_t clinux_lseek(int fd, int64_t offset, int whence);

// Open file description locks (what QEMU uses for image locking).
// Returns 0 on success, -1 with errno on failure. type is F_RDLCK/F_WRLCK/F_UNLCK.
int clinux_ofd_setlk(int fd, int64_t start, int64_t len, short type);
// Probes whether a lock could be taken: returns 0 and sets *conflict_type (F_UNLCK when free).
int clinux_ofd_getlk(int fd, int64_t start, int64_t len, short type, short *conflict_type);
extern const short clinux_F_RDLCK;
extern const short clinux_F_WRLCK;
extern const short clinux_F_UNLCK;

// Block devices.
int clinux_blk_getsize64(int fd, uint64_t *size);
int clinux_blk_discard(int fd, uint64_t offset, uint64_t length);
int clinux_blk_zeroout(int fd, uint64_t offset, uint64_t length);
int clinux_is_block_device(int fd);

// copy_file_range(2).
int64_t clinux_copy_file_range(int fd_in, int64_t off_in, int fd_out, int64_t off_out, uint64_t len);

// Allocated 512-byte blocks of a file (st_blocks), -1 on error.
int64_t clinux_allocated_bytes(int fd);

// CPUs online (sysconf(_SC_NPROCESSORS_ONLN), at least 1).
int clinux_online_cpus(void);

#endif
