"""Coverage-guided fuzzing with atheris (docs/fuzzing.md).

``fuzz_<target>.py`` are the libFuzzer scripts (pytest does not collect them, nor ``runner``,
``seeds``, ``support`` and ``referee``); each runs the ``check`` of an ``oracle_<name>`` module,
which the regression tests import as plain code.
"""
