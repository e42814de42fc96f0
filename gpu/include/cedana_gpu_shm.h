/* The shared-memory protocol between the interposer (in the job) and the GPU
 * controller: the one definition of the wire format.
 *
 * One POSIX shared-memory file per job, /dev/shm/cedana-gpu.<job id>, mode
 * 0600, created by the controller before the job starts and sized once:
 *
 *   [header (CGS_HEADER_SIZE)] [request ring] [channels ...]
 *
 * Requests travel through one ring of fixed-size slots (many producers: the
 * job's threads; one consumer: the controller), so every call is handled in
 * the order it was issued and per-stream order holds across threads. A
 * request longer than one slot takes consecutive slots. Synchronous calls
 * name a channel: a per-thread completion record plus a staging area for
 * pageable copies and other bulk bytes. Doorbells are futex words in the
 * segment; never eventfds or pipes, which CRIU restores as private copies.
 *
 * Everything here is read by the controller from memory the job can write,
 * so the controller copies each request out before validating it, and keeps
 * its own copy of the geometry (ring size, channel count, staging size).
 *
 * The ops are listed once, in cedana_gpu_ops.def. Mirrored in Python by
 * cedana_gpu/controller/shm_protocol.py, which gen_protocol.py generates from
 * this header and the op table (re-exported by shm_layout.py); a test
 * compares the mirror with the compiler's layout field by field
 * (tests/test_shm_layout.py), another that it is up to date
 * (tests/test_protocol_generated.py). The parser knows this header's forms
 * only: fixed-width integers, char, nested structs, constant-size arrays,
 * object-like #defines of integer or string constants.
 */
#ifndef CEDANA_GPU_SHM_H
#define CEDANA_GPU_SHM_H

#include <stddef.h>
#include <stdint.h>

#define CGS_MAGIC 0x3155504741444543ull /* "CEDAGPU1" little-endian */
#define CGS_LAYOUT_VERSION 2u
#define CGS_NAME_PREFIX "/cedana-gpu."  /* + job id: shm_open name */
#define CGS_JOB_ID_MAX 64
#define CGS_MAX_DEVICES 8
/* Set in header.mint_regions by the controller while the job is frozen: no
 * process claims a handle region until it is clear (intercept/handles.c), so
 * the count a dump writes is the count the job's memory holds. */
#define CGS_MINT_CLOSED 0x80000000u
#define CGS_MAX_ATTRIBUTES 160 /* > CU_DEVICE_ATTRIBUTE_MAX in CUDA 13 */
#define CGS_HEADER_SIZE 65536u
#define CGS_SLOT_SIZE 256u
#define CGS_SLOT_DATA (CGS_SLOT_SIZE - 8u) /* bytes of request per slot */
#define CGS_MAX_REQUEST_SLOTS 64u          /* a request spans at most this many slots */
#define CGS_CHANNEL_HEADER 4096u           /* a channel's completion record; staging follows */
#define CGS_NO_CHANNEL 0xffffffffu
#define CGS_CALLBACKS 256u /* host-function callback ring entries */

/* Defaults; the controller's configuration may change them. */
#define CGS_DEFAULT_RING_SLOTS 4096u
#define CGS_DEFAULT_CHANNELS 32u
#define CGS_DEFAULT_STAGING (1u << 20)

/* Lifecycle of the segment, in header.state (a futex word: threads of the job
 * park on it while the controller freezes, dumps or restores). */
enum cgs_state {
  CGS_STATE_STARTING = 0,  /* controller setting up; the job waits */
  CGS_STATE_RUNNING = 1,   /* calls flow */
  CGS_STATE_FREEZING = 2,  /* new calls park; calls in hand finish */
  CGS_STATE_FROZEN = 3,    /* nothing in flight, streams idle */
  CGS_STATE_RESTORING = 4, /* a new controller is rebuilding GPU state */
  CGS_STATE_DEAD = 5,      /* the controller is gone: calls fail at once */
};

typedef struct cgs_device {
  char name[256];
  uint8_t uuid[16];
  uint64_t total_mem;
  int32_t cc_major, cc_minor;
  int32_t attributes[CGS_MAX_ATTRIBUTES]; /* cuDeviceGetAttribute, by attribute number */
} cgs_device;

typedef struct cgs_callback {
  uint64_t id;   /* interposer-side callback id */
  uint32_t done; /* futex: set to 1 by the job when the callback returned */
  uint32_t _pad;
} cgs_callback;

typedef struct cgs_header {
  /* Identity and geometry: written once by the controller. */
  uint64_t magic;
  uint32_t layout_version;
  uint32_t header_size;
  uint64_t segment_size;
  uint64_t generation; /* bumped by every controller that serves this job (restore) */
  uint32_t state;      /* enum cgs_state; futex */
  uint32_t controller_pid;
  uint32_t ring_slots; /* power of two */
  uint32_t nchannels;
  uint64_t ring_offset;
  uint64_t channels_offset;
  uint64_t channel_stride; /* CGS_CHANNEL_HEADER + staging_size */
  uint64_t staging_size;
  uint64_t va_base; /* the controller's reserved device address range */
  uint64_t va_size;
  int32_t async_error; /* first error of a queued call; returned by the next waiting call */
  uint32_t inflight;   /* job threads inside a call (freeze waits for 0) */
  uint64_t heartbeat;  /* incremented by the controller while it lives */
  uint32_t timeout_ms; /* how long a waiting call trusts a silent controller */
  uint32_t mint_regions; /* handle regions the job's processes claimed, | CGS_MINT_CLOSED (atomic; futex) */
  char job_id[CGS_JOB_ID_MAX];
  uint8_t _pad1[256 - 184];

  /* Each hot word on its own cache line. */
  uint32_t ctrl_doorbell; /* futex the controller sleeps on */
  uint32_t ctrl_sleeping; /* 1 while it sleeps: producers then wake it */
  uint8_t _pad2[56];
  uint64_t head; /* next ring ticket for producers */
  uint8_t _pad3[56];
  uint64_t tail; /* next ticket the controller consumes (informational) */
  uint8_t _pad4[56];

  /* Host functions (cuLaunchHostFunc) run in the job: the controller posts
   * them here when their stream reaches them and waits for `done`. */
  uint32_t cb_doorbell; /* futex the job's callback thread sleeps on */
  uint32_t _pad5;
  uint64_t cb_head; /* written by the controller */
  uint64_t cb_tail; /* written by the job */
  uint8_t _pad6[40];
  cgs_callback callbacks[CGS_CALLBACKS];

  /* Devices, answered locally by the interposer. */
  int32_t driver_version;
  int32_t device_count;
  cgs_device devices[CGS_MAX_DEVICES];
} cgs_header;

/* A ring slot. seq follows the bounded-queue discipline: slot i is free for
 * ticket t when seq == t, and holds ticket t's data when seq == t + 1. */
typedef struct cgs_slot {
  uint64_t seq;
  uint8_t data[CGS_SLOT_DATA];
} cgs_slot;

/* A channel: one per job thread that makes synchronous calls. */
typedef struct cgs_channel {
  uint32_t owner; /* tid of the owning thread; 0 = free (claimed by CAS) */
  uint32_t done;  /* futex: token of the last completed request */
  int32_t result; /* CUresult of that request */
  uint32_t _pad;
  uint64_t ret[8]; /* return values, per op */
  uint8_t _pad1[CGS_CHANNEL_HEADER - 80];
  /* staging bytes follow: uint8_t staging[staging_size] */
} cgs_channel;

/* ---- requests ------------------------------------------------------------
 * Every request starts with cgs_req; op-specific arguments follow. Handles
 * (contexts, streams, events, modules, functions) are the values the
 * interposer minted; 0 means "none / the NULL stream". Device pointers are
 * real device addresses (placed by the controller). Which struct each op
 * takes, whether it needs a channel and what it answers: cedana_gpu_ops.def. */
enum cgs_op {
#define CGS_OP(name, request, channel, min_len, check, handler) CGS_OP_##name,
#include "cedana_gpu_ops.def"
#undef CGS_OP
  CGS_OP_COUNT
};

/* What a request's channel field may hold (the `channel` column of the op
 * table). */
enum cgs_channel_rule {
  CGS_CHANNEL_ASYNC = 0,   /* optional: CGS_NO_CHANNEL queues the call */
  CGS_CHANNEL_SYNC = 1,    /* required: the caller waits for the completion */
  CGS_CHANNEL_DEPENDS = 2, /* the request's fields decide (staged or synchronous copies) */
};

/* The op's name without the CGS_OP_ prefix, or NULL for an unknown op. */
static inline const char *cgs_op_name(uint32_t op) {
  static const char *const names[CGS_OP_COUNT] = {
#define CGS_OP(name, request, channel, min_len, check, handler) [CGS_OP_##name] = #name,
#include "cedana_gpu_ops.def"
#undef CGS_OP
  };
  return op < CGS_OP_COUNT ? names[op] : NULL;
}

/* enum cgs_channel_rule of the op, or -1 for an unknown op. */
static inline int cgs_op_channel_rule(uint32_t op) {
  static const unsigned char rules[CGS_OP_COUNT] = {
#define CGS_OP(name, request, channel, min_len, check, handler) [CGS_OP_##name] = CGS_CHANNEL_##channel,
#include "cedana_gpu_ops.def"
#undef CGS_OP
  };
  return op < CGS_OP_COUNT ? rules[op] : -1;
}

typedef struct cgs_req {
  uint32_t op;      /* enum cgs_op */
  uint32_t nslots;  /* ring slots this request spans, >= 1 */
  uint32_t channel; /* completion channel, or CGS_NO_CHANNEL for queued calls */
  uint32_t token;   /* written to channel.done on completion */
  uint32_t length;  /* bytes of the request including this header */
  uint32_t _pad;
  uint64_t ctx; /* the caller's current context (minted), 0 if none */
} cgs_req;

typedef struct cgs_ctx {
  cgs_req h;
  uint64_t handle; /* minted context */
  int32_t device;
  uint32_t flags;
} cgs_ctx;

typedef struct cgs_mem {
  cgs_req h;
  uint64_t dptr;
  uint64_t size;
} cgs_mem;

/* Where the host side of a copy lives. */
enum cgs_host_kind {
  CGS_HOST_STAGING = 1, /* the channel's staging area, at `host_offset` */
  CGS_HOST_PINNED = 2,  /* pinned file `pin_id`, at `host_offset` */
};

typedef struct cgs_copy {
  cgs_req h;
  uint64_t stream; /* minted stream, 0 = NULL stream */
  uint64_t dst;    /* device address (DTOD/HTOD) */
  uint64_t src;    /* device address (DTOD/DTOH) */
  uint64_t size;
  uint64_t host_offset;
  uint32_t host_kind; /* enum cgs_host_kind */
  uint32_t pin_id;
  uint32_t async;      /* 1: queued on `stream` (pinned only) */
  uint32_t per_thread; /* 1: NULL stream means the per-thread default stream */
} cgs_copy;

typedef struct cgs_memset {
  cgs_req h;
  uint64_t stream;
  uint64_t dst;
  uint64_t pitch; /* 0 for 1D */
  uint64_t width; /* elements per row (1D: count) */
  uint64_t height; /* rows (1D: 1) */
  uint32_t value;
  uint32_t elem_size; /* 1, 2 or 4 */
  uint32_t async;
  uint32_t per_thread;
} cgs_memset;

typedef struct cgs_stream {
  cgs_req h;
  uint64_t handle; /* minted stream, 0 = NULL stream */
  uint64_t event;  /* STREAM_WAIT_EVENT */
  uint32_t flags;
  int32_t priority;
  uint32_t per_thread;
  uint32_t _pad;
} cgs_stream;

typedef struct cgs_event {
  cgs_req h;
  uint64_t handle;
  uint64_t stream; /* EVENT_RECORD */
  uint64_t other;  /* EVENT_ELAPSED: the end event */
  uint32_t flags;
  uint32_t per_thread;
} cgs_event;

typedef struct cgs_blob {
  cgs_req h;
  uint64_t offset; /* where these bytes go in the blob (0 starts a new blob) */
  uint64_t size;   /* bytes taken from the start of the staging area */
  uint64_t total;  /* the whole blob's size */
} cgs_blob;

typedef struct cgs_module {
  cgs_req h;
  uint64_t handle; /* minted module */
  uint64_t size;   /* image size: the channel's blob must hold exactly this */
} cgs_module;

typedef struct cgs_symbol {
  cgs_req h;
  uint64_t module;
  uint64_t handle; /* minted function (GET_FUNCTION) */
  char name[CGS_SLOT_DATA * 2 - 48]; /* NUL-terminated */
} cgs_symbol;

typedef struct cgs_param {
  uint32_t offset;
  uint32_t size;
} cgs_param;

typedef struct cgs_func_attr {
  cgs_req h;
  uint64_t function;
  int32_t attribute;
  int32_t value;
} cgs_func_attr;

typedef struct cgs_launch {
  cgs_req h;
  uint64_t function;
  uint64_t stream;
  uint32_t grid[3];
  uint32_t block[3];
  uint32_t shared_bytes;
  uint32_t args_size; /* packed argument bytes follow this struct */
  uint32_t per_thread;
  uint32_t _pad;
} cgs_launch;

/* cgs_pin.flags of HOST_REGISTER for managed memory: the controller must map
 * the file at app_addr (kernels get the job's pointers), or refuse. */
#define CGS_PIN_SAME_ADDRESS 0x80000000u

typedef struct cgs_pin {
  cgs_req h;
  uint64_t app_addr; /* where the job mapped the pinned file */
  uint64_t size;
  uint32_t pin_id;
  uint32_t flags;
} cgs_pin;

typedef struct cgs_host_func {
  cgs_req h;
  uint64_t stream;
  uint64_t callback_id;
  uint32_t per_thread;
  uint32_t _pad;
} cgs_host_func;

/* VMM_* ops: one struct for all; each uses the fields its comment names. */
typedef struct cgs_vmm {
  cgs_req h;
  uint64_t addr;      /* RESERVE: the hint; FREE, MAP, UNMAP, *_ACCESS: the address */
  uint64_t size;      /* RESERVE, FREE, CREATE, MAP, UNMAP, SET_ACCESS */
  uint64_t alignment; /* RESERVE */
  uint64_t handle;    /* RELEASE, MAP: the physical allocation (what CREATE answered) */
  uint64_t offset;    /* MAP: into the physical allocation */
  uint64_t flags;     /* the call's flags argument */
  /* GRANULARITY, CREATE: the CUmemAllocationProp's fields that cross;
   * GET_ACCESS: location_type and location_id are the location asked about. */
  uint32_t type;
  uint32_t handle_types;
  int32_t location_type;
  int32_t location_id;
  uint32_t option;  /* GRANULARITY: CUmemAllocationGranularity_flags */
  uint32_t naccess; /* SET_ACCESS: entries of the descriptors below */
  int32_t access_device[CGS_MAX_DEVICES];
  uint32_t access_flags[CGS_MAX_DEVICES];
} cgs_vmm;

/* POOL_* ops. */
typedef struct cgs_pool {
  cgs_req h;
  uint64_t handle;   /* the minted pool (ALLOC: the pool to take from) */
  uint64_t stream;   /* ALLOC, FREE: minted stream, 0 = NULL stream */
  uint64_t dptr;     /* FREE */
  uint64_t size;     /* ALLOC: bytes; TRIM: bytes to keep; CREATE: the pool's maximum (0: none) */
  uint64_t value;    /* SET_ATTR */
  int32_t device;    /* CREATE */
  uint32_t attr;     /* *_ATTR: CUmemPool_attribute */
  uint32_t is_default; /* CREATE: the device's default pool */
  uint32_t per_thread;
} cgs_pool;

/* LINK_* ops: the JIT linker (cuLink*), run by the controller's driver.
 * The link state is transient: it lives from LINK_CREATE to LINK_DESTROY and
 * is never part of a checkpoint (gpu/controller/link.c). */
#define CGS_LINK_NAME 64          /* bytes of an input's name (cut, NUL-terminated) */
#define CGS_LINK_MAX_LOG 1048576  /* the largest JIT log buffer forwarded */
enum cgs_link_read {
  CGS_LINK_IMAGE = 0,     /* the linked image (after COMPLETE) */
  CGS_LINK_INFO_LOG = 1,  /* the driver's info log */
  CGS_LINK_ERROR_LOG = 2, /* the driver's error log */
};
typedef struct cgs_link {
  cgs_req h;
  uint64_t handle;      /* the minted link state */
  uint64_t size;        /* ADD: the input's bytes (the channel's blob holds exactly these);
                         * READ: the offset to copy from */
  uint64_t info_log;    /* CREATE: bytes of the job's info log buffer (0: none) */
  uint64_t error_log;   /* CREATE: bytes of the job's error log buffer (0: none) */
  uint32_t type;        /* ADD: CUjitInputType; READ: enum cgs_link_read */
  uint32_t flags;       /* CREATE: 1 = CU_JIT_LOG_VERBOSE */
  char name[CGS_LINK_NAME]; /* ADD: the input's name, for the driver's messages */
} cgs_link;

/* The largest request: a launch with the most argument bytes. */
#define CGS_MAX_REQUEST (CGS_MAX_REQUEST_SLOTS * CGS_SLOT_DATA)
#define CGS_MAX_LAUNCH_ARGS (CGS_MAX_REQUEST - sizeof(cgs_launch))

#define CGS_STATIC_ASSERT(c, m) _Static_assert(c, m)
#ifdef __cplusplus
#undef CGS_STATIC_ASSERT
#define CGS_STATIC_ASSERT(c, m) static_assert(c, m)
#endif
CGS_STATIC_ASSERT(sizeof(cgs_slot) == CGS_SLOT_SIZE, "slot size");
CGS_STATIC_ASSERT(sizeof(cgs_channel) == CGS_CHANNEL_HEADER, "channel header size");
CGS_STATIC_ASSERT(sizeof(cgs_header) <= CGS_HEADER_SIZE, "header fits");
CGS_STATIC_ASSERT(offsetof(cgs_header, ctrl_doorbell) == 256, "doorbell on its own line");
CGS_STATIC_ASSERT(sizeof(cgs_symbol) <= CGS_SLOT_DATA * 2, "symbol request spans two slots");
CGS_STATIC_ASSERT(sizeof(cgs_vmm) <= CGS_SLOT_DATA, "a VMM request fits one slot");
CGS_STATIC_ASSERT(sizeof(cgs_link) <= CGS_SLOT_DATA, "a link request fits one slot");

#endif
