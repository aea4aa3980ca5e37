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

#endif
