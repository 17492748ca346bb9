"""Remote hosts over SSH: QEMU on another machine, driven like a local one.

- :mod:`~shootdown.remote.config`: a host name -> :class:`SshHost`, via ``~/.ssh/config``;
- :mod:`~shootdown.remote.hostkeys`: refuse unknown or changed host keys;
- :mod:`~shootdown.remote.connection`: one SSH connection, quoted commands, cached uploads;
- :mod:`~shootdown.remote.process`: the remote QEMU, its console over a pty channel;
- :mod:`~shootdown.remote.launcher`: :class:`SshLauncher`, the ``Launcher`` for a ``host``;
- :mod:`~shootdown.remote.pool`: seats on a pool of hosts, shared by pytest-xdist workers.

See ``docs/remote.md``.  paramiko is imported only when this package is.
"""

from __future__ import annotations

from shootdown.remote.launcher import SshLauncher, check_trace_supported, launcher_for

__all__ = ["SshLauncher", "check_trace_supported", "launcher_for"]
