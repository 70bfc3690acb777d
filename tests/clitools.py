"""Helpers of the CLI tests: run ``featlab`` in-process and check the one-line error contract (exit 2)."""
from featlab.cli import main


def run_cli(capsys, *argv):
    """``featlab ARGV`` in this process: (exit code, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *fragments):
    """Exit code 2 and exactly one stderr line ``featlab: error: ...`` containing every fragment; returns it."""
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featlab: error:"), err
    for frag in fragments:
        assert frag in lines[0], lines[0]
    return lines[0]
