"""TensorFlow, imported once with its C++ start-up lines kept off the console.

`import tensorflow` writes "All log messages before absl::InitializeLog()..." and "oneDNN custom
operations are on" straight to file descriptor 2, and TF_CPP_MIN_LOG_LEVEL does not silence them
(../shared/FACTS.md). Every module of the package that uses TensorFlow or Keras imports this one
first: fd 2 points at /dev/null for the import alone, then comes back, so Python's own warnings and
errors, and TensorFlow's later messages, still reach the console. ZOOBOT_TF_VERBOSE=1 keeps the lines.
"""

import os
import sys

if "tensorflow" not in sys.modules and not os.environ.get("ZOOBOT_TF_VERBOSE"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    _saved, _null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(_null, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(_saved, 2)
        os.close(_saved)
        os.close(_null)
