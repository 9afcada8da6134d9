"""Make a wheel built inside a venv relocatable (used by ``scripts/install.sh --from-source``).

    .venv/bin/python scripts/relocate_wheel.py WHEEL

Firedrake's extension modules are linked with absolute RUNPATHs into the build venv's
site-packages (``libfiredrake_rtree.so``, PETSc, libsupermesh). Those entries are rewritten
relative to ``$ORIGIN`` (patchelf) and the wheel is repacked in place, so it installs into a
venv at any path: a recreated ``.venv`` or another machine of the same kind
(``scripts/install.sh --wheelhouse DIR``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path



def relocate_runpath(so: Path, unpacked: Path, site: Path) -> None:
    """Rewrite RUNPATH entries under ``site`` as ``$ORIGIN``-relative ones."""
    old = subprocess.run(["patchelf", "--print-rpath", str(so)], check=True,
                         capture_output=True, text=True).stdout.strip()
    if not old:
        return
    here = so.parent.relative_to(unpacked)
    new = []
    for entry in old.split(":"):
        path = Path(entry)
        if path.is_absolute() and path.is_relative_to(site):
            entry = "$ORIGIN/" + os.path.relpath(path.relative_to(site), here)
        new.append(entry)
    if new != old.split(":"):
        subprocess.run(["patchelf", "--set-rpath", ":".join(new), str(so)], check=True)


def relocate_wheel(wheel: Path, site: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        unpack = Path(tmp) / "unpacked"
        subprocess.run([sys.executable, "-m", "wheel", "unpack", "-d", str(unpack), str(wheel)],
                       check=True, capture_output=True)
        (root,) = unpack.iterdir()
        for so in root.rglob("*.so"):
            relocate_runpath(so, root, site)
        subprocess.run([sys.executable, "-m", "wheel", "pack", "-d", str(wheel.parent),
                        str(root)], check=True, capture_output=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print("usage: relocate_wheel.py WHEEL", file=sys.stderr)
        return 2
    relocate_wheel(Path(argv[0]).resolve(), Path(sysconfig.get_paths()["purelib"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
