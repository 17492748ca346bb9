"""shootdown: QEMU-backed validation of arm64 page-table teardown.

The package is imported by the ``shootdown`` command on every run, so this
module stays empty of imports: start-up time is a product feature.
"""

__version__ = "0.1.0"
