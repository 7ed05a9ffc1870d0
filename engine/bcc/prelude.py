"""What the engine puts before every gadget's C text: the ``SEC()`` macro, the in-kernel
selection maps the engine keeps in sync (engine.world.kernel_filter, docs/selection.md) and
the helpers a gadget's programs use to ask them. Compiled first, before the origin prelude
(engine.bcc.origin_prelude) and the gadget.
"""

from __future__ import annotations

from engine.gadget.scanner import SourceScan

PRELUDE = """\
#define SEC(name) __attribute__((section(name), used))
#include <linux/pkt_cls.h>

/* Container selection, kept in sync by the engine (docs/selection.md). */
BPF_HASH(engine_mntns, u64, u8, 8192);
BPF_ARRAY(engine_filter, u32, 1);

/* The mount namespace id (inode number) of the current task, read through true layouts. */
static __always_inline u64 engine_mntns_id(void)
{
    struct task_struct__btf *task = (struct task_struct__btf *)bpf_get_current_task();
    struct nsproxy__btf *nsproxy = 0;
    struct mnt_namespace__btf *mnt = 0;
    unsigned int inum = 0;
    bpf_probe_read_kernel(&nsproxy, sizeof(nsproxy), &task->nsproxy);
    if (!nsproxy)
        return 0;
    bpf_probe_read_kernel(&mnt, sizeof(mnt), &nsproxy->mnt_ns);
    if (!mnt)
        return 0;
    bpf_probe_read_kernel(&inum, sizeof(inum), &mnt->ns.inum);
    return inum;
}

/* Whether the selection takes a task of mount namespace `id`. engine_filter[0]: 0 no
 * selection; 1 only the mount namespaces engine_mntns marks 1; 2 those, and the ones it does
 * not know yet (a container that the runtime has not reported: the engine holds its records
 * until it does). engine_mntns: 1 selected, 0 known and not selected (docs/events.md). */
static __always_inline bool engine_mntns_selected(u64 id)
{
    u32 zero = 0;
    u32 *mode = engine_filter.lookup(&zero);
    if (!mode || !*mode)
        return true;
    u8 *known = engine_mntns.lookup(&id);
    if (known)
        return *known;
    return *mode == 2;
}

/* True when the current task belongs to the selection (always true with no selection).
 * Every record of a static program is checked anyway when it is written; call this first to
 * skip the program's work early for tasks outside the selection. */
static __always_inline bool engine_selected(void)
{
    return engine_mntns_selected(engine_mntns_id());
}
"""

PRELUDE_SCAN = SourceScan.of(PRELUDE)
