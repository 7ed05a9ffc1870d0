"""The C half of the automatic origin: what every rewritten buffer write calls.

Compiled after engine.bcc.prelude's PRELUDE (which holds the selection maps and
``engine_mntns_selected``) and before the gadget. engine/gadget/origin.py rewrites each of the
gadget's buffer writes into code that calls these helpers, so that a ``struct engine_origin``
(32 bytes) goes in front of every record; engine/events/origin.py reads it back.

- ``engine_begin_task``: the origin of a record a tracing program writes: the current task's
  tgid, mount namespace, netns and cgroup id, read through the kernel's true layouts (BTF
  pointer loads, which the verifier makes fault-safe). A kernel thread (ksoftirqd, a
  worker) has no origin of its own: "kernel", with no task fields. A program that runs in an
  interrupt on a task's CPU names the interrupted task, as bcc's own helpers do
  (``bpf_get_current_pid_tgid``): the stack it runs on cannot tell, as 6.13+ runs tracing
  programs on a private per-CPU stack. The selection is checked here (a record of an
  unselected task is counted and never written).
- ``engine_begin_skb``: the origin of a packet record: ``skb->ifindex`` (for a classifier the
  host-side veth, which names its container) and, for socket filters, the netns of the
  packet's device (``engine_skb_netns_id``, engine/kernel/skb_netns.py).
- stages: per-CPU room for origin + record where the record cannot be written in place (perf
  buffers, ring output of a size known only at run time, ``ringbuf_reserve``).
- ``engine_counts``: per buffer map (by its number, engine/gadget/origin.py), per CPU, the
  records that could not be written (``lost``: buffer full, or no stage free) and those the
  selection refused (``unselected``).
"""

from __future__ import annotations

# Records and their header; the same numbers as engine/events/origin.py.
ORIGIN_TASK = 1
ORIGIN_PACKET = 2
ORIGIN_KERNEL = 3
HEADER_SIZE = 32
# Buffer maps one gadget may declare (the size of the counters map).
MAX_BUFFER_MAPS = 64
COUNTS_MAP = "engine_counts"
_PF_KTHREAD = 0x00200000

_C = f"""\
/* The origin of every record (engine/bcc/origin_prelude.py). */
struct engine_origin {{
    u32 kind;     /* ENGINE_ORIGIN_TASK, _PACKET or _KERNEL */
    u32 tgid;     /* task: thread group id */
    u32 mntns;    /* task: mount namespace inode */
    u32 netns;    /* task: its netns inode; socket filter: the packet's device's netns */
    u64 cgroup;   /* task: cgroup v2 id */
    u32 ifindex;  /* packet: skb->ifindex (a classifier: the host-side veth) */
    u32 flags;    /* 0 */
}};
#define ENGINE_ORIGIN_TASK {ORIGIN_TASK}
#define ENGINE_ORIGIN_PACKET {ORIGIN_PACKET}
#define ENGINE_ORIGIN_KERNEL {ORIGIN_KERNEL}
#define ENGINE_HDR ((u32)sizeof(struct engine_origin))
#define ENGINE_PF_KTHREAD {_PF_KTHREAD:#x}
/* Largest record a stage holds (perf buffers, run-time sizes, ringbuf_reserve), plus one. */
#define ENGINE_DATA_MAX 8192
/* Programs nest on a CPU (an interrupt's inside a syscall's): a stage for each level. */
#define ENGINE_NEST 4
/* clang's inline memcpy stops at 128 stores: larger copies go through a helper. */
#define ENGINE_INLINE_COPY 128

struct engine_count {{ u64 lost; u64 unselected; }};
BPF_PERCPU_ARRAY({COUNTS_MAP}, struct engine_count, {MAX_BUFFER_MAPS});

struct engine_stage {{ u32 busy; u32 size; struct engine_origin o; u8 data[ENGINE_DATA_MAX]; }};
BPF_PERCPU_ARRAY(engine_stages, struct engine_stage, ENGINE_NEST);

/* Atomic: a program that interrupts another on this CPU may count into the same slot. */
static __always_inline void engine_count_lost(u32 map)
{{
    struct engine_count *c = {COUNTS_MAP}.lookup(&map);
    if (c)
        __sync_fetch_and_add(&c->lost, 1);
}}

static __always_inline void engine_count_unselected(u32 map)
{{
    struct engine_count *c = {COUNTS_MAP}.lookup(&map);
    if (c)
        __sync_fetch_and_add(&c->unselected, 1);
}}

/* Fill `o` for a record a tracing program writes to buffer map number `map`; false (and
 * counted) when the selection refuses it. */
static __always_inline bool engine_begin_task(u32 map, struct engine_origin *o)
{{
    struct task_struct__btf *task = (struct task_struct__btf *)bpf_get_current_task_btf();
    o->ifindex = 0;
    o->flags = 0;
    if (task->flags & ENGINE_PF_KTHREAD) {{
        o->kind = ENGINE_ORIGIN_KERNEL;
        o->tgid = 0;
        o->mntns = 0;
        o->netns = 0;
        o->cgroup = 0;
        return true;  /* no task to select by: the engine decides from the record */
    }}
    struct nsproxy__btf *nsproxy = task->nsproxy;  /* 0 for an exiting task: loads read 0 */
    struct mnt_namespace__btf *mnt = nsproxy->mnt_ns;
    struct net__btf *net = nsproxy->net_ns;
    o->kind = ENGINE_ORIGIN_TASK;
    o->tgid = bpf_get_current_pid_tgid() >> 32;
    o->cgroup = bpf_get_current_cgroup_id();
    o->mntns = mnt->ns.inum;
    o->netns = net->ns.inum;
    if (engine_mntns_selected(o->mntns))
        return true;
    engine_count_unselected(map);
    return false;
}}

/* Packet programs are attached per netns (or per veth): no selection check here. */
static __always_inline bool engine_begin_skb(struct engine_origin *o, struct __sk_buff *skb,
                                             u32 netns)
{{
    o->kind = ENGINE_ORIGIN_PACKET;
    o->tgid = 0;
    o->mntns = 0;
    o->netns = netns;
    o->cgroup = 0;
    o->ifindex = skb->ifindex;
    o->flags = 0;
    return true;
}}

/* A free stage of this CPU, or 0. A program that interrupts another on this CPU ends before
 * the interrupted one resumes, so an atomic add and a read back claim a stage; a gadget may
 * hold several reservations and release them in any order, hence a flag per stage. */
static __always_inline struct engine_stage *engine_stage_claim(void)
{{
#pragma unroll
    for (u32 i = 0; i < ENGINE_NEST; i++) {{
        u32 k = i;
        struct engine_stage *s = engine_stages.lookup(&k);
        if (!s)
            return 0;
        __sync_fetch_and_add(&s->busy, 1);
        if (s->busy == 1)
            return s;
        __sync_fetch_and_add(&s->busy, -1);
    }}
    return 0;
}}

static __always_inline void engine_stage_release(struct engine_stage *s)
{{
    __sync_fetch_and_add(&s->busy, -1);
}}

/* The stage whose data a gadget's reserved pointer points to. */
#define ENGINE_STAGE_OF(p) \\
    ((struct engine_stage *)((void *)(p) - offsetof(struct engine_stage, data)))

/* The record as an untyped pointer: bcc takes a buffer map's record type from the pointee of
 * what is written to it, and that must stay the gadget's own struct. */
static __always_inline void *engine_raw(void *p)
{{
    return p;
}}
"""


def origin_prelude() -> str:
    """The C helpers."""
    return _C
