/* sys.h: raw Linux system calls on arm64 (no libc). x8 = number, x0-x5 = args. */
#ifndef WORKLOAD_SYS_H
#define WORKLOAD_SYS_H

typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned char u8;

/* include/uapi/asm-generic/unistd.h */
#define SYS_ioctl             29
#define SYS_mount             40
#define SYS_openat            56
#define SYS_close             57
#define SYS_pipe2             59
#define SYS_read              63
#define SYS_write             64
#define SYS_exit_group        94
#define SYS_futex             98
#define SYS_clock_gettime     113
#define SYS_syslog            116
#define SYS_sched_setaffinity 122
#define SYS_rt_sigaction      134
#define SYS_reboot            142
#define SYS_getcpu            168
#define SYS_gettid            178
#define SYS_munmap            215
#define SYS_clone             220
#define SYS_mmap              222
#define SYS_mprotect          226
#define SYS_madvise           233
#define SYS_wait4             260

static inline long syscall6(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4),
			 "r"(x5) : "memory", "cc");
	return x0;
}
#define sys0(n)                 syscall6(n, 0, 0, 0, 0, 0, 0)
#define sys1(n, a)              syscall6(n, (long)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b)           syscall6(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c)        syscall6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sys4(n, a, b, c, d)     syscall6(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define sys6(n, a, b, c, d, e, f) \
	syscall6(n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

/* include/uapi/asm-generic/mman-common.h, mman.h */
#define PROT_NONE  0
#define PROT_READ  1
#define PROT_WRITE 2
#define MAP_PRIVATE         0x02
#define MAP_FIXED           0x10
#define MAP_ANONYMOUS       0x20
#define MAP_FIXED_NOREPLACE 0x100000	/* v4.17 */
#define MADV_DONTNEED   4
#define MADV_HUGEPAGE   14
#define MADV_NOHUGEPAGE 15

/* include/uapi/linux/sched.h, signal numbers */
#define CLONE_VM      0x00000100
#define CLONE_FS      0x00000200
#define CLONE_FILES   0x00000400
#define CLONE_SIGHAND 0x00000800
#define CLONE_THREAD  0x00010000
#define CLONE_SYSVSEM 0x00040000
#define SIGSEGV 11
#define SIGCHLD 17

#define SA_SIGINFO  0x00000004
#define SA_RESTORER 0x04000000

#define FUTEX_WAIT_PRIVATE 128
#define FUTEX_WAKE_PRIVATE 129

#define TCGETS 0x5401
#define TCSETS 0x5402
#define ECHO   0000010
#define ECHOE  0000020
#define ECHOK  0000040
#define ECHONL 0000100

#define LINUX_REBOOT_MAGIC1 0xfee1dead
#define LINUX_REBOOT_MAGIC2 672274793
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321fedc

#define CLOCK_MONOTONIC 1
#define AT_PAGESZ 6
#define EFAULT 14
#define AT_FDCWD (-100)
#define O_RDONLY 0

struct timespec { long tv_sec; long tv_nsec; };

/* include/uapi/asm-generic/termbits.h (struct termios, NCCS 19) */
struct termios { u32 c_iflag, c_oflag, c_cflag, c_lflag; u8 c_line; u8 c_cc[19]; };

/* the kernel's struct sigaction for rt_sigaction (arm64 has sa_restorer) */
struct k_sigaction {
	void (*handler)(int, void *, void *);
	u64 flags;
	void (*restorer)(void);
	u64 mask;
};

/* arch/arm64/include/uapi/asm/sigcontext.h, include/uapi/asm-generic/ucontext.h */
struct sigcontext {
	u64 fault_address;
	u64 regs[31];
	u64 sp;
	u64 pc;
	u64 pstate;
	u8 reserved[4096] __attribute__((aligned(16)));
};
struct ucontext {
	u64 uc_flags;
	struct ucontext *uc_link;
	struct { void *ss_sp; int ss_flags; u64 ss_size; } uc_stack;
	u64 uc_sigmask;
	u8 unused[1024 / 8 - sizeof(u64)];
	struct sigcontext uc_mcontext __attribute__((aligned(16)));
};
_Static_assert(__builtin_offsetof(struct ucontext, uc_mcontext) == 176, "ucontext layout");
_Static_assert(__builtin_offsetof(struct sigcontext, pc) == 264, "sigcontext layout");

/* siginfo_t: si_signo, si_errno, si_code, then (for SIGSEGV) si_addr at 16 */
struct siginfo { int si_signo, si_errno, si_code, pad; void *si_addr; };

#endif
