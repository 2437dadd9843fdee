"""Shared test configuration.

Hypothesis profiles: ``ci`` (the default: derandomized, default example count) and ``thorough``
(>= 1000 examples per property). Select with ``TINYQUANT_HYPOTHESIS=thorough pytest tests/spec``.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("TINYQUANT_HYPOTHESIS", "ci"))
