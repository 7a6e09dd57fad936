"""Regenerate src/edgeward/_pb/ from proto/edgeward/v1/*.proto.

`make proto` runs this; tests/test_proto_generated.py runs it into a temporary folder and
fails when the checked-in modules differ, so the generated code can never drift from proto/.
protoc writes `from edgeward.v1 import x_pb2`; the modules live flat in edgeward._pb, so that
import is rewritten to a package-relative one.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_FILES = sorted((PROTO_ROOT / "edgeward" / "v1").glob("*.proto"))
DEFAULT_OUT = ROOT / "src" / "edgeward" / "_pb"
_IMPORT = re.compile(r"^from edgeward\.v1 import ", re.MULTILINE)
INIT = '"""Generated protobuf and gRPC modules (tools/gen_proto.py); never edit by hand."""\n'


def generate(out_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p) for p in PROTO_FILES],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted((Path(tmp) / "edgeward" / "v1").iterdir()):
            text = _IMPORT.sub("from . import ", f.read_text())
            (out_dir / f.name).write_text(text)
    (out_dir / "__init__.py").write_text(INIT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.out == DEFAULT_OUT and DEFAULT_OUT.exists():
        shutil.rmtree(DEFAULT_OUT)
    generate(args.out)
    print(f"generated {len(PROTO_FILES)} proto files into {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
