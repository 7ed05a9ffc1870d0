// lsm_file_open: every file open as the LSM hook file_open sees it (after permission checks
// of the other LSMs), with the file's name.
//
//   engine run examples/lsm_file_open.c
//
// An lsm program receives the hook's arguments as `u64 *ctx` (file_open: ctx[0] is the
// `struct file *`) and returns the decision: 0 allows, a negative errno (-EPERM) denies.
// This one only records and always allows. Needs BPF LSM active (lsm=...,bpf on the kernel
// command line): `engine features`.
//
// Record (ring buffer "opened"): pid, comm, name (the last path component).

struct open_seen {
    u32 pid;
    char comm[16];
    char name[64];
};

BPF_RINGBUF_OUTPUT(opened, 64);

SEC("lsm/file_open")
int check_file_open(u64 *ctx)
{
    struct file__btf *file = (struct file__btf *)ctx[0];
    struct open_seen *e = opened.ringbuf_reserve(sizeof(*e));
    if (!e)
        return 0;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    struct dentry__btf *dentry = 0;
    const unsigned char *name = 0;
    bpf_probe_read_kernel(&dentry, sizeof(dentry), &file->f_path.dentry);
    if (dentry)
        bpf_probe_read_kernel(&name, sizeof(name), &dentry->d_name.name);
    if (name)
        bpf_probe_read_kernel_str(&e->name, sizeof(e->name), name);
    opened.ringbuf_submit(e, 0);
    return 0;  /* allow; return -EPERM (-1) to deny the open */
}
