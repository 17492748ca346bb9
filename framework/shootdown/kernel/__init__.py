"""Real Linux kernels as targets: fetch Debian's, read their facts, boot them.

Modules::

    apt        Debian's archive through apt with a private configuration
    fetch      debian:SUITE[-16k] -> verified, unpacked, cached Image + config
    locate     a --kernel argument (debian:... or a PATH) -> Image + config
    image      the arm64 Image header, compression and banner
    config     the kernel's build configuration
    info       the facts shootdown uses (release, page size, VA bits, KPTI, ...)
    initramfs  a newc cpio archive, written here
    workload   the guest program (workload/ in the source tree), built with make
    boot       QEMU booting a kernel to the workload's READY; steps over the console
    smoke      the built-in smoke workload (map, probe, unmap, probe) and its verdict
    sites      every TLBI/DSB/ISB/TTBR write of the Image, by disassembly (cached per Image)
    symbols    text symbols: the guest's kallsyms (cached), a vmlinux or a System.map
    qmp        a minimal QMP client (HMP commands to the running QEMU)
    tracer     a step's tracing window: single-stepping and the exec log over the sites
    observe    the observed records per step, and which are the step's own (the rule)
    run        kernel run: boot, ASID, unmap steps traced, separated, checked
"""
