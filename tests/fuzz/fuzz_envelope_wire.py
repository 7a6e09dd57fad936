"""libFuzzer target: ``python tests/fuzz/fuzz_envelope_wire.py [libFuzzer flags] CORPUS_DIR...`` (docs/fuzzing.md).

The envelope oracle (``tests.fuzz.oracle_envelope``) with the pure twin on protobuf's
pure-Python backend, instrumented, so that the wire format's own paths (varints, wire types,
groups, unknown fields, UTF-8) guide the fuzzer; ``fuzz_envelope.py`` runs the pair as deployed
(upb). Disagreements are confirmed on upb by ``tests.fuzz.referee`` before they count.
"""

import os

os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"  # before protobuf is imported

from runner import fuzz  # the script's directory is on sys.path

if __name__ == "__main__":
    fuzz("tests.fuzz.oracle_envelope", instrument=("edgeward", "google.protobuf"))
