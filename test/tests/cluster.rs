//! Whole-cluster scenarios: real processes (replicas, coordinators, nginx) on loopback,
//! driven through the gateway. They start many processes on a 2-core machine, so they run
//! one at a time (the nextest group `cluster`).

mod support;

use model::topology::Service;
use serde_json::Value;
use support::{start, start_on, start_tuned, Node};
use webshop_tests::{consistency, run_parallel, Api};

fn id_of(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_else(|| panic!("no {field} in {v}")).to_string()
}

/// The public API end to end, every bad input answered with 400 and no change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_contract_and_bad_input() {
    let c = start(1).await;
    let api = Api::new(&c.gateway_url());

    // Stock.
    let r = api.post("/stock/item/create/7").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let item = id_of(&r.json(), "item_id");
    assert_eq!(api.post(&format!("/stock/add/{item}/10")).await.status, 200);
    assert_eq!(api.post(&format!("/stock/subtract/{item}/3")).await.status, 200);
    assert_eq!(api.item(&item).await, (7, 7));
    let find = api.get(&format!("/stock/find/{item}")).await;
    assert_eq!(find.content_type.as_deref(), Some("application/json"));
    for bad in [
        format!("/stock/subtract/{item}/8"),
        format!("/stock/add/{item}/-1"),
        format!("/stock/add/{item}/abc"),
        format!("/stock/add/{item}/1.5"),
        format!("/stock/add/{item}/99999999999999999999"),
        format!("/stock/add/{item}/{}", i64::MAX),
        "/stock/add/no-such-item/1".to_string(),
        "/stock/item/create/-5".to_string(),
    ] {
        let r = api.post(&bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(!r.body.is_empty());
    }
    assert_eq!(api.item(&item).await, (7, 7), "rejected requests changed nothing");
    assert_eq!(api.get("/stock/find/no-such-item").await.status, 400);

    // Payment.
    let user = id_of(&api.post_ok("/payment/create_user").await, "user_id");
    let u = api.get_ok(&format!("/payment/find_user/{user}")).await;
    assert_eq!((u["user_id"].as_str(), u["credit"].as_i64()), (Some(user.as_str()), Some(0)));
    assert_eq!(api.post_ok(&format!("/payment/add_funds/{user}/50")).await, serde_json::json!({ "done": true }));
    assert_eq!(api.post(&format!("/payment/pay/{user}/20")).await.status, 200);
    for bad in
        [format!("/payment/pay/{user}/31"), format!("/payment/add_funds/{user}/-1"), "/payment/pay/nobody/1".into()]
    {
        assert_eq!(api.post(&bad).await.status, 400, "{bad}");
    }
    assert_eq!(api.credit(&user).await, 30);

    // Orders.
    let order = id_of(&api.post_ok(&format!("/orders/create/{user}")).await, "order_id");
    let o = api.order(&order).await;
    assert_eq!(o["paid"], false);
    assert_eq!(o["items"], serde_json::json!([]));
    assert_eq!(o["user_id"].as_str(), Some(user.as_str()));
    assert_eq!(o["total_cost"], 0);
    assert_eq!(api.post(&format!("/orders/addItem/{order}/{item}/2")).await.status, 200);
    assert_eq!(api.post(&format!("/orders/addItem/{order}/{item}/1")).await.status, 200);
    for bad in [
        format!("/orders/addItem/{order}/no-such-item/1"),
        format!("/orders/addItem/{order}/{item}/-1"),
        format!("/orders/addItem/no-such-order/{item}/1"),
        "/orders/checkout/no-such-order".to_string(),
    ] {
        assert_eq!(api.post(&bad).await.status, 400, "{bad}");
    }
    let o = api.order(&order).await;
    assert_eq!(o["items"], serde_json::json!([[item.clone(), 3]]), "lines merge");
    assert_eq!(o["total_cost"], 21);

    let r = api.post(&format!("/orders/checkout/{order}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.credit(&user).await, 9);
    assert_eq!(api.item(&item).await.0, 4);
    assert_eq!(api.order(&order).await["paid"], true);
    // A paid order checks out again with 200 and is not charged again.
    assert_eq!(api.post(&format!("/orders/checkout/{order}")).await.status, 200);
    assert_eq!(api.credit(&user).await, 9);
    assert_eq!(api.post(&format!("/orders/addItem/{order}/{item}/1")).await.status, 400);

    // Not enough credit: 400, nothing taken.
    let poor = id_of(&api.post_ok(&format!("/orders/create/{user}")).await, "order_id");
    assert_eq!(api.post(&format!("/orders/addItem/{poor}/{item}/2")).await.status, 200);
    assert_eq!(api.post(&format!("/orders/checkout/{poor}")).await.status, 400);
    assert_eq!((api.credit(&user).await, api.item(&item).await.0), (9, 4));
    // Not enough stock: 400, the payment refunded.
    let big = id_of(&api.post_ok(&format!("/orders/create/{user}")).await, "order_id");
    assert_eq!(api.post(&format!("/orders/addItem/{big}/{item}/0")).await.status, 200);
    let cheap = id_of(&api.post_ok("/stock/item/create/0").await, "item_id");
    assert_eq!(api.post(&format!("/orders/addItem/{big}/{cheap}/1")).await.status, 200);
    let r = api.post(&format!("/orders/checkout/{big}")).await;
    assert_eq!((r.status, r.body.as_str()), (400, "not enough stock"));
    assert_eq!((api.credit(&user).await, api.item(&item).await.0), (9, 4));
    // An order of a user who does not exist: 400 at checkout.
    let ghost = id_of(&api.post_ok("/orders/create/no-such-user").await, "order_id");
    assert_eq!(api.post(&format!("/orders/addItem/{ghost}/{item}/1")).await.status, 200);
    assert_eq!(api.post(&format!("/orders/checkout/{ghost}")).await.status, 400);
    assert_eq!(api.item(&item).await.0, 4);

    // batch_init replies.
    for (path, n) in
        [("/stock/batch_init/10/5/2", 10), ("/payment/batch_init/10/3", 10), ("/orders/batch_init/10/10/10/2", 10)]
    {
        let v = api.post_ok(path).await;
        assert!(v["msg"].is_string(), "{v}");
        let _ = n;
    }
    assert_eq!(api.item("9").await, (5, 2));
    assert_eq!(api.credit("9").await, 3);
    let o = api.order("9").await;
    assert_eq!(o["total_cost"], 4);
    assert_eq!(api.post("/orders/batch_init/1/0/1/1").await.status, 400);

    // The internal surface is closed: saga steps need the secret, internal paths are not routed.
    let r = api.post(&format!("/stock/tx/subtract/{item}/1/x%231")).await;
    assert_eq!(r.status, 403);
    assert_eq!(api.item(&item).await.0, 4);
    for path in ["/internal/replicate", "/internal/view", "/admin/status", "/stock/internal/view", "/nothing"] {
        let r = api.get(path).await;
        assert!(r.status == 404 || r.status == 405, "{path} answered {}", r.status);
    }
}

/// A write repeated with the same request id (a client or nginx retry) is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_id_is_applied_once() {
    let c = start(1).await;
    let api = Api::new(&c.gateway_url());
    let item = id_of(&api.post_ok("/stock/item/create/1").await, "item_id");
    for _ in 0..3 {
        let r = api.try_send("POST", &format!("/stock/add/{item}/5"), Some("add-once")).await.unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(api.item(&item).await.0, 5);
    // A create retried with its request id answers the same id and creates nothing new.
    let a = api.try_send("POST", "/payment/create_user", Some("create-once")).await.unwrap().json();
    let b = api.try_send("POST", "/payment/create_user", Some("create-once")).await.unwrap().json();
    assert_eq!(a, b);
    // Sent straight to the other coordinator, as nginx does when it retries: still once.
    let other = Api::new(&format!("http://{}", c.topology().stock.coordinators[1]));
    let r = other.try_send("POST", &format!("/stock/add/{item}/5"), Some("add-once")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(api.item(&item).await.0, 5);
}

/// A request id names one request (an idempotency key): reused with another request it is
/// refused with 422 and changes nothing, whatever the two requests are; a malformed one is a
/// 400 and changes nothing. Before, a replica answered the second request with the first
/// one's saved answer: a pay reusing an add_funds id answered `{"done": true}` and charged
/// nothing, a checkout reusing an addItem id answered the addItem text and left the order
/// unpaid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_reused_for_another_request_is_refused_and_changes_nothing() {
    let c = start(1).await;
    let api = Api::new(&c.gateway_url());
    let send = |method: &'static str, path: String, id: &'static str| {
        let api = api.clone();
        async move { api.try_send(method, &path, Some(id)).await.unwrap() }
    };
    let user = id_of(&api.post_ok("/payment/create_user").await, "user_id");
    assert_eq!(send("POST", format!("/payment/add_funds/{user}/10"), "k1").await.status, 200);
    let pay = send("POST", format!("/payment/pay/{user}/5"), "k1").await;
    assert_eq!(pay.status, 422, "{}", pay.body);
    assert!(pay.body.contains("k1"), "{}", pay.body);
    assert_eq!(api.credit(&user).await, 10, "the refused pay charged nothing");
    // The first request repeated is still answered as the first time, and applied once.
    let again = send("POST", format!("/payment/add_funds/{user}/10"), "k1").await;
    assert_eq!((again.status, again.json()), (200, serde_json::json!({ "done": true })));
    assert_eq!(api.credit(&user).await, 10);

    let item = id_of(&api.post_ok("/stock/item/create/1").await, "item_id");
    assert_eq!(api.post(&format!("/stock/add/{item}/5")).await.status, 200);
    let order = id_of(&api.post_ok(&format!("/orders/create/{user}")).await, "order_id");
    assert_eq!(send("POST", format!("/orders/addItem/{order}/{item}/1"), "k2").await.status, 200);
    let checkout = send("POST", format!("/orders/checkout/{order}"), "k2").await;
    assert_eq!(checkout.status, 422, "{}", checkout.body);
    let found = api.get_ok(&format!("/orders/find/{order}")).await;
    assert_eq!(found["paid"], serde_json::json!(false), "{found}");
    assert_eq!(api.credit(&user).await, 10);
    // The same checkout with an id of its own goes through.
    assert_eq!(send("POST", format!("/orders/checkout/{order}"), "k3").await.status, 200);
    assert_eq!(api.credit(&user).await, 9);

    // Malformed ids: a 400 before anything is routed, nothing changed.
    let long = "x".repeat(model::idempotency::MAX_KEY_LEN + 1);
    for bad in [long.as_str(), "a b", "semi;colon", "slash/x"] {
        let r = api.try_send("POST", &format!("/stock/add/{item}/1"), Some(bad)).await.unwrap();
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
        assert!(r.body.contains("X-Request-Id"), "{}", r.body);
    }
    assert_eq!(api.item(&item).await.0, 4);
}

/// A retry is applied once however many other writes the key took in between: before, a
/// document remembered its last 32 request ids, so `stock/add` with ids r0..r33 and then r0
/// again left stock 35, not 34. With three replicas the request's record is on every one of
/// them: after the primary is killed, the retry reaching the new primary is still a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_many_writes_to_the_same_key_is_applied_once_even_after_a_failover() {
    let mut c = start(3).await;
    let api = Api::new(&c.gateway_url());
    api.post_ok("/stock/batch_init/1/0/1").await;
    for i in 0..34 {
        let r = api.try_send("POST", "/stock/add/0/1", Some(&format!("r{i}"))).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let again = api.try_send("POST", "/stock/add/0/1", Some("r0")).await.unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(api.item("0").await.0, 34);

    let primary = model::wire::View::initial(3).primary("0").unwrap();
    c.kill(Node::Replica(Service::Stock, primary));
    let again = api.try_send("POST", "/stock/add/0/1", Some("r1")).await.unwrap();
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(api.item("0").await.0, 34, "the retry at the new primary was a repeat");
}

/// The records of stock item `item` on stock replica 0: its document and its side records.
async fn fetch_item(c: &support::TestCluster, item: &str) -> Vec<store::Record> {
    reqwest::Client::new()
        .post(format!("http://{}/internal/ae/fetch", c.topology().stock.replicas[0]))
        .header(model::wire::SECRET, c.secret())
        .json(&[item])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The stored document of stock item `item` on stock replica 0 and the number of side
/// records beside it.
async fn stored_item(c: &support::TestCluster, item: &str) -> (String, usize) {
    let records = fetch_item(c, item).await;
    let doc = records.iter().find(|r| r.key == item).expect("the item is stored").body.clone();
    (doc, records.len() - 1)
}

/// The transaction records beside stock item `item` on stock replica 0.
async fn tx_records(c: &support::TestCluster, item: &str) -> usize {
    let tx = model::side::key(item, "t:");
    fetch_item(c, item).await.iter().filter(|r| r.key.starts_with(&tx)).count()
}

/// Waits until the transaction records beside stock item `item` are gone, for at most
/// `within`.
async fn tx_records_gone(c: &support::TestCluster, item: &str, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = tx_records(c, item).await;
        if left == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{left} transaction records beside {item} still held");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A saga's transaction records are dropped once the order service has released its
/// attempt, and not before: while a checkout is stuck in flight (its payment replica
/// paused), its stock record stays however long it waits, with every watermark held back by
/// it; once it finishes, the records go within the margin and the grace period. Before, each
/// finished attempt cost each participant a replicated write (`tx/forget`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_records_go_once_released_and_not_before() {
    let settings = [
        ("APP__REQUEST_TTL_MS", "2000"),
        ("APP__PRUNE_INTERVAL_MS", "100"),
        ("APP__HORIZON_INTERVAL_MS", "100"),
        ("APP__RESUME_RETRY_MS", "200"),
    ];
    let mut c = start_tuned(1, &settings).await;
    let api = Api::new(&c.gateway_url());
    let user = id_of(&api.post_ok("/payment/create_user").await, "user_id");
    assert_eq!(api.post(&format!("/payment/add_funds/{user}/100")).await.status, 200);
    let item = id_of(&api.post_ok("/stock/item/create/1").await, "item_id");
    assert_eq!(api.post(&format!("/stock/add/{item}/10")).await.status, 200);
    let order = || async {
        let o = id_of(&api.post_ok(&format!("/orders/create/{user}")).await, "order_id");
        assert_eq!(api.post(&format!("/orders/addItem/{o}/{item}/1")).await.status, 200);
        o
    };
    let done = order().await;
    assert_eq!(api.post(&format!("/orders/checkout/{done}")).await.status, 200);
    assert_eq!(tx_records(&c, &item).await, 1, "the finished attempt's record, held");

    // A checkout stuck on its payment: its stock step is applied, its attempt in flight.
    let stuck = order().await;
    c.pause(Node::Replica(Service::Payment, 0));
    let checkout = tokio::spawn({
        let api = api.clone();
        async move { api.post(&format!("/orders/checkout/{stuck}")).await.status }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tx_records(&c, &item).await < 2 {
        assert!(std::time::Instant::now() < deadline, "the stuck checkout's stock step never arrived");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Past the clock margin (10 s) and the grace period (2 s) after the first attempt ended:
    // were it not held back by the stuck one, its record would be gone.
    tokio::time::sleep(std::time::Duration::from_millis(decide::horizon::CLOCK_MARGIN_MS + 4_000)).await;
    assert_eq!(tx_records(&c, &item).await, 2, "no record goes while an earlier attempt is in flight");

    c.resume(Node::Replica(Service::Payment, 0));
    assert_eq!(checkout.await.unwrap(), 200);
    tx_records_gone(&c, &item, std::time::Duration::from_secs(30)).await;
    assert_eq!(api.item(&item).await.0, 8, "both checkouts took their stock, once");
}

/// Median time of `n` adds of 1 to `item`, one at a time.
async fn median_add(api: &Api, item: &str, n: usize) -> std::time::Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = std::time::Instant::now();
        assert_eq!(api.post(&format!("/stock/add/{item}/1")).await.status, 200);
        times.push(start.elapsed());
    }
    times.sort();
    times[n / 2]
}

/// 10,000 failed checkouts touching one item leave its stored document as it was: every
/// attempt's transaction record is a side record beside it, not inside it (before, each
/// attempt left a record inside the item for an hour, and every later write to the item
/// re-serialised, replicated and logged all of them). The records go once released
/// (`transaction_records_go_once_released_and_not_before`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_checkouts_do_not_grow_the_documents_they_touch() {
    const ORDERS: usize = 100;
    const ATTEMPTS: usize = 100;
    let c = start(1).await;
    let api = Api::new(&c.gateway_url());
    let plenty = id_of(&api.post_ok("/stock/item/create/1").await, "item_id");
    assert_eq!(api.post(&format!("/stock/add/{plenty}/1000")).await.status, 200);
    let none = id_of(&api.post_ok("/stock/item/create/1").await, "item_id");
    api.post_ok(&format!("/payment/batch_init/{ORDERS}/1000000")).await;
    let orders = run_parallel(ORDERS, 16, |i| {
        let (api, plenty, none) = (api.clone(), plenty.clone(), none.clone());
        async move {
            let o = id_of(&api.post_ok(&format!("/orders/create/{i}")).await, "order_id");
            for item in [&plenty, &none] {
                assert_eq!(api.post(&format!("/orders/addItem/{o}/{item}/1")).await.status, 200);
            }
            o
        }
    })
    .await;
    let (before, _) = stored_item(&c, &plenty).await;
    let add_before = median_add(&api, &plenty, 200).await;

    let started = std::time::Instant::now();
    let statuses = run_parallel(ORDERS * ATTEMPTS, 32, |i| {
        let (api, o) = (api.clone(), orders[i % ORDERS].clone());
        async move { api.post(&format!("/orders/checkout/{o}")).await.status }
    })
    .await;
    assert!(statuses.iter().all(|s| *s == 400), "every checkout fails for the missing stock");
    println!("{} failed checkouts in {:?}", statuses.len(), started.elapsed());

    let (after, sides) = stored_item(&c, &plenty).await;
    // The stock moved from 1,000 to 1,200 (the timed adds): same size, nothing else in it.
    assert_eq!(after.len(), before.len(), "{before} -> {after}");
    assert_eq!(after, before.replace("1000", "1200"));
    assert!(sides >= ORDERS * ATTEMPTS, "each attempt's record is beside the item: {sides}");
    let add_after = median_add(&api, &plenty, 200).await;
    println!("median add to the item: {add_before:?} before, {add_after:?} after");
    assert_eq!(api.item(&plenty).await.0, 1000 + 400, "every reservation was released");
}

/// The course consistency scenario: 1 item with stock 100, 1000 users with credit 1, 1000
/// orders of that item for random users, all checkouts fired at once (100 in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_scenario() {
    let c = start(1).await;
    let api = Api::new(&c.gateway_url());
    let (successes, failures) = consistency_run(&api).await;
    assert_eq!(successes, 100);
    assert_eq!(failures, 900);
}

/// Runs the consistency scenario; returns (successes, business failures) after checking
/// stock 0 and total credit 900.
pub async fn consistency_run(api: &Api) -> (usize, usize) {
    let setup = consistency::setup(api).await;
    let statuses = consistency::checkouts(api, &setup).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let bad = statuses.iter().filter(|s| **s == 400).count();
    assert_eq!(ok + bad, statuses.len(), "only 200 and 400 answers: {statuses:?}");
    consistency::check_totals(api, &setup).await;
    (ok, bad)
}

/// A replica of order (the saga driver) and then one of stock are killed while checkouts
/// run, and restarted. Afterwards every order is either paid with its stock and credit
/// taken, or unpaid with nothing taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_during_checkouts() {
    const ITEMS: i64 = 20;
    const USERS: i64 = 100;
    const ORDERS: usize = 300;
    const STOCK: i64 = 1_000;
    const CREDIT: i64 = 1_000;
    let mut c = start(1).await;
    let api = Api::new(&c.gateway_url());
    api.post_ok(&format!("/stock/batch_init/{ITEMS}/{STOCK}/1")).await;
    api.post_ok(&format!("/payment/batch_init/{USERS}/{CREDIT}")).await;
    api.post_ok(&format!("/orders/batch_init/{ORDERS}/{ITEMS}/{USERS}/1")).await;

    let fire = |from: usize, to: usize| {
        let api = api.clone();
        tokio::spawn(async move {
            run_parallel(to - from, 16, |i| {
                let api = api.clone();
                async move { api.try_send("POST", &format!("/orders/checkout/{}", from + i), None).await.map(|r| r.status) }
            })
            .await
        })
    };
    // Kill the order replica while the first third runs, then bring it back.
    let first = fire(0, ORDERS / 3);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    c.kill(Node::Replica(Service::Order, 0));
    c.start_again(Node::Replica(Service::Order, 0)).await;
    first.await.unwrap();
    // Kill the stock replica while the second third runs: sagas wait for it to return.
    let second = fire(ORDERS / 3, 2 * ORDERS / 3);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    c.kill(Node::Replica(Service::Stock, 0));
    c.start_again(Node::Replica(Service::Stock, 0)).await;
    second.await.unwrap();
    let third = fire(2 * ORDERS / 3, ORDERS).await.unwrap();
    assert!(third.iter().all(|s| matches!(s, Ok(200) | Ok(400))), "{third:?}");

    // Reconcile: what was taken equals what the paid orders hold.
    let mut stock_taken = vec![0i64; ITEMS as usize];
    let mut credit_taken = vec![0i64; USERS as usize];
    let mut paid = 0;
    for o in 0..ORDERS {
        let v = api.order(&o.to_string()).await;
        if v["paid"] == true {
            paid += 1;
            credit_taken[v["user_id"].as_str().unwrap().parse::<usize>().unwrap()] += v["total_cost"].as_i64().unwrap();
            for line in v["items"].as_array().unwrap() {
                stock_taken[line[0].as_str().unwrap().parse::<usize>().unwrap()] += line[1].as_i64().unwrap();
            }
        }
    }
    assert!(paid > ORDERS / 3, "most checkouts succeed ({paid} paid)");
    for (i, taken) in stock_taken.iter().enumerate() {
        assert_eq!(api.item(&i.to_string()).await.0, STOCK - taken, "item {i}");
    }
    for (u, taken) in credit_taken.iter().enumerate() {
        assert_eq!(api.credit(&u.to_string()).await, CREDIT - taken, "user {u}");
    }
}

/// Concurrent checkouts of one order charge it once; all of them answer 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkouts_of_one_order_charge_once() {
    let c = start(1).await;
    let api = Api::new(&c.gateway_url());
    let user = id_of(&api.post_ok("/payment/create_user").await, "user_id");
    api.post_ok(&format!("/payment/add_funds/{user}/100")).await;
    let item = id_of(&api.post_ok("/stock/item/create/10").await, "item_id");
    assert_eq!(api.post(&format!("/stock/add/{item}/5")).await.status, 200);
    let order = id_of(&api.post_ok(&format!("/orders/create/{user}")).await, "order_id");
    assert_eq!(api.post(&format!("/orders/addItem/{order}/{item}/2")).await.status, 200);
    let statuses = run_parallel(20, 20, |_| {
        let (api, order) = (api.clone(), order.clone());
        async move { api.post(&format!("/orders/checkout/{order}")).await.status }
    })
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(api.credit(&user).await, 80);
    assert_eq!(api.item(&item).await.0, 3);
}

/// A second batch_init makes the orders afresh under the same ids, and their checkouts charge
/// and take stock again. Before, an order's first attempt was the transaction `order#1`
/// whatever order bore the id: the participants still held the first run's record of it, and
/// answered the new order's steps as already applied, so it was paid without charging
/// (found by the nemesis run twice on one cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_made_again_by_a_second_batch_init_are_charged_again() {
    let c = start(1).await;
    let api = Api::new(&c.gateway_url());
    for run in 1..=2 {
        api.post_ok("/stock/batch_init/1/10/1").await;
        api.post_ok("/payment/batch_init/1/100").await;
        api.post_ok("/orders/batch_init/1/1/1/1").await;
        assert_eq!(api.post("/orders/checkout/0").await.status, 200, "run {run}");
        assert_eq!(api.credit("0").await, 98, "run {run}: the order's two items charged");
        assert_eq!(api.item("0").await.0, 8, "run {run}: its two items taken");
    }
}

/// Every acknowledged write survives a kill -9 of the replica that stored it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut c = start(1).await;
    let api = Api::new(&c.gateway_url());
    let item = id_of(&api.post_ok("/stock/item/create/1").await, "item_id");
    // Concurrent adds, so that the store group-commits them; the kill comes right after the
    // last acknowledgement.
    let statuses = run_parallel(200, 32, |_| {
        let (api, item) = (api.clone(), item.clone());
        async move { api.post(&format!("/stock/add/{item}/1")).await.status }
    })
    .await;
    assert!(statuses.iter().all(|s| *s == 200));
    c.kill(Node::Replica(Service::Stock, 0));
    c.start_again(Node::Replica(Service::Stock, 0)).await;
    assert_eq!(api.item(&item).await.0, 200);
}

/// With three replicas per service, every write reaches every replica: after the consistency
/// scenario all replicas of a service hold the same data (one digest root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hold_the_same_data() {
    let c = start(3).await;
    let api = Api::new(&c.gateway_url());
    assert_eq!(consistency_run(&api).await, (100, 900));
    for s in Service::ALL {
        c.assert_replicas_equal(s).await;
    }
}

/// The consistency scenario on the MongoDB engine: each replica on its own SecantusDB server
/// (role `store` in the manifest). One replica per service: SecantusDB's Python server takes
/// about a millisecond per document, and nine of them beside eighteen nodes on two cores
/// answer a fan-out of a few hundred states after the primaries' 2 s fan-out timeout
/// (setting `fanout_timeout_ms`), which evicts replicas; replication itself is the same
/// on every engine and is tested with three replicas on the embedded one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_scenario_on_mongo() {
    let c = start_on(1, "mongo").await;
    let stores = c.manifest().processes.iter().filter(|e| e.role == cluster::manifest::Role::Store).count();
    assert_eq!(stores, 3, "one store per replica: {:?}", c.manifest());
    let api = Api::new(&c.gateway_url());
    assert_eq!(consistency_run(&api).await, (100, 900));
    for s in Service::ALL {
        c.assert_replicas_equal(s).await;
    }
}

/// A multi call (several saga steps in one exchange, `/internal/multi`) answers each call as
/// the same call alone would be answered, across primaries, and repeating it applies nothing
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_calls_answer_as_single_calls() {
    use model::routing::Method;
    use model::wire::MultiCall;
    use net::client::ServiceClient;

    let c = start(3).await;
    let api = Api::new(&c.gateway_url());
    let mut items = Vec::new();
    for _ in 0..6 {
        let item = id_of(&api.post_ok("/stock/item/create/1").await, "item_id");
        assert_eq!(api.post(&format!("/stock/add/{item}/5")).await.status, 200);
        items.push(item);
    }
    let stock = ServiceClient::new(&c.topology().stock.coordinators, c.secret(), std::time::Duration::from_secs(10));
    let post = |path: String| MultiCall { method: Method::Post, path };
    let mut calls: Vec<MultiCall> = items.iter().map(|i| post(format!("/stock/tx/subtract/{i}/2/t1"))).collect();
    calls.push(post(format!("/stock/tx/subtract/{}/10/t2", items[0])));
    calls.push(MultiCall { method: Method::Get, path: format!("/stock/find/{}", items[1]) });
    calls.push(post("/stock/nothing/here".into()));
    calls.push(post("/stock/tx/subtract/no-such-item/1/t1".into()));
    calls.push(post("/stock/item/create/3".into()));

    let first: Vec<(u16, String)> =
        stock.multi(&calls).await.into_iter().map(|a| a.map(|a| (a.status, a.body)).unwrap()).collect();
    let statuses: Vec<u16> = first.iter().map(|a| a.0).collect();
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 200, 400, 200, 404, 400, 400], "{first:?}");
    for item in &items {
        assert_eq!(api.item(item).await, (3, 1), "{item}: subtracted once");
    }
    // The same calls again (a saga retrying with its transaction ids): same answers, and
    // nothing applied twice. The tx-keyed calls answered alone agree.
    let again: Vec<(u16, String)> =
        stock.multi(&calls).await.into_iter().map(|a| a.map(|a| (a.status, a.body)).unwrap()).collect();
    assert_eq!(again.iter().map(|a| a.0).collect::<Vec<_>>(), statuses);
    // The calls of one multi call run concurrently, like separate requests: the first find
    // may have run before its item's subtract, the second comes after it.
    let find: Value = serde_json::from_str(&again[7].1).unwrap();
    assert_eq!((find["stock"].as_i64(), find["price"].as_i64()), (Some(3), Some(1)));
    for (call, answer) in calls.iter().zip(&first).take(7) {
        let alone = stock.call(call.method, &call.path, None).await.unwrap();
        assert_eq!(alone.status, answer.0, "{}", call.path);
    }
    for item in &items {
        assert_eq!(api.item(item).await, (3, 1), "{item}: retried calls changed nothing");
    }
    c.assert_replicas_equal(Service::Stock).await;
}

/// The sum of a counter's samples in a node's `/metrics` whose labels include `with`.
async fn counter(addr: &str, name: &str, with: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The saga's steps go from the order's primary to the payment and stock primaries
/// directly (docs/design.md §6.6): the payment and stock coordinators route (almost) none of
/// them, and the primaries answer every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_steps_go_to_the_primaries_directly() {
    const ORDERS: usize = 30;
    let c = start(3).await;
    let api = Api::new(&c.gateway_url());
    api.post_ok("/payment/batch_init/10/1000").await;
    api.post_ok("/stock/batch_init/10/1000/1").await;
    api.post_ok(&format!("/orders/batch_init/{ORDERS}/10/10/1")).await;
    let statuses = run_parallel(ORDERS, 8, |i| {
        let api = api.clone();
        async move { api.post(&format!("/orders/checkout/{i}")).await.status }
    })
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let t = c.topology();
    let (mut routed, mut at_primaries) = (0.0, 0.0);
    for s in [Service::Payment, Service::Stock] {
        for addr in &t.nodes(s).coordinators {
            routed += counter(addr, "coordinator_requests_total", "route=\"tx_").await;
            routed += counter(addr, "coordinator_multi_calls_total", "").await;
        }
        for addr in &t.nodes(s).replicas {
            at_primaries += counter(addr, "replica_requests_total", "route=\"tx_debit\",status=\"200\"").await;
        }
    }
    // A step goes through a coordinator only when its direct try fails (no answer within a
    // second, on a machine the other tests load too); before, every step did.
    assert!(
        routed * 10.0 <= at_primaries,
        "{routed} saga calls routed by the coordinators, {at_primaries} steps applied"
    );
    // One payment and one or two items per order (two draws of one item make one line).
    assert!(at_primaries >= 2.0 * ORDERS as f64, "{at_primaries} steps applied at the primaries");
}
