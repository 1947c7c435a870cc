"""Experiments: the pieces ``vqswitch demo`` and the benchmarks share (a tool; imported on demand).

* :mod:`vqswitch.experiments.faces`: the faces experiment's configuration (:class:`DemoConfig`, ``FULL``,
  ``QUICK``), data (procedural faces, a face folder split by identity), the global-codebook baseline (build, train,
  evaluate), evaluation of a swapped model through its codes, the before/after table and grid rows;
* :mod:`vqswitch.experiments.demo`: :func:`run_demo`, the demo itself (``vqswitch demo`` is its command line);
* :mod:`vqswitch.experiments.rate_distortion`: the settings compared at matched bits, fine-tuning one from a shared
  upstream model, and the verdict computed from the rows (``benchmarks/bench_rate_distortion.py``,
  ``benchmarks/bench_faces.py``).

Nothing is imported here: ``from vqswitch.experiments.faces import FULL`` loads only what it names.
"""
