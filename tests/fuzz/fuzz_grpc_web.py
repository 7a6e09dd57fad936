"""libFuzzer target: ``python tests/fuzz/fuzz_grpc_web.py [libFuzzer flags] CORPUS_DIR...`` (docs/fuzzing.md).

The oracle is ``tests.fuzz.oracle_grpc_web``; this script only starts the fuzzer on it.
"""

from runner import fuzz  # the script's directory is on sys.path

if __name__ == "__main__":
    fuzz("tests.fuzz.oracle_grpc_web")
