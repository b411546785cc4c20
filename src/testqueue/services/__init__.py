"""The rules of each concept beside the queue, called by the API, the dashboard and the CLI
alike: `test_cases`, `accounts`, `executions` (reading them), `runs` (queueing and
stopping them), `overview` (the queue as people read it)."""
