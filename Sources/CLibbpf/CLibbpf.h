#ifndef CLIBBPF_H
#define CLIBBPF_H

#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <linux/btf.h>
#include <linux/if_link.h>
#include <linux/bpf.h>
/* libxdp's dispatcher, for sharing an interface with other XDP programs (cooperative mode). */
#include <xdp/libxdp.h>

/* The layouts the XDP program uses: Swift reads them from here, never from a copy. */
#include "../../bpf/portcullis.h"

#include <linux/sched.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

/* glibc declares setns(2) only under _GNU_SOURCE, which a module map cannot set. */
static inline int portcullis_enter_network_namespace(int fd)
{
	return (int)syscall(SYS_setns, fd, CLONE_NEWNET);
}

/*
 * sched_setaffinity(2), sched_getaffinity(2) and getcpu(2) for the calling thread, for the same
 * reason: `mask` holds bit N for CPU N in `bytes` bytes. The tests that must run on one CPU,
 * whose per-CPU state BPF_PROG_TEST_RUN then uses, need them.
 */
static inline int portcullis_set_thread_cpus(const void *mask, unsigned long bytes)
{
	return (int)syscall(SYS_sched_setaffinity, 0, bytes, mask);
}

static inline int portcullis_get_thread_cpus(void *mask, unsigned long bytes)
{
	return syscall(SYS_sched_getaffinity, 0, bytes, mask) < 0 ? -1 : 0;
}

static inline int portcullis_current_cpu(void)
{
	unsigned int cpu = 0;

	return syscall(SYS_getcpu, &cpu, (void *)0, (void *)0) == 0 ? (int)cpu : -1;
}

#endif
