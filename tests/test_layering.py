"""engine/ never imports textual or capguard_tui: proved in a fresh interpreter."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import engine


def test_importing_every_engine_module_loads_no_textual():
    names = sorted(m.name for m in pkgutil.walk_packages(engine.__path__, "engine."))
    assert "engine.book" in names and "engine.margin" in names
    code = (
        "import importlib, sys\n"
        f"for n in {names!r}: importlib.import_module(n)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'capguard_tui'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"engine imported: {out.stdout.strip()}"


def test_no_engine_source_mentions_textual_imports():
    root = Path(engine.__file__).parent
    offenders = [
        str(p)
        for p in root.rglob("*.py")
        for line in p.read_text().splitlines()
        if line.lstrip().startswith(("import textual", "from textual", "import capguard_tui", "from capguard_tui"))
    ]
    assert offenders == []
