"""Locust stress test of the webshop, compatible with the course's stress test.

Before the users start (once: in the single local process at test start, or in the master
at its start with ``--processes``; never on workers) it runs the course's three batch_init
calls through the gateway:

    POST /payment/batch_init/100000/1000000        100k users with 1M credit
    POST /stock/batch_init/100000/1000000/1        100k items with 1M stock, price 1
    POST /orders/batch_init/100000/100000/100000/1 100k orders of two random items

Then:

- ``CheckoutUser`` (the course's user): checks out a random batch-initialised order, then
  waits 1 s. Any 4xx or 5xx answer is a failure. Orders are drawn with replacement, so as a
  test goes on more checkouts find their order already paid (200, nothing charged); those
  are counted on a line of their own, ``/orders/checkout/[order_id] (already paid)``.
- ``ShopperUser`` (a mixed scenario, off by default): creates a user, adds funds, creates an
  order, adds two random batch items, checks out (must succeed) and finds the order (must
  be paid), waiting 1 s between journeys. Give it a weight with the environment variable
  ``WEBSHOP_SHOPPER_WEIGHT`` (e.g. 1 for one shopper per course user).

Examples (see the README's "Load tests"):

    locust -f test/locustfile.py --host http://127.0.0.1:8000 --headless -u 1000 -r 100 -t 60s
    locust -f test/locustfile.py --host http://127.0.0.1:8000 --headless -u 1000 -r 100 -t 60s --processes 2
    WEBSHOP_SHOPPER_WEIGHT=1 locust -f test/locustfile.py --host http://127.0.0.1:8000 --headless -u 200 -r 50 -t 60s
    locust -f test/locustfile.py --host http://127.0.0.1:8000 --skip-init ...   # data already there

The key space can be changed with ``--batch-users``, ``--batch-items``, ``--batch-orders``
(defaults: the course's 100,000 each).
"""

import json
import os
import random
import urllib.error
import urllib.request

from locust import FastHttpUser, between, events, task
from locust.runners import LocalRunner, MasterRunner

#: The course's sizes: 100k users with 1M credit, 100k items with 1M stock at price 1.
NUMBER_OF_USERS = 100_000
NUMBER_OF_ITEMS = 100_000
NUMBER_OF_ORDERS = 100_000
STARTING_MONEY = 1_000_000
STARTING_STOCK = 1_000_000
ITEM_PRICE = 1
#: Bound on one batch_init call (the target is 5 s for 100k keys; a debug build is slower).
INIT_TIMEOUT_S = 120
#: The answer to checking out an order that is already paid (200, nothing charged).
ALREADY_PAID = "Order is already paid"
#: The stats line such repeats are counted on.
ALREADY_PAID_NAME = "/orders/checkout/[order_id] (already paid)"
#: Largest quantity a shopper puts on one line; it gets exactly the funds for two such lines.
SHOPPER_MAX_QUANTITY = 2


@events.init_command_line_parser.add_listener
def _add_arguments(parser):
    parser.add_argument("--skip-init", action="store_true", default=False,
                        help="do not run the three batch_init calls at the start")
    parser.add_argument("--batch-users", type=int, default=NUMBER_OF_USERS, help="batch users 0..N-1")
    parser.add_argument("--batch-items", type=int, default=NUMBER_OF_ITEMS, help="batch items 0..N-1")
    parser.add_argument("--batch-orders", type=int, default=NUMBER_OF_ORDERS, help="batch orders 0..N-1")


def _sizes(environment):
    o = environment.parsed_options
    if o is None:
        return NUMBER_OF_USERS, NUMBER_OF_ITEMS, NUMBER_OF_ORDERS
    return o.batch_users, o.batch_items, o.batch_orders


def init_paths(users, items, orders):
    """The course's three batch_init calls, in its order: users, items, orders."""
    return [
        f"/payment/batch_init/{users}/{STARTING_MONEY}",
        f"/stock/batch_init/{items}/{STARTING_STOCK}/{ITEM_PRICE}",
        f"/orders/batch_init/{orders}/{items}/{users}/{ITEM_PRICE}",
    ]


def _populate(environment):
    """Runs the three batch_init calls (unless --skip-init)."""
    if environment.parsed_options is not None and environment.parsed_options.skip_init:
        return
    host = (environment.host or "").rstrip("/")
    for path in init_paths(*_sizes(environment)):
        req = urllib.request.Request(host + path, method="POST", data=b"")
        try:
            with urllib.request.urlopen(req, timeout=INIT_TIMEOUT_S) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            status = e.code
        except OSError as e:
            status = f"no answer ({e})"
        if status != 200:
            # A test on half-initialised data measures nothing: stop it, exit non-zero.
            print(f"init: POST {path}: {status}; stopping the test", flush=True)
            environment.process_exit_code = 2
            if environment.runner is not None:
                environment.runner.quit()
            return
        print(f"init: POST {path}: 200", flush=True)


@events.test_start.add_listener
def _populate_locally(environment, **_kwargs):
    """One process: test_start runs before the first user is spawned."""
    if isinstance(environment.runner, LocalRunner):
        _populate(environment)


@events.init.add_listener
def _populate_on_master(environment, **_kwargs):
    """--processes / distributed: the master's test_start races with the workers' first
    users, so the master initialises at its start, before any worker connects."""
    if isinstance(environment.runner, MasterRunner):
        _populate(environment)


def _check(response, expect=None):
    """Marks a response: any 4xx or 5xx is a failure (the course counts 4xx as failures);
    `expect` may refuse a 2xx body. Returns the parsed JSON body (True when no body was
    expected), or None after a failure."""
    if response.status_code >= 400 or response.status_code == 0:
        response.failure(f"{response.status_code}: {response.text}")
        return None
    body = None
    if expect is not None:
        try:
            body = json.loads(response.text)
        except ValueError:
            body = None
        if body is None or not expect(body):
            response.failure(f"unexpected body: {response.text}")
            return None
    response.success()
    return True if expect is None else body


class CheckoutUser(FastHttpUser):
    """The course's stress test user: checkout of a random batch-initialised order."""

    wait_time = between(1, 1)

    @task
    def checkout(self):
        _users, _items, orders = _sizes(self.environment)
        order_id = random.randint(0, orders - 1)
        with self.client.post(f"/orders/checkout/{order_id}", name="/orders/checkout/[order_id]",
                              catch_response=True) as response:
            if _check(response) and response.text == ALREADY_PAID:
                # Counted on a line of its own: a repeat only reads the order, so mixed in
                # with first-time checkouts it would flatter their latency more the longer a
                # test runs (the "Aggregated" line still counts every checkout).
                response.request_meta["name"] = ALREADY_PAID_NAME


class ShopperUser(FastHttpUser):
    """A shopper's whole journey; off unless WEBSHOP_SHOPPER_WEIGHT is above 0."""

    weight = int(os.environ.get("WEBSHOP_SHOPPER_WEIGHT", "0"))
    wait_time = between(1, 1)

    @task
    def shop(self):
        _users, items, _orders = _sizes(self.environment)
        with self.client.post("/payment/create_user", name="/payment/create_user",
                              catch_response=True) as r:
            body = _check(r, lambda b: isinstance(b.get("user_id"), str))
        if body is None:
            return
        user_id = body["user_id"]
        funds = 2 * SHOPPER_MAX_QUANTITY * ITEM_PRICE
        with self.client.post(f"/payment/add_funds/{user_id}/{funds}",
                              name="/payment/add_funds/[user_id]/[amount]", catch_response=True) as r:
            if _check(r, lambda b: b.get("done") is True) is None:
                return
        with self.client.post(f"/orders/create/{user_id}", name="/orders/create/[user_id]",
                              catch_response=True) as r:
            body = _check(r, lambda b: isinstance(b.get("order_id"), str))
        if body is None:
            return
        order_id = body["order_id"]
        for _ in range(2):
            item_id = random.randint(0, items - 1)
            quantity = random.randint(1, SHOPPER_MAX_QUANTITY)
            with self.client.post(f"/orders/addItem/{order_id}/{item_id}/{quantity}",
                                  name="/orders/addItem/[order_id]/[item_id]/[quantity]",
                                  catch_response=True) as r:
                if _check(r) is None:
                    return
        with self.client.post(f"/orders/checkout/{order_id}", name="/orders/checkout/[order_id]",
                              catch_response=True) as r:
            if r.status_code == 200 and r.text != "Checkout successful":
                r.failure(f"checkout of a new order: {r.text}")
                return
            if _check(r) is None:
                return
        with self.client.get(f"/orders/find/{order_id}", name="/orders/find/[order_id]",
                             catch_response=True) as r:
            _check(r, lambda b: b.get("paid") is True)
