"""``shootdown hosts``: check that remote hosts are ready to run guests.

For each host (names on the command line, else the pool file's hosts, else
the hosts named by the guest definitions): connect (host key checked as for a
run), then report the machine (``uname -m``, CPU count), the QEMU binary and
its version, and whether ``/dev/kvm`` is usable by the login user.  One
remote command per host; nothing is started or uploaded.

Exit code 0 when every host is ready, 3 when one is not (unreachable, host
key refused, no QEMU), 2 on bad input.  ``--json`` prints the records.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

from shootdown.errors import ShootdownError

#: One remote command gathers everything; ``$1`` is the QEMU binary.  The
#: output is ``key=value`` lines, parsed below; the script is a constant.
_PROBE_SCRIPT = (
    'echo "arch=$(uname -m)"; '
    'echo "cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)"; '
    'if p=$(command -v -- "$1"); then echo "qemu=$p"; '
    'echo "version=$("$1" --version 2>/dev/null | head -n 1)"; fi; '
    'if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then echo kvm=yes; '
    'elif [ -e /dev/kvm ]; then echo kvm=no-access; else echo kvm=absent; fi')


@dataclass(frozen=True)
class HostReport:
    """What ``shootdown hosts`` found on one host."""

    #: The host name as given (ssh alias or ``[user@]host[:port]``).
    host: str
    #: Whether a guest can run there now (connected, QEMU found).
    ready: bool
    #: ``uname -m`` (``aarch64``, ``x86_64``), empty if unknown.
    arch: str = ""
    #: Online CPUs, 0 if unknown.
    cpus: int = 0
    #: Path of the QEMU binary there, empty if not found.
    qemu: str = ""
    #: First line of ``qemu --version``.
    qemu_version: str = ""
    #: ``yes`` (usable), ``no-access`` (exists, not usable by this user), ``absent``.
    kvm: str = ""
    #: Why the host is not ready, empty when it is.
    problem: str = ""


def check_host(name: str, qemu: str, *, accept_new_host_key: bool | None = None) -> HostReport:
    """Connect to ``name`` and report on it; errors become a not-ready report."""
    from shootdown.remote.config import resolve_host
    from shootdown.remote.connection import Connection

    try:
        with Connection(resolve_host(name), accept_new_host_key=accept_new_host_key) as conn:
            result = conn.run(["sh", "-c", _PROBE_SCRIPT, "shootdown-probe", qemu], timeout=60)
    except ShootdownError as exc:
        return HostReport(host=name, ready=False, problem=str(exc))
    fields = dict(line.split("=", 1) for line in
                  result.stdout.decode(errors="replace").splitlines() if "=" in line)
    cpus = fields.get("cpus", "0")
    report = HostReport(
        host=name, ready="qemu" in fields, arch=fields.get("arch", ""),
        cpus=int(cpus) if cpus.isdigit() else 0, qemu=fields.get("qemu", ""),
        qemu_version=fields.get("version", ""), kvm=fields.get("kvm", ""),
        problem="" if "qemu" in fields else f"{qemu} not found (install qemu-system-arm)")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shootdown hosts``."""
    parser.add_argument("hosts", nargs="*", metavar="HOST",
                        help="ssh aliases or [user@]host[:port] (default: the pool file's "
                             "hosts, else the hosts named by the guest definitions)")
    parser.add_argument("--hosts-file", metavar="FILE",
                        help="host pool file (default: $SHOOTDOWN_HOSTS)")
    parser.add_argument("--guests-dir", metavar="DIR", help="guests directory")
    parser.add_argument("--qemu", default=None, metavar="BINARY",
                        help="QEMU binary to look for (default: $SHOOTDOWN_QEMU or "
                             "qemu-system-aarch64)")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")


def _default_hosts(args: argparse.Namespace) -> list[str]:
    import os

    from shootdown.remote.pool import LOCAL, HostPool

    if args.hosts_file or os.environ.get("SHOOTDOWN_HOSTS"):
        pool = HostPool.load(args.hosts_file)
        return [h.name for h in pool.hosts if h.name != LOCAL]
    from shootdown.guest.definition import find_guest, guests_dir, list_guest_names

    where = guests_dir(args.guests_dir)
    hosts: list[str] = []
    for name in list_guest_names(where):
        host = find_guest(name, where).host
        if host and host not in hosts:
            hosts.append(host)
    return hosts


def main(args: argparse.Namespace) -> int:
    """Check the hosts; 0 if all are ready, 3 if one is not."""
    from shootdown.guest.argv import default_qemu

    qemu = args.qemu or default_qemu()
    hosts = args.hosts or _default_hosts(args)
    if not hosts:
        print("no remote hosts (name some, or give a pool file or guests with host = ...)")
        return 0
    reports = [check_host(h, qemu) for h in hosts]
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2))
    else:
        for r in reports:
            if r.ready:
                print(f"{r.host:<20} ready    {r.arch} x{r.cpus}, kvm {r.kvm}, {r.qemu_version}")
            else:
                print(f"{r.host:<20} NOT READY  {r.problem}", file=sys.stderr)
    return 0 if all(r.ready for r in reports) else 3
