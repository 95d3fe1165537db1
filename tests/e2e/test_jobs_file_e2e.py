"""Two processes opening one new jobs file at the same moment: both get it (SQLite does not wait
for the lock its switch to WAL takes; addons/sqlite_wal.py does)."""

import subprocess
import sys
import time
from pathlib import Path


OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from addons.jobs import JobStore

start = float(sys.argv[2])
while time.time() < start:
    pass
try:
    JobStore(Path(sys.argv[1]), "owner").close()
    print("ok")
except Exception as e:
    print(f"{type(e).__name__}: {e}")
"""


def test_ambassadors_opening_a_new_jobs_file_at_once_both_get_it(tmp_path):
    """Two ambassadors sharing a state folder, started together (see addons/sqlite_wal.py)."""

    root = Path(__file__).resolve().parents[2]
    for trial in range(8):
        start = str(time.time() + 1.0)
        both = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, str(tmp_path / f"jobs{trial}.sqlite3"), start],
                                 cwd=root, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        assert [p.communicate(timeout=60)[0].strip() for p in both] == ["ok", "ok"], trial
