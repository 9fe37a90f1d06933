//! The coordinator booted in-process on port 0 against fake replicas: small actix-web servers
//! on port 0 that record every request they receive and answer as each test scripts.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use model::placement::primary;
use model::topology::{Service, ServiceNodes, Topology};
use model::wire::{BatchKeys, View, EPOCH, MINTED_KEY, REQUEST_ID, SECRET};
use net::settings::CoordinatorSettings;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const SECRET_VALUE: &str = "s3cret";

/// One request a fake replica received.
#[derive(Clone, Debug)]
struct Seen {
    /// GET or POST.
    method: String,
    /// Path and query as received.
    path: String,
    /// `x-request-id`.
    request_id: Option<String>,
    /// The cluster secret header.
    secret: Option<String>,
    /// The view epoch header.
    epoch: Option<String>,
    /// The minted key header.
    minted: Option<String>,
    /// `content-type`.
    content_type: Option<String>,
    /// The body.
    body: Vec<u8>,
}

/// A scripted answer.
struct Answer {
    /// HTTP status.
    status: u16,
    /// JSON or plain text.
    json: bool,
    /// Body text.
    body: String,
    /// The replica's cause of a 503 (`x-webshop-unavailable`), if any.
    cause: Option<&'static str>,
}

/// Decides a fake's answer from its id and the request; `None` gives the default: a JSON echo
/// for public requests, 404 for `/internal/view`, a root (and buckets, all alike, when asked
/// for) for `/internal/digest`.
type Script = Arc<dyn Fn(u32, &Seen) -> Option<Answer> + Send + Sync>;

struct Fake {
    /// Where it listens (`host:port`).
    addr: String,
    /// Every request it received, in order.
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    /// The public (non-`/internal/`) requests it received.
    fn public(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| !s.path.starts_with("/internal/")).cloned().collect()
    }
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn default_answer(id: u32, seen: &Seen) -> Answer {
    match seen.path.split('?').next().unwrap() {
        "/internal/view" => Answer { status: 404, json: false, body: "no view here".into(), cause: None },
        "/internal/digest" => {
            let mut body = json!({"root": format!("root-{id}"), "epoch": 1});
            if seen.path.contains("buckets=true") {
                body["buckets"] = json!(vec!["b0"; 256]);
            }
            Answer { status: 200, json: true, body: body.to_string(), cause: None }
        }
        _ => {
            Answer { status: 200, json: true, body: json!({"replica": id, "path": seen.path}).to_string(), cause: None }
        }
    }
}

/// Records a request and decides its answer.
fn serve_one(id: u32, script: &Script, record: &Mutex<Vec<Seen>>, s: Seen) -> Answer {
    record.lock().unwrap().push(s.clone());
    script(id, &s).unwrap_or_else(|| default_answer(id, &s))
}

fn content_type(a: &Answer) -> &'static str {
    if a.json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// A fake replica: it takes requests over HTTP and over an internal connection
/// (`net::rpc`, what coordinators forward on), recording both alike.
async fn start_fake(id: u32, script: Script) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = HttpServer::new(move || {
        let (record, script) = (record.clone(), script.clone());
        let (rpc_record, rpc_script) = (record.clone(), script.clone());
        App::new()
            .route(
                net::rpc::RPC_PATH,
                web::get().to(move |req: HttpRequest, payload: web::Payload| {
                    let (record, script) = (rpc_record.clone(), rpc_script.clone());
                    let secret = header(&req, SECRET);
                    async move {
                        net::rpc::serve(&req, payload, Default::default(), move |call: net::rpc::Request| {
                            let s = Seen {
                                method: match call.method {
                                    model::routing::Method::Get => "GET".into(),
                                    model::routing::Method::Post => "POST".into(),
                                },
                                path: call.path.clone(),
                                request_id: call.header(REQUEST_ID).map(str::to_string),
                                secret: secret.clone(),
                                epoch: call.header(EPOCH).map(str::to_string),
                                minted: call.header(MINTED_KEY).map(str::to_string),
                                content_type: call.header("content-type").map(str::to_string),
                                body: call.body.to_vec(),
                            };
                            let a = serve_one(id, &script, &record, s);
                            let mut headers = vec![("content-type".to_string(), content_type(&a).to_string())];
                            if let Some(cause) = a.cause {
                                headers.push((model::wire::UNAVAILABLE_CAUSE.to_string(), cause.to_string()));
                            }
                            async move { net::rpc::Response { status: a.status, headers, body: a.body.into() } }
                        })
                    }
                }),
            )
            .default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let s = Seen {
                    method: req.method().to_string(),
                    path: req.uri().path_and_query().unwrap().to_string(),
                    request_id: header(&req, REQUEST_ID),
                    secret: header(&req, SECRET),
                    epoch: header(&req, EPOCH),
                    minted: header(&req, MINTED_KEY),
                    content_type: header(&req, "content-type"),
                    body: body.to_vec(),
                };
                let a = serve_one(id, &script, &record, s);
                let mut resp = HttpResponse::build(actix_web::http::StatusCode::from_u16(a.status).unwrap());
                resp.content_type(content_type(&a));
                if let Some(cause) = a.cause {
                    resp.insert_header((model::wire::UNAVAILABLE_CAUSE, cause));
                }
                async move { resp.body(a.body) }
            }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    Fake { addr, seen }
}

async fn start_fakes(n: u32, script: Script) -> Vec<Fake> {
    let mut fakes = Vec::new();
    for id in 0..n {
        fakes.push(start_fake(id, script.clone()).await);
    }
    fakes
}

fn defaults() -> Script {
    Arc::new(|_, _| None)
}

/// A coordinator running in-process; stops when dropped.
struct Coord {
    /// Its base URL.
    base: String,
    /// A client for the test's requests.
    http: reqwest::Client,
    /// Dropping it completes the coordinator's shutdown future.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Coord {
    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Option<String>, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        (status, ct, resp.text().await.unwrap())
    }
}

/// Boots a coordinator of `service` over the replicas at `replicas`, and waits until it serves.
async fn boot(service: Service, replicas: Vec<String>, request_timeout_ms: u64) -> Coord {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // The other services' addresses are never used: low ports nothing listens on.
    let mut topology = Topology::local(1, 1, &mut (1..));
    set_nodes(&mut topology, service, ServiceNodes { replicas, coordinators: vec![addr] });
    boot_in(service, topology, listener, request_timeout_ms).await
}

/// Sets the nodes of `service` in `topology`.
fn set_nodes(topology: &mut Topology, service: Service, nodes: ServiceNodes) {
    match service {
        Service::Order => topology.order = nodes,
        Service::Payment => topology.payment = nodes,
        Service::Stock => topology.stock = nodes,
    }
}

/// Boots coordinator 0 of `service` in `topology` on `listener`, and waits until it serves.
async fn boot_in(service: Service, topology: Topology, listener: TcpListener, request_timeout_ms: u64) -> Coord {
    let addr = listener.local_addr().unwrap().to_string();
    let settings = CoordinatorSettings {
        service,
        id: 0,
        topology: "unused".into(),
        listen: None,
        secret: SECRET_VALUE.into(),
        workers: 1,
        request_timeout_ms,
        long_timeout_ms: request_timeout_ms,
        // The prober stays out of these tests: they count what the replicas receive.
        probe_interval_ms: 3_600_000,
        probe_timeout_ms: 500,
        paxos_timeout_ms: 3000,
        anti_entropy_interval_ms: 3_600_000,
        anti_entropy_max_buckets: 64,
        anti_entropy_max_repairs: 20000,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    actix_web::rt::spawn(coordinator::run(settings, topology, listener, async move {
        let _ = stopped.await;
    }));
    let coord = Coord { base: format!("http://{addr}"), http: reqwest::Client::new(), _stop: stop };
    // The listener is bound, so this waits in its backlog until the coordinator serves.
    let (status, _, body) = coord.send("GET", "/health", &[]).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    coord
}

fn addrs(fakes: &[Fake]) -> Vec<String> {
    fakes.iter().map(|f| f.addr.clone()).collect()
}

/// The fakes that received public requests, with how many each.
fn receivers(fakes: &[Fake]) -> Vec<(u32, usize)> {
    (0..fakes.len() as u32).map(|i| (i, fakes[i as usize].public().len())).filter(|(_, n)| *n > 0).collect()
}

/// A key whose primary among `members` is `want`.
fn key_with_primary(want: u32, members: &[u32]) -> String {
    (0..).map(|i| format!("key-{i}")).find(|k| primary(k, members) == Some(want)).unwrap()
}

#[actix_web::test]
async fn create_sends_a_minted_key_to_its_primary() {
    let fakes = start_fakes(3, defaults()).await;
    let coord = boot(Service::Stock, addrs(&fakes), 5000).await;
    let (status, ct, body) = coord.send("POST", "/stock/item/create/5", &[("X-Request-Id", "req-create")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct.as_deref(), Some("application/json"));
    let [(id, 1)] = receivers(&fakes)[..] else { panic!("one request to one replica: {:?}", receivers(&fakes)) };
    let seen = &fakes[id as usize].public()[0];
    let minted = seen.minted.clone().expect("minted key header");
    assert_eq!(uuid::Uuid::parse_str(&minted).unwrap().get_version_num(), 4);
    assert_eq!(primary(&minted, &[0, 1, 2]), Some(id));
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/stock/item/create/5"));
    assert_eq!(seen.request_id.as_deref(), Some("req-create"));
    assert_eq!(seen.secret.as_deref(), Some(SECRET_VALUE));
    assert_eq!(seen.epoch.as_deref(), Some("1"));
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"replica": id, "path": "/stock/item/create/5"}));
}

#[actix_web::test]
async fn keys_go_to_their_primary() {
    let fakes = start_fakes(3, defaults()).await;
    let coord = boot(Service::Stock, addrs(&fakes), 5000).await;
    let mut expected = [0usize; 3];
    let keys: Vec<String> = (0..12).map(|i| format!("item-{i}")).chain(["a b#c".to_string()]).collect();
    for key in &keys {
        let path = format!("/stock/find/{}?x=1", model::routing::percent_encode(key));
        let (status, _, body) = coord.send("GET", &path, &[]).await;
        assert_eq!(status, 200, "{body}");
        let p = primary(key, &[0, 1, 2]).unwrap();
        expected[p as usize] += 1;
        let last = fakes[p as usize].public().last().cloned().unwrap();
        assert_eq!(last.path, path, "forwarded unchanged to replica {p}");
        assert_eq!(last.minted, None);
        let rid = last.request_id.expect("a request id is generated when the client sent none");
        assert!(uuid::Uuid::parse_str(&rid).is_ok(), "{rid}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["replica"], p);
    }
    let got: Vec<usize> = fakes.iter().map(|f| f.public().len()).collect();
    assert_eq!(got, expected.to_vec());
}

#[actix_web::test]
async fn replica_answers_pass_through() {
    let script: Script = Arc::new(|_, s: &Seen| match s.path.as_str() {
        "/stock/subtract/k/99" => {
            Some(Answer { status: 400, json: false, body: "not enough stock".into(), cause: None })
        }
        "/stock/find/broken" => Some(Answer { status: 500, json: false, body: "store failed".into(), cause: None }),
        _ => None,
    });
    let fakes = start_fakes(1, script).await;
    let coord = boot(Service::Stock, addrs(&fakes), 5000).await;
    let (status, ct, body) = coord.send("POST", "/stock/subtract/k/99", &[]).await;
    assert_eq!((status, body.as_str()), (400, "not enough stock"));
    assert_eq!(ct.as_deref(), Some("text/plain; charset=utf-8"));
    // A replica's own failure is re-probed first; still healthy, it stays in the view and the
    // client gets a 503 that names the failure.
    let (status, _, body) = coord.send("GET", "/stock/find/broken", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store failed"), "{body}");
}

#[actix_web::test]
async fn batch_init_is_split_by_primary() {
    let fakes = start_fakes(3, defaults()).await;
    let coord = boot(Service::Stock, addrs(&fakes), 5000).await;
    let (status, ct, body) = coord.send("POST", "/stock/batch_init/100/5/3", &[("X-Request-Id", "req-batch")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct.as_deref(), Some("application/json"));
    for (id, fake) in fakes.iter().enumerate() {
        let want: Vec<String> =
            (0..100).map(|i| i.to_string()).filter(|k| primary(k, &[0, 1, 2]) == Some(id as u32)).collect();
        assert!(!want.is_empty(), "every replica owns some of 100 keys");
        let [seen] = &fake.public()[..] else { panic!("replica {id}: one request") };
        assert_eq!(seen.path, "/stock/batch_init/100/5/3");
        assert_eq!(seen.request_id.as_deref(), Some("req-batch"));
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
        let got: BatchKeys = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(got.keys, want, "replica {id}");
    }
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["replica"], 0, "the first replica's answer");
}

#[actix_web::test]
async fn batch_init_passes_a_400_through() {
    let script: Script = Arc::new(|id, _: &Seen| {
        (id == 1).then(|| Answer { status: 400, json: false, body: "bad batch".into(), cause: None })
    });
    let fakes = start_fakes(3, script).await;
    let coord = boot(Service::Payment, addrs(&fakes), 5000).await;
    let (status, _, body) = coord.send("POST", "/payment/batch_init/30/100", &[]).await;
    assert_eq!((status, body.as_str()), (400, "bad batch"));
}

#[actix_web::test]
async fn misdirected_is_retried_at_the_new_primary() {
    let key = key_with_primary(1, &[0, 1, 2]);
    let newer = View { epoch: 2, members: vec![0, 2], learners: vec![] };
    let reject = serde_json::to_string(&newer).unwrap();
    let script: Script = Arc::new(move |id, s: &Seen| {
        (id == 1 && !s.path.starts_with("/internal/")).then(|| Answer {
            status: 421,
            json: true,
            body: reject.clone(),
            cause: None,
        })
    });
    let fakes = start_fakes(3, script).await;
    let coord = boot(Service::Order, addrs(&fakes), 5000).await;
    let path = format!("/orders/checkout/{key}");
    let (status, _, body) = coord.send("POST", &path, &[("X-Request-Id", "req-421")]).await;
    assert_eq!(status, 200, "{body}");
    let new_primary = primary(&key, &[0, 2]).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["replica"], new_primary);
    let rejected = fakes[1].public();
    let retried = fakes[new_primary as usize].public();
    assert_eq!((rejected.len(), retried.len()), (1, 1));
    assert_eq!((rejected[0].epoch.as_deref(), retried[0].epoch.as_deref()), (Some("1"), Some("2")));
    assert_eq!(rejected[0].request_id.as_deref(), Some("req-421"));
    assert_eq!(retried[0].request_id.as_deref(), Some("req-421"));
    assert_eq!(retried[0].path, path);

    let (_, _, status) = coord.send("GET", "/admin/status", &[]).await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["epoch"], 2);
    assert_eq!(status["members"][1]["state"], "evicted");
    let (_, _, metrics) = coord.send("GET", "/metrics", &[]).await;
    assert!(metrics.contains("coordinator_retries_total{reason=\"misdirected\",route=\"checkout\"} 1"), "{metrics}");
    assert!(metrics.contains("coordinator_requests_total{route=\"checkout\",status=\"200\"} 1"), "{metrics}");
}

/// A primary without a read lease (its peers stopped granting while a view removing it
/// waits for its lease to run out, or it lost them for a moment) is asked again shortly,
/// under the newest view: its reads answer once the lease is back or the view moved on,
/// not a 503 while a majority of the replicas is up (found by the nemesis, seed 20261202).
#[actix_web::test]
async fn a_read_refused_for_want_of_a_lease_is_asked_again() {
    let key = key_with_primary(1, &[0, 1, 2]);
    let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = refusals.clone();
    let script: Script = Arc::new(move |id, s: &Seen| {
        let refuse = id == 1
            && !s.path.starts_with("/internal/")
            && counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3;
        refuse.then(|| Answer {
            status: 503,
            json: false,
            body: "no read lease".into(),
            cause: Some(model::wire::NO_LEASE),
        })
    });
    let fakes = start_fakes(3, script).await;
    let coord = boot(Service::Stock, addrs(&fakes), 5000).await;
    let (status, _, body) = coord.send("GET", &format!("/stock/find/{key}"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fakes[1].public().len(), 4, "three refusals, then the answer");
}

/// A primary that failed a request but answers the re-probe (killed and restarted by its
/// supervisor in between, with its data) gets the request again, with the same request id,
/// instead of the client getting a 503 (found by the nemesis, seed 20261202).
#[actix_web::test]
async fn a_primary_back_on_the_re_probe_gets_the_request_again() {
    let key = key_with_primary(1, &[0, 1, 2]);
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let once = failed.clone();
    let script: Script = Arc::new(move |id, s: &Seen| {
        let fail = id == 1 && s.path.starts_with("/orders/") && !once.swap(true, std::sync::atomic::Ordering::SeqCst);
        fail.then(|| Answer { status: 500, json: false, body: "restarting".into(), cause: None })
    });
    let fakes = start_fakes(3, script).await;
    let coord = boot(Service::Order, addrs(&fakes), 5000).await;
    let (status, _, body) = coord.send("GET", &format!("/orders/find/{key}"), &[("X-Request-Id", "req-back")]).await;
    assert_eq!(status, 200, "{body}");
    let sent: Vec<Seen> = fakes[1].public().into_iter().filter(|s| s.path.starts_with("/orders/")).collect();
    assert_eq!(sent.len(), 2, "the failure, then the same request again");
    assert_eq!(sent[1].request_id.as_deref(), Some("req-back"));
}

#[actix_web::test]
async fn batch_keys_rejected_as_misdirected_are_resent() {
    let newer = View { epoch: 3, members: vec![0, 1], learners: vec![] };
    let reject = serde_json::to_string(&newer).unwrap();
    let script: Script = Arc::new(move |id, s: &Seen| {
        (id == 2 && !s.path.starts_with("/internal/")).then(|| Answer {
            status: 421,
            json: true,
            body: reject.clone(),
            cause: None,
        })
    });
    let fakes = start_fakes(3, script).await;
    let coord = boot(Service::Stock, addrs(&fakes), 5000).await;
    let (status, _, body) = coord.send("POST", "/stock/batch_init/60/1/1", &[]).await;
    assert_eq!(status, 200, "{body}");
    let mut written: Vec<(String, u32)> = Vec::new();
    for id in [0u32, 1] {
        for seen in fakes[id as usize].public() {
            let keys: BatchKeys = serde_json::from_slice(&seen.body).unwrap();
            written.extend(keys.keys.into_iter().map(|k| (k, id)));
        }
    }
    written.sort();
    let mut want: Vec<(String, u32)> = (0..60).map(|i| i.to_string()).map(|k| (k.clone(), 0)).collect();
    for (k, id) in &mut want {
        *id = primary(k, &[0, 1]).unwrap();
    }
    want.sort();
    assert_eq!(written, want, "every key written once, by its primary in the new view");
}

#[actix_web::test]
async fn bad_requests_are_refused_before_forwarding() {
    let fakes = start_fakes(3, defaults()).await;
    let coord = boot(Service::Stock, addrs(&fakes), 5000).await;
    let cases = [
        ("POST", "/stock/add/x/-1", 400),
        ("POST", "/stock/add/x/abc", 400),
        ("POST", "/stock/add/x/99999999999999999999", 400),
        ("POST", "/stock/item/create/1.5", 400),
        ("POST", "/stock/batch_init/1000001/1/1", 400),
        ("POST", "/stock/nothing", 404),
        ("GET", "/payment/find_user/u", 404),
        ("POST", "/stock/find/x", 405),
        ("DELETE", "/stock/find/x", 405),
    ];
    for (method, path, want) in cases {
        let (status, _, body) = coord.send(method, path, &[]).await;
        assert_eq!(status, want, "{method} {path}: {body}");
    }
    assert_eq!(receivers(&fakes), vec![], "nothing was forwarded");
}

#[actix_web::test]
async fn internal_routes_need_the_secret() {
    let fakes = start_fakes(3, defaults()).await;
    let coord = boot(Service::Payment, addrs(&fakes), 5000).await;
    let path = "/payment/tx/pay/user-7/10/o1%232";
    for headers in [&[][..], &[(SECRET, "wrong")][..]] {
        let (status, _, _) = coord.send("POST", path, headers).await;
        assert_eq!(status, 403);
    }
    assert_eq!(receivers(&fakes), vec![], "nothing was forwarded");
    let (status, _, _) = coord.send("POST", path, &[(SECRET, SECRET_VALUE)]).await;
    assert_eq!(status, 200);
    assert_eq!(receivers(&fakes), vec![(primary("user-7", &[0, 1, 2]).unwrap(), 1)]);
}

#[actix_web::test]
async fn unreachable_replica_is_503() {
    // A port that was just free: connections are refused.
    let refused = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let coord = boot(Service::Stock, vec![refused], 5000).await;
    let (status, _, body) = coord.send("GET", "/stock/find/x", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("service unavailable: replica 0: connection failed: "), "{body}");

    // A listener that never accepts: the connection is made but no answer comes.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let coord = boot(Service::Stock, vec![silent.local_addr().unwrap().to_string()], 300).await;
    let (status, _, body) = coord.send("POST", "/stock/add/x/1", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("timed out"), "{body}");
}

#[actix_web::test]
async fn view_is_learned_at_start_and_shown_in_status() {
    let view = View { epoch: 5, members: vec![0, 2], learners: vec![1] };
    let view_json = serde_json::to_string(&view).unwrap();
    let script: Script = Arc::new(move |id, s: &Seen| match s.path.as_str() {
        "/internal/view" => Some(Answer { status: 200, json: true, body: view_json.clone(), cause: None }),
        p if p.starts_with("/internal/digest") && id == 2 => {
            Some(Answer { status: 500, json: false, body: "no".into(), cause: None })
        }
        _ => None,
    });
    let fakes = start_fakes(3, script).await;
    let coord = boot(Service::Stock, addrs(&fakes), 5000).await;
    for f in &fakes {
        let asked = f.seen.lock().unwrap().iter().any(|s| s.path == "/internal/view" && s.secret.is_some());
        assert!(asked, "every replica was asked for its view with the secret");
    }

    let (status, ct, body) = coord.send("GET", "/admin/status", &[]).await;
    assert_eq!((status, ct.as_deref()), (200, Some("application/json")));
    let a = &fakes;
    let mut got: Value = serde_json::from_str(&body).unwrap();
    let now = got.as_object_mut().unwrap().remove("now_ms").unwrap().as_u64().unwrap();
    let mut changes = got.as_object_mut().unwrap().remove("view_changes").unwrap();
    let at = changes[0].as_object_mut().unwrap().remove("at_ms").unwrap().as_u64().unwrap();
    assert!(at > 0 && at <= now, "the change's time {at} is on the clock of the answer {now}");
    assert_eq!(
        got,
        json!({"service": "stock", "coordinator": 0, "epoch": 5, "members": [
            {"id": 0, "addr": a[0].addr, "state": "up", "root": "root-0", "lag_buckets": 0},
            {"id": 1, "addr": a[1].addr, "state": "learner", "root": "root-1", "lag_buckets": 0},
            {"id": 2, "addr": a[2].addr, "state": "up", "root": null, "lag_buckets": null},
        ], "anti_entropy": null})
    );
    // The view learned at start is the one change seen, from the initial view.
    assert_eq!(
        changes,
        json!([{"epoch": 5, "from_epoch": 1, "what": "demote replica 1 to a learner", "source": "adopted"}])
    );
    for asked in [vec![("Accept", "text/html")], vec![]] {
        let path = if asked.is_empty() { "/admin/status?format=html" } else { "/admin/status" };
        let (status, ct, page) = coord.send("GET", path, &asked).await;
        assert_eq!((status, ct.as_deref()), (200, Some("text/html; charset=utf-8")), "{path}");
        assert!(page.contains("data-replica=\"1\" data-state=\"learner\"") && page.contains(&a[2].addr), "{page}");
    }

    // Requests are routed by the learned view and carry its epoch.
    let key = key_with_primary(2, &[0, 2]);
    let (status, _, _) = coord.send("GET", &format!("/stock/find/{key}"), &[]).await;
    assert_eq!(status, 200);
    let seen = fakes[2].public();
    assert_eq!((seen.len(), seen[0].epoch.as_deref()), (1, Some("5")));
}

/// The cluster page from any coordinator: its own service, another service's status asked of
/// that service's coordinator, and a service none of whose coordinators answers, shown with
/// why; as JSON, text and HTML.
#[actix_web::test]
async fn the_cluster_page_shows_every_service() {
    let stock_replicas = start_fakes(3, defaults()).await;
    let order_replicas = start_fakes(3, defaults()).await;
    let (stock_listener, order_listener) =
        (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
    let stock_addr = stock_listener.local_addr().unwrap().to_string();
    let order_addr = order_listener.local_addr().unwrap().to_string();
    // Payment's coordinators: low ports nothing listens on.
    let mut topology = Topology::local(1, 2, &mut (1..));
    set_nodes(
        &mut topology,
        Service::Stock,
        ServiceNodes { replicas: addrs(&stock_replicas), coordinators: vec![stock_addr] },
    );
    set_nodes(
        &mut topology,
        Service::Order,
        ServiceNodes { replicas: addrs(&order_replicas), coordinators: vec![order_addr] },
    );
    let payment = topology.payment.coordinators.clone();
    let stock = boot_in(Service::Stock, topology.clone(), stock_listener, 5000).await;
    let _order = boot_in(Service::Order, topology, order_listener, 5000).await;

    let (status, ct, body) = stock.send("GET", "/admin/cluster", &[]).await;
    assert_eq!((status, ct.as_deref()), (200, Some("application/json")), "{body}");
    let cluster: Value = serde_json::from_str(&body).unwrap();
    let services = cluster["services"].as_array().unwrap();
    let names: Vec<&str> = services.iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(names, ["order", "payment", "stock"]);
    for (i, replicas) in [(0, &order_replicas), (2, &stock_replicas)] {
        let s = &services[i];
        assert_eq!(s["error"], Value::Null, "{s}");
        let members = s["status"]["members"].as_array().unwrap();
        let got: Vec<(&str, &str, u64)> = members
            .iter()
            .map(|m| (m["addr"].as_str().unwrap(), m["state"].as_str().unwrap(), m["lag_buckets"].as_u64().unwrap()))
            .collect();
        let want: Vec<(&str, &str, u64)> = replicas.iter().map(|f| (f.addr.as_str(), "up", 0)).collect();
        assert_eq!(got, want, "{s}");
    }
    assert_eq!(services[1]["status"], Value::Null);
    let error = services[1]["error"].as_str().unwrap();
    for addr in &payment {
        assert!(error.contains(addr.as_str()), "both of payment's coordinators were asked: {error}");
    }
    // The order coordinator answered for its own service only: no page within the page.
    let asked =
        order_replicas[0].seen.lock().unwrap().iter().filter(|s| s.path.starts_with("/internal/digest")).count();
    assert_eq!(asked, 1, "order's replicas were asked for their digests once");

    let (_, ct, text) = stock.send("GET", "/admin/cluster?format=text", &[]).await;
    assert_eq!(ct.as_deref(), Some("text/plain; charset=utf-8"));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"order: view epoch 1, 3 of 3 up, roots differ (coordinator 0)"), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("payment: no coordinator answered")), "{text}");
    assert!(text.contains(&format!("  2   {}", stock_replicas[2].addr)), "{text}");
    let (_, ct, text_too) = stock.send("GET", "/admin/status?format=text", &[]).await;
    assert_eq!((ct.as_deref(), text_too.lines().next()), (Some("text/plain; charset=utf-8"), lines.first().copied()));

    let (_, ct, page) = stock.send("GET", "/admin/cluster", &[("Accept", "text/html")]).await;
    assert_eq!(ct.as_deref(), Some("text/html; charset=utf-8"));
    for name in ["order", "payment", "stock"] {
        assert!(page.contains(&format!("data-service=\"{name}\"")), "{name} in {page}");
    }
    assert_eq!(page.matches("data-state=\"up\"").count(), 6, "{page}");
    let (_, _, json_again) = stock.send("GET", "/admin/cluster?format=json", &[("Accept", "text/html")]).await;
    assert!(json_again.starts_with("{\"services\":"), "{json_again}");
}

/// A multi call is split by primary, one request each; an answer that is not final (here a
/// misdirected one) is forwarded alone under the newer view; a path that does not resolve is
/// answered without forwarding.
#[actix_web::test]
async fn multi_calls_are_split_by_primary_and_misdirected_ones_go_alone() {
    use model::reply::Reply;
    use model::routing::Method;
    use model::wire::MultiCall;
    let keys: Vec<String> = (0..3).map(|p| key_with_primary(p, &[0, 1, 2])).collect();
    let newer = View { epoch: 2, members: vec![0, 1], learners: vec![2] };
    let reject = serde_json::to_string(&newer).unwrap();
    let script: Script = Arc::new(move |id, s: &Seen| {
        if s.path != "/internal/multi" {
            return None;
        }
        let calls: Vec<MultiCall> = serde_json::from_slice(&s.body).unwrap();
        let answers: Vec<Reply> = calls
            .iter()
            .map(|c| match id {
                2 => Reply::json_text(421, reject.clone()),
                _ if c.path.contains("/999/") => Reply::bad("not enough credit"),
                _ => Reply::ok_text(format!("{id} {}", c.path)),
            })
            .collect();
        Some(Answer { status: 200, json: true, body: serde_json::to_string(&answers).unwrap(), cause: None })
    });
    let fakes = start_fakes(3, script).await;
    let coord = boot(Service::Payment, addrs(&fakes), 5000).await;
    let pay = |k: &str, n: u32| MultiCall { method: Method::Post, path: format!("/payment/tx/pay/{k}/{n}/t1") };
    let calls = vec![
        pay(&keys[0], 1),
        pay(&keys[1], 1),
        pay(&keys[1], 999),
        pay(&keys[2], 1),
        MultiCall { method: Method::Get, path: "/payment/nothing/x".into() },
    ];
    let resp = coord
        .http
        .post(format!("{}/internal/multi", coord.base))
        .header(SECRET, SECRET_VALUE)
        .json(&calls)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let answers: Vec<Reply> = resp.json().await.unwrap();
    let got: Vec<(u16, &str)> = answers.iter().map(|a| (a.status, a.body.as_str())).collect();
    let moved = primary(&keys[2], &[0, 1]).unwrap();
    assert_eq!(got[0], (200, format!("0 {}", calls[0].path).as_str()));
    assert_eq!(got[1], (200, format!("1 {}", calls[1].path).as_str()));
    assert_eq!(got[2], (400, "not enough credit"));
    // Forwarded alone to the key's primary in the newer view: the fake's JSON echo.
    let alone: Value = serde_json::from_str(got[3].1).unwrap();
    assert_eq!(
        (got[3].0, alone["replica"].as_u64(), alone["path"].as_str()),
        (200, Some(moved as u64), Some(calls[3].path.as_str()))
    );
    assert_eq!(got[4], (404, "no such endpoint"));
    // One multi request per primary (the misdirected group's replica included), and the one
    // single retry under epoch 2.
    let multis: Vec<usize> =
        fakes.iter().map(|f| f.seen.lock().unwrap().iter().filter(|s| s.path == "/internal/multi").count()).collect();
    assert_eq!(multis, vec![1, 1, 1]);
    let singles = fakes[moved as usize].public();
    assert_eq!(singles.len(), 1);
    assert_eq!((singles[0].path.as_str(), singles[0].epoch.as_deref()), (calls[3].path.as_str(), Some("2")));

    let refused = coord.http.post(format!("{}/internal/multi", coord.base)).json(&calls).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 403, "a multi call needs the secret");
}

/// Sends `GET {target}` to `base` as raw HTTP/1.1 (reqwest would normalise the target first)
/// and returns the status.
async fn raw_get(base: &str, target: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.strip_prefix("http://").unwrap();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    answer.split(' ').nth(1).unwrap().parse().unwrap()
}

#[actix_web::test]
async fn targets_are_forwarded_as_they_came() {
    let fakes = start_fakes(3, defaults()).await;
    let coord = boot(Service::Stock, addrs(&fakes), 5000).await;
    // Ids are opaque: "..", "." and characters a URL library would escape are keys like any
    // other, and the replica must get the target the coordinator routed by.
    for (target, key) in [
        ("/stock/find/..", ".."),
        ("/stock/find/.", "."),
        ("/stock/find/%2e%2E", ".."),
        ("/stock/find/{x}|y", "{x}|y"),
        ("/stock/find/a%20b?q=1", "a b"),
    ] {
        assert_eq!(raw_get(&coord.base, target).await, 200, "{target}");
        let p = primary(key, &[0, 1, 2]).unwrap();
        let last = fakes[p as usize].public().last().cloned().unwrap();
        assert_eq!(last.path, target, "forwarded unchanged to replica {p}, the primary of {key:?}");
    }
}

/// The order service's client of another service (`net::client::ServiceClient`) reaches a
/// coordinator over an internal connection (`net::rpc`): single calls and multi calls get
/// the answers an HTTP request gets, and a wrong secret opens no connection.
#[actix_web::test]
async fn the_service_client_gets_over_its_connection_what_http_gets() {
    use model::routing::Method;
    use model::wire::MultiCall;
    use net::client::ServiceClient;
    let fakes = start_fakes(3, defaults()).await;
    let coord = boot(Service::Payment, addrs(&fakes), 5000).await;
    let addr = coord.base.trim_start_matches("http://").to_string();
    let client = ServiceClient::new(std::slice::from_ref(&addr), SECRET_VALUE, std::time::Duration::from_secs(5));
    let pay = "/payment/tx/pay/u1/3/o%231";
    let over_rpc = client.call(Method::Post, pay, Some("rid-1")).await.unwrap();
    let (status, _, body) = coord.send("POST", pay, &[(SECRET, SECRET_VALUE)]).await;
    assert_eq!((over_rpc.status, over_rpc.body), (status, body));
    let forwarded = fakes.iter().flat_map(|f| f.public()).find(|s| s.request_id.as_deref() == Some("rid-1")).unwrap();
    assert_eq!(forwarded.path, pay);
    let calls = vec![
        MultiCall { method: Method::Post, path: pay.into() },
        MultiCall { method: Method::Get, path: "/payment/nothing/x".into() },
        MultiCall { method: Method::Post, path: "/payment/add_funds/u1/-1".into() },
    ];
    let answers: Vec<(u16, String)> =
        client.multi(&calls).await.into_iter().map(|a| a.map(|a| (a.status, a.body)).unwrap()).collect();
    assert_eq!(answers[0].0, 200);
    assert_eq!(answers[1], (404, "no such endpoint".into()));
    assert_eq!(answers[2], (400, "not a non-negative integer: '-1'".into()));
    let wrong = ServiceClient::new(&[addr], "wrong", std::time::Duration::from_secs(5));
    let err = wrong.call(Method::Post, pay, None).await.unwrap_err();
    assert!(err.0.contains("upgrade refused: HTTP/1.1 403"), "{err}");
}
