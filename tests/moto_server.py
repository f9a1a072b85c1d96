"""moto's server, with its DynamoDB made linearizable as DynamoDB is.

Usage: python tests/moto_server.py -H 127.0.0.1 -p PORT (the arguments of moto_server).

moto serves each request on a thread of its own and does not lock its DynamoDB backend, and its
TransactWriteItems checks and writes item by item and, when any condition fails, restores a
copy of every table it took before starting. Under concurrent requests that undoes other
requests' writes and lets two transactions with the same condition both land: not what
DynamoDB does, which serializes writes to an item and applies a transaction atomically. So
every DynamoDB request here runs under one lock, and the tests see DynamoDB's semantics.
Other services (Secrets Manager, IAM) run as moto runs them.
"""

import threading

from moto import server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_DYNAMODB = threading.Lock()
_call = DomainDispatcherApplication.__call__


def _serialized(self, environ, start_response):
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
        with _DYNAMODB:
            # moto builds the whole answer inside the call, so the lock covers the work.
            return list(_call(self, environ, start_response))
    return _call(self, environ, start_response)


DomainDispatcherApplication.__call__ = _serialized

if __name__ == "__main__":
    server.main()
