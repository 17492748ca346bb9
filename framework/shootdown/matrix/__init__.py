"""Matrix runs: guests x granules x policies x scenario sets x injections.

A matrix file (``guests/nightly.toml``, ``docs/matrix.md``) expands into
:class:`~shootdown.matrix.spec.MatrixJob` s.  A job is one boot of one guest
with one firmware granule that runs a set of scenarios under one policy with
one injection (or none), so boots are amortised over scenarios.

The pieces, in the order data flows:

* :mod:`~shootdown.matrix.spec`: the file, validated, expanded into jobs with
  stable ids (a hash of the parameters and of the scenario files' bytes);
* :mod:`~shootdown.matrix.job`: running one job (on an xdist worker) into a
  JSON-ready record, infrastructure failures retried once;
* :mod:`~shootdown.matrix.results`: the JSON-lines file (append + fsync per
  record, torn last line repaired, finished jobs for ``--resume``);
* :mod:`~shootdown.matrix.engine`: the pytest side (job items, the
  controller that writes records and shows progress) and :func:`run_matrix`.

Parallelism is pytest-xdist's: no scheduler of our own.
"""
