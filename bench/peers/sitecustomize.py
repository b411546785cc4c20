"""Names the peer benchmark's harness (`harness/tq_serve.py`) imports from testqueue's
earlier layout, given their current homes. Loaded only by `bench/peers/python`."""

import sys

import testqueue.app
import testqueue.models
import testqueue.vocabulary

sys.modules["testqueue.api.app"] = testqueue.app
testqueue.models.Result = testqueue.vocabulary.Result  # type: ignore[attr-defined]
