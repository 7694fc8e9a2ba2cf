"""fastattn's benchmark suite (not part of the installed package): run it with ``fastattn bench``.

See ``benchmarks/README.md`` for the method, the result schema and how to add a case or provider.
"""
