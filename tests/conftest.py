import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
# The tests must not depend on (or write to) the user's tuning wisdom: point it at a
# fresh path for the session; tests of the tuner set their own.
os.environ["SOFTGEN_WISDOM"] = os.path.join(tempfile.mkdtemp(prefix="softgen-tests-"), "wisdom.json")


def pytest_terminal_summary(terminalreporter):
    """The matrix's worst error per op x algorithm x width, when it ran."""
    worst = getattr(sys.modules.get("test_matrix"), "WORST", None)
    if worst:
        terminalreporter.section("worst error vs float64 in the matrix (reference.check's measure)")
        for (op, algo, width), err in sorted(worst.items()):
            terminalreporter.write_line(f"{op:>12} {algo:<22} {width:>2} lanes  {err:.3g}")
