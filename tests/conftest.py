import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
# The tests must not depend on (or write to) the user's tuning wisdom: point it at a
# fresh path for the session; tests of the tuner set their own.
os.environ["SOFTGEN_WISDOM"] = os.path.join(tempfile.mkdtemp(prefix="softgen-tests-"), "wisdom.json")
