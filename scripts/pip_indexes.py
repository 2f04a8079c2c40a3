"""Print pip's index settings as uv's arguments, one per line: run by ``setup.sh``.

uv reads neither pip's configuration files nor its ``PIP_*`` variables, so a machine whose pip is
pointed at a mirror, extra indexes, local wheels, a constraints file or a certificate bundle
would send uv elsewhere. ``pip config list`` gives what pip would use (its files and the
variables, the latter as ``:env:.NAME``); each index setting becomes the uv option of the same
meaning, and the certificate bundle a ``SSL_CERT_FILE=...`` line for the script to export. uv
then searches every index for the best version, as pip does (``unsafe-best-match``).

Usage: ``python scripts/pip_indexes.py`` (with the Python whose pip the set-up uses)
"""

from __future__ import annotations

import shlex
import subprocess
import sys

OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "constraints": "--constraint",
}
"""pip's setting → uv's option of the same meaning."""

SECTIONS = (":env:", "global", "install")
"""The parts of pip's configuration that apply to ``pip install``."""


def uv_arguments(listing: str) -> list[str]:
    """Return uv's arguments for ``pip config list`` output (lines ``section.key='value'``)."""
    pairs: list[tuple[str, str]] = []
    cert = None
    for line in listing.splitlines():
        key, sep, raw = line.partition("=")
        section, _, name = key.rpartition(".")
        if not sep or section not in SECTIONS:
            continue
        values = shlex.split(raw)
        values = values[0].split() if len(values) == 1 else values  # 'a b' holds two
        if name == "cert" and values:
            cert = values[0]
        for value in values if name in OPTIONS else ():
            if (OPTIONS[name], value) not in pairs:
                pairs.append((OPTIONS[name], value))
    args = [item for pair in pairs for item in pair]
    if pairs:
        args += ["--index-strategy", "unsafe-best-match"]
    return args + ([f"SSL_CERT_FILE={cert}"] if cert else [])


def main() -> int:
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    args = uv_arguments(done.stdout if done.returncode == 0 else "")
    if args:
        print(*args, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
