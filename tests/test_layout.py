"""The house's edges: each pipeline stage is a package, and the lower layers do not pull in the
upper ones (a detector does not need the database to judge a reading)."""
import subprocess
import sys


def _loaded_after(statement: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"import sys; {statement}; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_detectors_do_not_load_the_database():
    loaded = _loaded_after("import lib.detect.detectors")
    assert "duckdb" not in loaded
    assert not any(m.startswith(("lib.store", "lib.page", "lib.ingest")) for m in loaded)


def test_the_vocabulary_imports_nothing_of_vigie():
    loaded = _loaded_after("import lib.states")
    assert {m for m in loaded if m.startswith("lib.")} == {"lib.states"}
