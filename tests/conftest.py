"""Hypothesis settings for the test session.

Locally each run draws fresh examples, so repeated runs keep exploring. Under CI (the ``CI``
environment variable set; ``.ci/run`` sets it) the examples are derived from each
test's own code (``derandomize``) and no example database is read or written, so a CI run
tests the same cases every time and its verdict does not depend on luck or on what an earlier
run left in ``.hypothesis/``. A failure found locally prints its falsifying example, which
should then be pinned with ``@example`` so that CI tests it too.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
