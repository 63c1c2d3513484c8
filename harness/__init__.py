"""Helpers shared by the tests (``tests/``) and the benchmarks (``bench/``), so neither imports the other.

- :mod:`harness.gateway`: a real gateway process (``python -m service.cli``) on a free 127.0.0.1 port.
- :mod:`harness.images`: sample images (synthetic-world PNGs with their labels, JPEG photos).
- :mod:`harness.metrics`: samples scraped from a gateway's ``/metrics``.
- :mod:`harness.usage`: CPU time and resident memory of processes.
- :mod:`harness.workload`: the classify requests a load sends, and the answer each image must get.
- :mod:`harness.load`: closed-loop clients on raw keep-alive connections, every request recorded.
- :mod:`harness.drills`: the load and overload drills, their figures and their checks.

Not part of the installed package: it is imported from the repository root, like ``tests`` and ``bench``.
"""
