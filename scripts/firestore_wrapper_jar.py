"""Write a manifest-only jar that launches a local Firestore emulator jar.

The Debian package google-cloud-cli-firestore-emulator ships a jar without a
Main-Class; firebase-tools runs `java -jar $FIRESTORE_EMULATOR_BINARY_PATH`.
This wrapper names the main class and puts the real jar on its class path.
Usage: python firestore_wrapper_jar.py REAL_JAR OUT_JAR
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"


def manifest_line(text: str) -> str:
    """Fold one manifest header to 72-byte lines (continuations start with a space)."""
    raw = text.encode()
    chunks = [raw[:72]]
    rest = raw[72:]
    while rest:
        chunks.append(b" " + rest[:71])
        rest = rest[71:]
    return "\r\n".join(chunk.decode() for chunk in chunks) + "\r\n"


def main(argv: list[str]) -> int:
    """Write the wrapper jar; exit 2 on bad arguments."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    real, out = Path(argv[0]).resolve(), Path(argv[1])
    if not real.is_file():
        print(f"no such jar: {real}", file=sys.stderr)
        return 2
    manifest = (
        manifest_line("Manifest-Version: 1.0")
        + manifest_line(f"Main-Class: {MAIN_CLASS}")
        + manifest_line(f"Class-Path: {real.as_uri()}")
        + "\r\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", manifest)
    out.chmod(0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
