/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * xseg.h - the C view of the XSEG shared-memory segment ABI.
 *
 * This header mirrors xseg/src/layout.rs (and the op/flag numbers of
 * xseg/src/request.rs) byte for byte; xseg/tests/c_abi.rs compiles it and checks
 * every size, alignment, offset and constant against the Rust definitions.
 * Any change here or there is an ABI change: bump XSEG_ABI_VERSION.
 *
 * It compiles in the kernel (__KERNEL__, <linux/types.h>) and in user space
 * (C11: <linux/types.h> when present, otherwise <stdint.h>).
 *
 * Segment layout
 * --------------
 * A segment is one file (user space: under /dev/shm). Everything inside is
 * addressed by byte offsets from the segment's start, so every process may map
 * it anywhere. All offsets and counts come from the geometry in the header:
 *
 *   0                 struct xseg_segment_header      (XSEG_HEADER_BYTES reserved)
 *   ports_offset      struct xseg_port[nr_ports]       port_desc_bytes each
 *   requests_offset   struct xseg_request[nr_requests] request_desc_bytes each
 *   buffers_offset    struct xseg_buffer[nr_buffers]   4 bytes each
 *   rings_offset      2 * nr_ports rings               ring_stride_bytes each
 *   data_offset       nr_buffers data buffers          buffer_bytes each
 *
 * The ports, requests and rings start on 64-byte boundaries, the data area on a
 * page boundary. Ring 2p is port p's request ring (requests for p to serve),
 * ring 2p + 1 its reply ring (answers to requests p sent). A ring is a struct
 * xseg_ring_header (head and tail, each on its own cache line) followed at
 * ring_header_bytes by queue_capacity __u64 slots (a power of two).
 *
 * A joiner checks magic, abi_version and state == XSEG_SEGMENT_READY (the
 * geometry is written once, before state becomes READY, and never changes).
 * Every index or window read from the segment must be bounds-checked: another
 * peer may have scribbled on it.
 *
 * Requests
 * --------
 * A request's state word is (owner_port << 16) | [XSEG_REQ_ORPHAN] | state,
 * 0 when free. Every transition is a CAS on that word:
 *   FREE -> HELD (owner takes it) -> SUBMITTED (in the destination's request
 *   ring) -> ACCEPTED (destination serving it) -> REPLIED (errno set, in the
 *   owner's reply ring) -> HELD (owner received it) -> FREE (owner put it back).
 * A ring entry is only a hint: whoever pops an index re-validates the word. If
 * ORPHAN is set (the owner died while the request was away) the holder frees
 * the request instead of replying. A request's data window (data_offset,
 * data_len) is relative to the data area; a data buffer is owned by the request
 * whose index + 1 is in its xseg_buffer.owner_request (0: free). The target
 * name is stored in target[] as little-endian 64-bit words (on a little-endian
 * host: simply the bytes in order), target_len bytes long.
 *
 * Ring protocol
 * -------------
 * Each slot is one 64-bit word (seq << 32) | value, updated in one atomic step;
 * slot i starts as (i, 0). Positions are 64-bit counters; pos's slot is
 * slots[pos & (capacity - 1)] and sequences are compared with the low 32 bits
 * of pos, with wrapping (signed) arithmetic.
 *  - Produce: read pos = tail. If the slot's seq is pos, claim pos by CAS of
 *    tail from pos to pos + 1, then publish by CAS of the slot from (pos, _) to
 *    (pos + 1, value); if that CAS fails, recovery stole the slot: start over.
 *    If the seq is behind pos (and tail has not moved), the ring is full.
 *  - Consume: read pos = head. If the slot's seq is pos + 1, take it by CAS of
 *    head from pos to pos + 1, keep the value already read, then release the
 *    slot for the next lap by storing (pos + capacity, 0). Drop
 *    XSEG_RING_SKIP values. If the seq is behind pos + 1, nothing is ready.
 *  - Recovery steals a claim that a dead producer never published (seq still
 *    pos for pos in [head, tail)) by CAS to (pos + 1, XSEG_RING_SKIP), and
 *    releases slots that a dead consumer took but never released.
 *
 * Doorbell protocol
 * -----------------
 * Each port has a futex word, wake_seq, and a sleepers word: the count of its
 * sleepers (low bits) and XSEG_SLEEPERS_WOKEN, set by the signaller that woke
 * them. The futex is shared (not FUTEX_PRIVATE): it works across processes.
 *  - Waiter: check for work (spin a little); seq = wake_seq; atomically
 *    sleepers = (sleepers + 1) & ~XSEG_SLEEPERS_WOKEN; full fence; check again;
 *    if still nothing, futex-wait on wake_seq while it equals seq (with a
 *    timeout); sleepers -= 1.
 *  - Signaller, after publishing work: full fence; if the count is not 0 and
 *    XSEG_SLEEPERS_WOKEN is clear, set XSEG_SLEEPERS_WOKEN (atomic or); if it
 *    was clear before, wake_seq += 1 and futex-wake all waiters on wake_seq.
 * Both sides write, fence (sequentially consistent), then read: either the
 * waiter's re-check sees the work or the signaller sees the sleeper (or that a
 * signaller after its registration already woke it), so no wake-up is lost; an
 * awake port costs a submitter one load, and sleepers already woken cost later
 * signallers no system call.
 *
 * Shared mutable fields are atomics in Rust; here they are plain integers that
 * must be accessed atomically (READ_ONCE/WRITE_ONCE, cmpxchg, __atomic_*).
 */
#ifndef XSEG_H
#define XSEG_H

#if defined(__KERNEL__)
#include <linux/types.h>
#else
/*
 * Prefer the kernel's own __u* types, so that this header and the kernel's
 * uapi headers (e.g. <linux/futex.h>) can be used together: on LP64 hosts
 * uint64_t (unsigned long) and __u64 (unsigned long long) differ.
 */
#if defined(__linux__) && defined(__has_include)
#if __has_include(<linux/types.h>)
#include <linux/types.h>
#define XSEG_HAVE_LINUX_TYPES 1
#endif
#endif
#ifndef XSEG_HAVE_LINUX_TYPES
#include <stdint.h>
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
#endif
#endif

/* Constants. */

/* The first 8 bytes of a segment (no terminating NUL in the segment). */
#define XSEG_MAGIC "ARCHXSEG"
#define XSEG_MAGIC_LEN 8
#define XSEG_ABI_VERSION 2U
/* Longest target (volume or object name) a request carries. */
#define XSEG_TARGET_LEN_MAX 256U
#define XSEG_NO_BUFFER 0xffffffffU
#define XSEG_NO_PORT 0xffffffffU
/* Bytes reserved for the segment header (one page); ports start here. */
#define XSEG_HEADER_BYTES 4096ULL
#define XSEG_CACHE_LINE 64ULL

/* struct xseg_segment_header.state */
#define XSEG_SEGMENT_INITIALIZING 0U
#define XSEG_SEGMENT_READY 1U

/* struct xseg_port.owner_pid: these, or the owner's pid. */
#define XSEG_PORT_FREE 0U
#define XSEG_PORT_RECOVERING 0xffffffffU
#define XSEG_SLEEPERS_WOKEN 0x80000000U

/* Request states: the low byte of struct xseg_request.state. */
#define XSEG_REQ_FREE 0U
#define XSEG_REQ_HELD 1U      /* held by its owner (after get, or receive) */
#define XSEG_REQ_SUBMITTED 2U /* in the destination's request ring */
#define XSEG_REQ_ACCEPTED 3U  /* held by the destination, serving it */
#define XSEG_REQ_REPLIED 4U   /* answered (errno), in the owner's reply ring */
#define XSEG_REQ_ORPHAN 0x100U
#define XSEG_REQ_STATE_MASK 0xffU
#define XSEG_REQ_OWNER_SHIFT 16

/* The value recovery publishes in a stolen ring slot; consumers drop it. */
#define XSEG_RING_SKIP 0xffffffffU

/* Configuration bounds (port numbers must fit the 16 owner bits). */
#define XSEG_NR_PORTS_MAX 65535U
#define XSEG_NR_REQUESTS_MAX (1U << 20)
#define XSEG_NR_BUFFERS_MAX (1U << 20)
#define XSEG_BUFFER_BYTES_MAX (64ULL << 20)
#define XSEG_QUEUE_CAPACITY_MAX (1U << 20)
#define XSEG_SEGMENT_BYTES_MAX (64ULL << 30)

/* struct xseg_request.op */
#define XSEG_OP_PING 0U
#define XSEG_OP_READ 1U
#define XSEG_OP_WRITE 2U
#define XSEG_OP_FLUSH 3U
#define XSEG_OP_DISCARD 4U
#define XSEG_OP_WRITE_ZEROES 5U
#define XSEG_OP_INFO 6U
#define XSEG_OP_OPEN 7U
#define XSEG_OP_CLOSE 8U
#define XSEG_OP_CREATE 9U
#define XSEG_OP_CLONE 10U
#define XSEG_OP_SNAPSHOT 11U
#define XSEG_OP_DELETE 12U
#define XSEG_OP_RENAME 13U
#define XSEG_OP_RESIZE 14U
#define XSEG_OP_COPY 15U
#define XSEG_OP_HASH 16U
#define XSEG_OP_ACQUIRE 17U
#define XSEG_OP_RELEASE 18U
#define XSEG_OP_MAPR 19U
#define XSEG_OP_MAPW 20U
#define XSEG_OP_LIST 21U
#define XSEG_OP_WRITE_FULL 22U
#define XSEG_OP_LOCK_INFO 23U
#define XSEG_OP_COUNT 24U

/* struct xseg_request.flags (a bit set) */
#define XSEG_FLAG_FUA 1U    /* durable when completed */
#define XSEG_FLAG_NOSYNC 2U /* try once, do not wait (e.g. for a lock) */
#define XSEG_FLAG_FORCE 4U  /* override a safety check */
#define XSEG_FLAG_ALL (XSEG_FLAG_FUA | XSEG_FLAG_NOSYNC | XSEG_FLAG_FORCE)

/* Structures. */

/* What never changes after creation. */
struct xseg_geometry {
	__u8 magic[8];
	__u32 abi_version;
	__u32 header_bytes; /* sizeof(struct xseg_segment_header) */
	__u64 segment_bytes;
	__u32 nr_ports;
	__u32 dynamic_port_start; /* ports below are static, the rest dynamic */
	__u32 nr_requests;
	__u32 nr_buffers;
	__u32 queue_capacity;
	__u32 port_desc_bytes;
	__u32 request_desc_bytes;
	__u32 ring_header_bytes;
	__u64 buffer_bytes;
	__u64 ports_offset;
	__u64 requests_offset;
	__u64 buffers_offset;
	__u64 rings_offset;
	__u64 ring_stride_bytes;
	__u64 data_offset;
	__u64 data_bytes;
};

struct xseg_segment_header {
	struct xseg_geometry geometry;
	__u32 state; /* XSEG_SEGMENT_* */
	/* Allocation hints: where the next scan for a free one starts. */
	__u32 request_cursor;
	__u32 buffer_cursor;
	__u32 dynamic_cursor;
	__u64 created_unix_ms;
};

struct xseg_port {
	/* First cache line: read-mostly (owner) and the doorbell. */
	/* XSEG_PORT_FREE, XSEG_PORT_RECOVERING or the owner's pid; bind by CAS from FREE. */
	__u32 owner_pid;
	__u32 bind_generation;
	/* The owner's start time (clock ticks since boot), against pid reuse. */
	__u64 owner_start_time;
	/* The doorbell: futex word and sleeper count. */
	__u32 wake_seq;
	__u32 sleepers;
	__u64 _pad0[5];
	/* Second cache line: counters only the owner writes. */
	/* Requests taken from the pool and not put back (at most queue_capacity). */
	__u32 requests_owned;
	__u32 recoverer_pid; /* who recovers the port while owner_pid is XSEG_PORT_RECOVERING */
	__u64 requests_submitted;
	__u64 requests_served;
	__u64 requests_failed;
	__u64 requests_rejected;
	__u64 _pad1[3];
} __attribute__((aligned(64)));

/*
 * The two cursors of a ring, on separate cache lines; the slots follow. Only
 * 8-byte aligned as a type: rings_offset and ring_stride_bytes put each ring on
 * a cache line.
 */
struct xseg_ring_header {
	__u64 head;
	__u64 _pad0[7];
	__u64 tail;
	__u64 _pad1[7];
};

struct xseg_request {
	/* First cache line: what crosses between client and server on every request. */
	__u32 state; /* (owner_port << 16) | [XSEG_REQ_ORPHAN] | XSEG_REQ_* */
	__u32 op;    /* XSEG_OP_* */
	__u32 flags; /* XSEG_FLAG_* */
	__u32 error; /* 0 when served, else the (positive) errno of the failure */
	__u32 target_len;
	__u32 dst_port;
	__u64 offset;
	__u64 size;
	__u64 serviced;
	/* The data window, relative to the data area. */
	__u64 data_offset;
	__u64 data_len;
	/* Second cache line on: what only the owner uses. */
	__u32 owner_generation;
	__u32 src_port;
	__u32 buffer_index; /* XSEG_NO_BUFFER when it owns none */
	__u32 _reserved;
	__u64 serial;
	__u64 user_data; /* opaque to xseg: the sender's tag */
	__u64 target[XSEG_TARGET_LEN_MAX / 8];
	__u64 _pad[4];
} __attribute__((aligned(64)));

/* Which request (index + 1) holds a data buffer; 0 when free. */
struct xseg_buffer {
	__u32 owner_request;
};

_Static_assert(sizeof(struct xseg_geometry) == 120, "xseg_geometry size");
_Static_assert(sizeof(struct xseg_segment_header) == 144, "xseg_segment_header size");
_Static_assert(sizeof(struct xseg_segment_header) <= XSEG_HEADER_BYTES, "xseg header fits");
_Static_assert(sizeof(struct xseg_port) == 128, "xseg_port size");
_Static_assert(sizeof(struct xseg_ring_header) == 128, "xseg_ring_header size");
_Static_assert(sizeof(struct xseg_request) == 384, "xseg_request size");
_Static_assert(sizeof(struct xseg_buffer) == 4, "xseg_buffer size");
_Static_assert(_Alignof(struct xseg_port) == 64, "xseg_port alignment");
_Static_assert(_Alignof(struct xseg_request) == 64, "xseg_request alignment");
_Static_assert(sizeof(XSEG_MAGIC) == XSEG_MAGIC_LEN + 1, "xseg magic length");

/* Helpers. */

/* The state word of a request owned by owner_port (< XSEG_NR_PORTS_MAX). */
static inline __u32 xseg_req_word(__u32 owner_port, __u32 state)
{
	return (owner_port << XSEG_REQ_OWNER_SHIFT) | state;
}

static inline __u32 xseg_req_owner(__u32 word)
{
	return word >> XSEG_REQ_OWNER_SHIFT;
}

static inline __u32 xseg_req_state(__u32 word)
{
	return word & XSEG_REQ_STATE_MASK;
}

static inline int xseg_req_orphaned(__u32 word)
{
	return (word & XSEG_REQ_ORPHAN) != 0;
}

/* A ring slot: (seq << 32) | value. */
static inline __u64 xseg_ring_slot(__u32 seq, __u32 value)
{
	return ((__u64)seq << 32) | value;
}

static inline __u32 xseg_ring_slot_seq(__u64 slot)
{
	return (__u32)(slot >> 32);
}

static inline __u32 xseg_ring_slot_value(__u64 slot)
{
	return (__u32)slot;
}

/* seq - expected as a signed distance (0: as expected; < 0: behind). */
static inline int xseg_ring_distance(__u32 seq, __u64 expected)
{
	return (int)(__u32)(seq - (__u32)expected);
}

#endif /* XSEG_H */
