"""Sending webhooks: where a request may go (`safety`), how it is signed (`signing`),
what it says (`payloads`), one attempt (`sender`) and the loop that sends what the
outbox holds (`loop`). The outbox itself, written with each change, is `queue.outbox`;
claiming and settling deliveries is `queue.deliveries`."""
