"""Export the wheels that ``scripts/install.sh --from-source`` built into a wheelhouse.

    .venv/bin/python scripts/export_wheelhouse.py DEST

Copies ``build/wheels/*.whl`` to DEST. Firedrake's extension modules are linked with absolute
RUNPATHs into the build venv's site-packages; those entries are rewritten relative to
``$ORIGIN`` (patchelf) and the wheel is repacked, so the wheelhouse installs into a venv at any
path (``scripts/install.sh --wheelhouse DEST`` on another machine of the same kind).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_WHEELS = ROOT / "build" / "wheels"


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


def export_wheel(wheel: Path, dest: Path, site: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        unpack = Path(tmp) / "unpacked"
        subprocess.run([sys.executable, "-m", "wheel", "unpack", "-d", str(unpack), str(wheel)],
                       check=True, capture_output=True)
        (root,) = unpack.iterdir()
        for so in root.rglob("*.so"):
            relocate_runpath(so, root, site)
        subprocess.run([sys.executable, "-m", "wheel", "pack", "-d", str(dest), str(root)],
                       check=True, capture_output=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: export_wheelhouse.py DEST", file=sys.stderr)
        return 2
    dest = Path(argv[0]).resolve()
    wheels = sorted(BUILD_WHEELS.glob("*.whl"))
    if not wheels:
        print(f"export_wheelhouse: no wheels in {BUILD_WHEELS}; they are made by "
              "scripts/install.sh --from-source", file=sys.stderr)
        return 2
    dest.mkdir(parents=True, exist_ok=True)
    site = Path(sysconfig.get_paths()["purelib"])
    for wheel in wheels:
        if wheel.name.startswith("firedrake-"):
            export_wheel(wheel, dest, site)
        else:
            shutil.copy2(wheel, dest / wheel.name)
        print(f"exported {wheel.name}")
    print(f"wheelhouse: {dest} (install with scripts/install.sh --wheelhouse {dest})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
