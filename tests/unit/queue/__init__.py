import pytest

pytest.register_assert_rewrite("scalepatterns.queue.testing")
