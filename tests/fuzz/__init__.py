"""Coverage-guided fuzzing (atheris) of the parsers, the path normaliser, the config loader and
JWT verification. Harness modules are ``fuzz_*.py`` (not collected by pytest); run one with
``python -m tests.fuzz NAME [libFuzzer args]``, all with ``./dev.sh fuzz [SECONDS]``
(tests/fuzz/run.py). ``test_fuzz_smoke.py`` is the short CI pass."""
