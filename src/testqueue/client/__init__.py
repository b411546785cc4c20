"""The CI client: `testqueue login | run | status | cancel`, over the HTTP API only.

It needs nothing of the server's but its address and a token, so it runs on
any CI machine: `credentials` finds them (flags, `TESTQUEUE_URL` and
`TESTQUEUE_TOKEN`, or what `login` stored), `http` talks to the API,
`follow` waits for a batch by the server's event stream, and `commands`
turns it all into the commands and their exit codes.
"""
