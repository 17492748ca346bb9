/*
 * plugins/maint.c: a QEMU TCG plugin recording every executed arm64 TLB
 * maintenance instruction of the guest, for shootdown's kernel tracer
 * (framework/shootdown/kernel/plugin.py builds, loads and reads it).
 *
 * Instrumented, by encoding, at translation time (nothing else gets a
 * callback, so untraced code runs at plain TCG speed):
 *   TLBI          SYS with L=0, op0=01, CRn=8     (insn & 0xfff8f000) == 0xd5088000
 *   DSB           CRm = the option                (insn & 0xfffff0ff) == 0xd503309f
 *   ISB                                           (insn & 0xfffff0ff) == 0xd50330df
 *   MSR TTBR0_EL1 / TTBR1_EL1 (the ASID of a context switch, as the
 *   single-stepping tracer's sites)               (insn & 0xffffffc0) == 0xd5182000
 * While recording is on, each execution appends one line to the file named
 * by out=PATH:
 *   <cpu> <pc> <insn> <xt|->\n       (hex, no 0x; xt is '-' when Rt is XZR)
 * and the stream is flushed per record, so whatever ran before the guest
 * printed a marker is in the file when the host reads the marker.
 *
 * <cpu> is the vCPU that ran the instruction (QEMU's cpu_index, which on the
 * virt machine is its MPIDR_EL1's Aff0 for the first 8 vCPUs).  It is NOT
 * the vcpu_index QEMU passes the instruction callback: with
 * -accel tcg,thread=single (round-robin TCG) QEMU translates without
 * CF_PARALLEL (accel/tcg/tcg-accel-ops-rr.c, tcg_cpu_init_cflags(cpu,
 * false)) and then folds the index of the vCPU that *translated* a block
 * into it as a constant (accel/tcg/plugin-gen.c, gen_cpu_index, "Optimize
 * when we run with a single vcpu", lines 103-118 of QEMU 10.0.2); blocks
 * are shared by all vCPUs, so a block cpu0 translated reports 0 when cpu1
 * runs it.  Registers, in contrast, are read from the vCPU that runs
 * (plugins/api.c, qemu_plugin_read_register reads current_cpu).
 *
 * So a record's CPU comes from the guest's state, read from the vCPU that
 * runs: its TPIDR_EL1, which the kernel sets to the CPU's per-CPU offset
 * (__per_cpu_offset[cpu], distinct per CPU once per-CPU areas exist), looked
 * up in a table TPIDR_EL1 -> CPU that the plugin fills from two facts:
 *   - a block's first run is by the vCPU that translated it (cpu_exec runs
 *     the block it just generated; under thread=single no other vCPU runs in
 *     between), so on that run, and only then, vcpu_index is the running
 *     vCPU: every block holding a traced instruction gets a block callback
 *     that pairs TPIDR_EL1 with vcpu_index on its first run;
 *   - each CPU reads its MPIDR_EL1 (Linux: cpuinfo_store_cpu,
 *     secondary_start_kernel), so the instruction after an "MRS Xt,
 *     MPIDR_EL1" gets a callback that pairs TPIDR_EL1 with Xt's Aff0.
 * MPIDR_EL1 cannot be read directly: QEMU leaves ARM_CP_NO_RAW registers
 * out of the plugin's register list (target/arm/gdbstub.c).  Each pairing is
 * a vote, and a TPIDR_EL1 value names the CPU it was paired with most often
 * (before per-CPU areas every CPU's TPIDR_EL1 is 0, a value no record of a
 * window has).  A record whose TPIDR_EL1 has no majority (or a
 * QEMU without TPIDR_EL1 in the list) falls back to QEMU's vcpu_index and
 * says so: its <cpu> ends in '?' ("1?"), and the plugin warns on stderr once.
 *
 * Recording is switched by the host through the FIFO named by ctl=PATH: a
 * line "on N" or "off N" (N: the window's number) sets the state, then the
 * plugin writes "# on N" / "# off N" to the record file, so the host knows
 * the switch took effect and where the window starts and ends.  Off, a
 * callback only tests a flag: a kernel boot runs ~700 000 DSB/ISB/TLBIs,
 * which flushed one by one would double the boot time.
 *
 * Registers are read with qemu_plugin_read_register (plugin API >= 3,
 * QEMU >= 9), which needs QEMU_PLUGIN_CB_R_REGS on the callback.  The
 * machine runs -accel tcg,thread=single, so callbacks never run
 * concurrently.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* x0..x30: Rt == 31 is XZR, never read. */
#define N_XREGS 31
/* Distinct TPIDR_EL1 values the plugin keeps (one per CPU, plus 0 from early boot). */
#define MAX_IDS 64
/* The CPUs a pairing can name (vCPU index, or MPIDR Aff0). */
#define MAX_CPUS 16
/* MPIDR_EL1's Aff1, Aff2 and Aff3 fields: zero for the virt machine's vCPUs 0-7. */
#define MPIDR_AFF_ABOVE_0 0xff00ffff00ull

struct site {
    uint64_t pc;
    uint32_t insn;
};

/* A TPIDR_EL1 value and how often it was paired with each CPU. */
struct cpu_id {
    uint64_t tpidr;
    unsigned int votes[MAX_CPUS];
};

static FILE *out;
static GMutex out_lock;     /* the control thread also writes to out */
static gint recording;      /* g_atomic: 1 between "on" and "off" */
static gint warned;         /* g_atomic: the '?' fallback was reported on stderr */
/*
 * Register handles are register numbers in the vCPU's gdb register list,
 * the same for every vCPU of the machine (one CPU model); a read goes to
 * the vCPU that runs (plugins/api.c), so one table serves all vCPUs.
 */
static struct qemu_plugin_register *xregs[N_XREGS];
static struct qemu_plugin_register *tpidr_el1;
static GMutex ids_lock;
static struct cpu_id ids[MAX_IDS];
static unsigned int n_ids;

static bool wanted(uint32_t insn)
{
    return (insn & 0xfff8f000u) == 0xd5088000u      /* TLBI */
        || (insn & 0xfffff0ffu) == 0xd503309fu      /* DSB */
        || (insn & 0xfffff0ffu) == 0xd50330dfu      /* ISB */
        || (insn & 0xffffffc0u) == 0xd5182000u;     /* MSR TTBR0/1_EL1 */
}

static bool has_xt(uint32_t insn)
{
    return ((insn & 0xfff8f000u) == 0xd5088000u
            || (insn & 0xffffffc0u) == 0xd5182000u) && (insn & 31u) != 31u;
}

/* MRS Xt, MPIDR_EL1: op0=3 op1=0 CRn=0 CRm=0 op2=5, Rt not XZR. */
static bool reads_mpidr(uint32_t insn)
{
    return (insn & 0xffffffe0u) == 0xd53800a0u && (insn & 31u) != 31u;
}

/* A 64-bit register of the running vCPU; false when it cannot be read. */
static bool read_u64(struct qemu_plugin_register *reg, uint64_t *value)
{
    GByteArray *buf;
    bool ok;

    if (reg == NULL) {
        return false;
    }
    buf = g_byte_array_new();
    ok = qemu_plugin_read_register(reg, buf) == 8;
    if (ok) {
        memcpy(value, buf->data, 8);    /* target order: little-endian guest */
    }
    g_byte_array_free(buf, TRUE);
    return ok;
}

/*
 * The CPU whose TPIDR_EL1 is tpidr: the one it was paired with most often,
 * or -1 if it never was, or two CPUs tie.  A pairing can be wrong (below),
 * never often: counting them outvotes the rare one.
 */
static int cpu_of(uint64_t tpidr)
{
    int cpu = -1;

    g_mutex_lock(&ids_lock);
    for (unsigned int i = 0; i < n_ids; i++) {
        if (ids[i].tpidr != tpidr) {
            continue;
        }
        unsigned int best = 0;
        for (unsigned int c = 0; c < MAX_CPUS; c++) {
            if (ids[i].votes[c] > best) {
                best = ids[i].votes[c];
                cpu = (int)c;
            } else if (ids[i].votes[c] == best && best > 0) {
                cpu = -1;
            }
        }
        break;
    }
    g_mutex_unlock(&ids_lock);
    return cpu;
}

/* The running vCPU's TPIDR_EL1 is tpidr, and it is cpu: one vote. */
static void pair(uint64_t tpidr, unsigned int cpu)
{
    unsigned int i;

    if (cpu >= MAX_CPUS) {
        return;
    }
    g_mutex_lock(&ids_lock);
    for (i = 0; i < n_ids && ids[i].tpidr != tpidr; i++) {
    }
    if (i < MAX_IDS) {
        if (i == n_ids) {
            ids[i].tpidr = tpidr;
            n_ids++;
        }
        if (ids[i].votes[cpu] < G_MAXUINT) {
            ids[i].votes[cpu]++;
        }
    }
    g_mutex_unlock(&ids_lock);
}

/*
 * Runs before the instruction after an MRS Xt, MPIDR_EL1 of the same block,
 * so Xt holds the MPIDR the running vCPU just read.
 */
static void on_mpidr_read(unsigned int vcpu, void *udata)
{
    unsigned int rt = GPOINTER_TO_UINT(udata);
    uint64_t mpidr = 0, tpidr = 0;

    if (read_u64(xregs[rt], &mpidr) && read_u64(tpidr_el1, &tpidr)
        && (mpidr & MPIDR_AFF_ABOVE_0) == 0) {
        pair(tpidr, (unsigned int)(mpidr & 0xffu));
    }
}

/*
 * Runs when a block with a traced instruction starts.  Its first run is by
 * the vCPU that translated it (cpu_exec runs a block it just generated; with
 * thread=single no other vCPU runs in between), and the index QEMU folded
 * into the block is that vCPU's: on the first run vcpu is the running vCPU,
 * so its TPIDR_EL1 names it.  Rarely the first run may not be the
 * translator's (a kick between translation and the block's exit-request
 * check, which comes before this callback, could hand the untouched block to
 * the next vCPU): such a pairing is one wrong vote among many right ones.
 */
static void on_block_start(unsigned int vcpu, void *udata)
{
    gint *ran = udata;
    uint64_t tpidr = 0;

    if (g_atomic_int_get(ran)) {
        return;
    }
    g_atomic_int_set(ran, 1);
    if (read_u64(tpidr_el1, &tpidr)) {
        pair(tpidr, vcpu);
    }
}

static void on_exec(unsigned int vcpu, void *udata)
{
    const struct site *s = udata;
    char xt[24] = "-";
    char who[16];
    uint64_t value = 0;
    int cpu = -1;

    if (!g_atomic_int_get(&recording)) {
        return;
    }
    /* vcpu is the index of the vCPU that translated the block (see the top). */
    if (read_u64(tpidr_el1, &value)) {
        cpu = cpu_of(value);
    }
    if (cpu >= 0) {
        snprintf(who, sizeof who, "%x", (unsigned int)cpu);
    } else {
        snprintf(who, sizeof who, "%x?", vcpu);
        if (!g_atomic_int_get(&warned)) {
            g_atomic_int_set(&warned, 1);
            fprintf(stderr, "maint plugin: %s: records carry QEMU's vcpu_index, marked '?'\n",
                    tpidr_el1 == NULL ? "no TPIDR_EL1 in QEMU's register list"
                                      : "a TPIDR_EL1 never paired with one CPU");
        }
    }
    if (has_xt(s->insn)) {
        if (read_u64(xregs[s->insn & 31u], &value)) {
            snprintf(xt, sizeof xt, "%" PRIx64, value);
        } else {
            snprintf(xt, sizeof xt, "?");
        }
    }
    g_mutex_lock(&out_lock);
    fprintf(out, "%s %" PRIx64 " %08x %s\n", who, s->pc, s->insn, xt);
    fflush(out);
    g_mutex_unlock(&out_lock);
}

/* The control thread: applies "on N"/"off N" lines from the FIFO and acknowledges each. */
static gpointer control(gpointer path)
{
    char line[64];
    FILE *ctl = fopen(path, "r");   /* blocks until the host opens the FIFO for writing */

    while (ctl != NULL && fgets(line, sizeof line, ctl) != NULL) {
        bool on = strncmp(line, "on ", 3) == 0;
        if (!on && strncmp(line, "off ", 4) != 0) {
            continue;
        }
        g_mutex_lock(&out_lock);
        g_atomic_int_set(&recording, on ? 1 : 0);
        fprintf(out, "# %s", line);
        fflush(out);
        g_mutex_unlock(&out_lock);
    }
    if (ctl != NULL) {
        fclose(ctl);
    }
    return NULL;
}

static void on_tb(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    bool traced = false;

    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t word = 0;
        if (qemu_plugin_insn_data(insn, &word, sizeof word) != sizeof word) {
            continue;
        }
        if (reads_mpidr(word) && i + 1 < n) {
            /* An MRS last in its block is missed; the kernel reads MPIDR often enough. */
            qemu_plugin_register_vcpu_insn_exec_cb(qemu_plugin_tb_get_insn(tb, i + 1),
                on_mpidr_read, QEMU_PLUGIN_CB_R_REGS, GUINT_TO_POINTER(word & 31u));
        }
        if (!wanted(word)) {
            continue;
        }
        /* Kept for the TB's life; retranslations allocate again (few). */
        struct site *s = g_new(struct site, 1);
        s->pc = qemu_plugin_insn_vaddr(insn);
        s->insn = word;
        /* Every record reads TPIDR_EL1 (its CPU), so every callback reads registers. */
        qemu_plugin_register_vcpu_insn_exec_cb(insn, on_exec, QEMU_PLUGIN_CB_R_REGS, s);
        traced = true;
    }
    if (traced) {
        /* Kept for the TB's life, as the sites. */
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block_start, QEMU_PLUGIN_CB_R_REGS,
                                             g_new0(gint, 1));
    }
}

static void on_vcpu_init(qemu_plugin_id_t id, unsigned int vcpu)
{
    GArray *regs = qemu_plugin_get_registers();

    for (guint i = 0; i < regs->len; i++) {
        qemu_plugin_reg_descriptor *d =
            &g_array_index(regs, qemu_plugin_reg_descriptor, i);
        char *end;
        long n;
        if (strcmp(d->name, "TPIDR_EL1") == 0) {
            tpidr_el1 = d->handle;
            continue;
        }
        if (d->name[0] != 'x' || d->name[1] == '\0') {
            continue;
        }
        n = strtol(d->name + 1, &end, 10);
        if (*end == '\0' && n >= 0 && n < N_XREGS) {
            xregs[n] = d->handle;
        }
    }
    g_array_free(regs, TRUE);
}

static void on_atexit(qemu_plugin_id_t id, void *p)
{
    g_atomic_int_set(&recording, 0);
    g_mutex_lock(&out_lock);
    if (out != NULL) {
        fclose(out);
        out = NULL;
    }
    g_mutex_unlock(&out_lock);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *path = NULL;
    const char *ctl = NULL;

    if (strcmp(info->target_name, "aarch64") != 0) {
        fprintf(stderr, "maint plugin: target %s is not aarch64\n", info->target_name);
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        } else if (strncmp(argv[i], "ctl=", 4) == 0) {
            ctl = argv[i] + 4;
        }
    }
    if (path == NULL || (out = fopen(path, "w")) == NULL) {
        fprintf(stderr, "maint plugin: out=PATH missing or not writable\n");
        return -1;
    }
    if (ctl == NULL) {
        g_atomic_int_set(&recording, 1);    /* no control: record everything */
    } else {
        g_thread_unref(g_thread_new("maint-ctl", control, (gpointer)ctl));
    }
    qemu_plugin_register_vcpu_init_cb(id, on_vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb);
    qemu_plugin_register_atexit_cb(id, on_atexit, NULL);
    return 0;
}
