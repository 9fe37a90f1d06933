//! The HTTP side every replica shares: the one dispatcher that parses a request, checks the
//! secret and the routing, and hands the service the parsed [`Command`]; the mapping of errors to
//! statuses (in one place); the internal endpoints of replication; `/health` and `/metrics`.
//!
//! A service supplies only a [`Handler`]: what each route does.

use crate::node::{Misdirected, Node, NodeError};
use crate::table::TableError;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use async_trait::async_trait;
use model::idempotency::RequestKey;
use model::reply::Reply;
use model::routing::{resolve, Command, KeySource, Method};
use model::wire::{BatchKeys, MultiCall, EPOCH, MINTED_KEY, MULTI_PATH, RECOVERING, REQUEST_ID, STATUS_MISDIRECTED};
use net::metrics::{labels, Metrics};
use net::server::{
    authorized, forbidden, health, method_of, metrics_response, require_secret, route_error_reply, serve,
    ClusterSecret, WORKERS_GRACE,
};
use serde::Deserialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use store::Record;

/// Largest request body a replica accepts: a batch_init of the largest batch's keys, or a
/// replication batch.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// What a request carries besides its path.
#[derive(Clone, Debug, Default)]
pub struct RequestCtx {
    /// The request's id (the client's idempotency key or the gateway's own) with the
    /// request's fingerprint: writes are deduplicated by it ([`model::idempotency`]).
    pub request: Option<RequestKey>,
    /// The key a coordinator minted (create calls).
    pub key: Option<String>,
}

/// Why a handler could not answer.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// This node failed to store or replicate.
    #[error(transparent)]
    Table(#[from] TableError),
    /// Another service did not answer; not this node's failure.
    #[error("dependency unavailable: {0}")]
    Dependency(String),
    /// A command of another service reached this one's handler: a route table bug.
    #[error("not a command of this service: {0}")]
    WrongService(String),
}

/// A service's routes.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Answers a routed request for one key (or a create with a minted key).
    async fn handle(&self, command: Command, ctx: RequestCtx) -> Result<Reply, HandlerError>;
    /// Writes this primary's share of a batch_init (`command` is the service's `BatchInit`).
    async fn batch_init(&self, command: Command, keys: Vec<String>) -> Result<Reply, HandlerError>;
    /// The service's part of a horizon report ([`model::wire::Horizon`]): the epoch it last
    /// resumed its checkouts under and the start of its oldest unfinished one. `None` for a
    /// service without checkouts (the endpoint then answers 404).
    fn horizon(&self) -> Option<(u64, u64)> {
        None
    }
}

/// Everything a replica's HTTP handlers share.
pub struct ReplicaApp {
    /// This node.
    pub node: Arc<Node>,
    /// The service's routes.
    pub handler: Arc<dyn Handler>,
    /// This process's metrics.
    pub metrics: Arc<Metrics>,
    /// The cluster secret.
    pub secret: String,
    /// Ends the node's internal connections ([`net::rpc`]) when it shuts down.
    pub closing: net::rpc::Closing,
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A 421 carrying this node's view: the coordinator adopts it and retries elsewhere.
pub fn misdirected_reply(m: &Misdirected) -> Reply {
    let view = serde_json::to_string(&m.view).expect("views serialize");
    Reply { reason: Some(m.reason), ..Reply::json_text(STATUS_MISDIRECTED, view) }
}

/// The one mapping from failures to statuses: a dependency or the quorum being unavailable
/// is a 503 marked as not this node's fault; a failed store or a conflict is this node's
/// own failure (500).
pub fn error_reply(e: &HandlerError) -> Reply {
    match e {
        HandlerError::Dependency(msg) => Reply::unavailable("dependency", msg.clone()),
        HandlerError::Table(TableError::Node(NodeError::Misdirected(m))) => misdirected_reply(m),
        HandlerError::Table(TableError::Node(NodeError::Unavailable(msg))) => Reply::unavailable("quorum", msg.clone()),
        HandlerError::Table(e) => {
            log::warn!("own failure: {e}");
            Reply::text(500, e.to_string())
        }
        HandlerError::WrongService(_) => {
            log::error!("own failure: {e}");
            Reply::text(500, e.to_string())
        }
    }
}

/// [`error_reply`] as a response.
pub fn error_response(e: &HandlerError) -> HttpResponse {
    net::answer::http(error_reply(e))
}

/// The epoch header of a request, read without copying it.
fn epoch_of(req: &HttpRequest) -> Option<u64> {
    req.headers().get(EPOCH).and_then(|v| v.to_str().ok()).and_then(|e| e.parse().ok())
}

/// One routed request, from an HTTP request or from a multi call.
struct Call<'a> {
    method: Method,
    path: &'a str,
    /// The request id header.
    request_id: Option<String>,
    /// The key a coordinator minted (create calls).
    minted: Option<String>,
    /// The epoch the coordinator routed by.
    epoch: Option<u64>,
}

/// A request a coordinator forwarded, and every path no endpoint took.
async fn dispatch(req: HttpRequest, body: web::Bytes, app: web::Data<ReplicaApp>) -> HttpResponse {
    if !authorized(&req, &app.secret) {
        return forbidden();
    }
    let Some(method) = method_of(&req) else {
        return HttpResponse::MethodNotAllowed().body("method not allowed");
    };
    let call = Call {
        method,
        path: req.path(),
        request_id: header(&req, REQUEST_ID),
        minted: header(&req, MINTED_KEY),
        epoch: epoch_of(&req),
    };
    net::answer::http(answer(&app, call, &body).await)
}

/// `POST /internal/multi`: answers each call of the list as [`dispatch`] would answer it
/// alone, all of them at once (each key's writes stay serialized by its table lock).
async fn multi(req: HttpRequest, body: web::Bytes, app: web::Data<ReplicaApp>) -> HttpResponse {
    net::answer::http(multi_reply(&app, epoch_of(&req), &body).await)
}

/// A multi call's answers (over HTTP or [`net::rpc`]).
async fn multi_reply(app: &ReplicaApp, epoch: Option<u64>, body: &[u8]) -> Reply {
    let calls: Vec<MultiCall> = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) => return Reply::text(400, format!("multi call: {e}")),
    };
    app.metrics.inc("replica_multi_requests_total", labels(&[]));
    app.metrics.add("replica_multi_calls_total", labels(&[]), calls.len() as u64);
    let answers = calls.iter().map(|c| {
        let call = Call { method: c.method, path: &c.path, request_id: None, minted: None, epoch };
        answer(app, call, &[])
    });
    let answers: Vec<Reply> = futures::future::join_all(answers).await;
    Reply::json_text(200, serde_json::to_string(&answers).expect("answers serialize"))
}

/// Answers one call, and counts it under its route.
async fn answer(app: &ReplicaApp, call: Call<'_>, body: &[u8]) -> Reply {
    let start = Instant::now();
    let (route, reply) = route_call(app, call, body).await;
    if let Some(route) = route {
        let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        app.metrics.inc("replica_requests_total", labels(&[("route", route), ("status", status.as_str())]));
        app.metrics.observe("replica_request_seconds", labels(&[("route", route)]), start.elapsed());
    }
    reply
}

/// Routes one call to the service's handler; the route's name, once the path resolved.
async fn route_call(app: &ReplicaApp, call: Call<'_>, body: &[u8]) -> (Option<&'static str>, Reply) {
    if app.node.needs_rejoin() {
        return (None, recovering());
    }
    if call.method == Method::Get && !app.node.ensure_lease().await {
        // Possibly deposed while paused or cut off: serve no read that could be stale.
        let why = "no read lease: this replica has not heard from a majority recently";
        return (None, Reply::unavailable(model::wire::NO_LEASE, why));
    }
    let target = match resolve(app.node.service, call.method, call.path) {
        Ok(t) => t,
        Err(e) => return (None, route_error_reply(e)),
    };
    let route = target.route.name;
    let request = call.request_id.as_deref().map(|id| RequestKey::new(id, call.method.as_str(), call.path));
    let result = match target.route.key {
        KeySource::Arg(_) | KeySource::Mint => {
            let key = match (target.key(), &call.minted) {
                (Some(k), _) => k.to_string(),
                (None, Some(k)) => k.clone(),
                (None, None) => return (Some(route), Reply::text(400, "create call without a minted key")),
            };
            if let Err(m) = app.node.check_routed(&key, call.epoch) {
                return (Some(route), misdirected_reply(&m));
            }
            app.handler.handle(target.command(), RequestCtx { request, key: Some(key) }).await
        }
        KeySource::Batch(_) => {
            let keys: BatchKeys = match serde_json::from_slice(body) {
                Ok(k) => k,
                Err(e) => return (Some(route), Reply::text(400, format!("batch body: {e}"))),
            };
            // A key's placement is a few hashes: checked in steps, letting other requests
            // in between (a share of a batch of 1,000,000 keys is 333,000 of them).
            for step in keys.keys.chunks(crate::table::REPLACE_STEP) {
                if let Some(k) = step.iter().find(|k| !app.node.is_primary(k)) {
                    log::debug!("batch key {k} is not ours");
                    let m = Misdirected { view: app.node.view(), reason: "not primary" };
                    return (Some(route), misdirected_reply(&m));
                }
                tokio::task::yield_now().await;
            }
            app.handler.batch_init(target.command(), keys.keys).await
        }
    };
    let reply = match &result {
        Ok(r) => r.clone(),
        Err(e) => error_reply(e),
    };
    (Some(route), reply)
}

async fn replicate(req: HttpRequest, body: web::Bytes, app: web::Data<ReplicaApp>) -> HttpResponse {
    net::answer::http(replicate_reply(&app, &body, req.headers().contains_key(crate::fanout::COPY)).await)
}

/// Applies a fan-out batch (`POST /internal/replicate`, over HTTP or [`net::rpc`]).
async fn replicate_reply(app: &ReplicaApp, body: &[u8], copy: bool) -> Reply {
    let batch = match crate::fanout::decode_batch(body, copy) {
        Ok(b) => b,
        Err(e) => return Reply::text(400, format!("replicate: {e}")),
    };
    let n = batch.records.len() as u64;
    app.metrics.inc("replicate_batches_total", labels(&[]));
    match app.node.apply_replicated(batch).await {
        Ok(applied) => {
            app.metrics.add("replicated_states_total", labels(&[("applied", "true")]), applied as u64);
            app.metrics.add("replicated_states_total", labels(&[("applied", "false")]), n - applied as u64);
            Reply::json_text(200, serde_json::json!({ "applied": applied }).to_string())
        }
        Err(NodeError::Newer(records)) => Reply::json_text(
            crate::fanout::STATUS_HOLDS_NEWER,
            serde_json::to_string(&records).expect("records serialize"),
        ),
        Err(e) => error_reply(&HandlerError::Table(TableError::Node(e))),
    }
}

/// `GET /internal/rpc`: a connection for internal calls ([`net::rpc`]): the fan-out's
/// batches and the requests coordinators forward.
async fn rpc(req: HttpRequest, payload: web::Payload, app: web::Data<ReplicaApp>) -> HttpResponse {
    let closing = app.closing.clone();
    net::rpc::serve(&req, payload, closing, move |call| {
        let app = app.clone();
        async move { rpc_answer(&app, call).await }
    })
}

/// Answers one internal call as the same HTTP request would be answered: the fan-out and
/// multi endpoints, and every other path through the dispatcher.
async fn rpc_answer(app: &ReplicaApp, call: net::rpc::Request) -> net::rpc::Response {
    let path = call.path.split('?').next().unwrap_or_default();
    let epoch = call.header(EPOCH).and_then(|e| e.parse().ok());
    let reply = match (call.method, path) {
        (Method::Post, crate::fanout::REPLICATE_PATH) => {
            replicate_reply(app, &call.body, call.header(crate::fanout::COPY).is_some()).await
        }
        (Method::Post, MULTI_PATH) => multi_reply(app, epoch, &call.body).await,
        (method, path) => {
            let request_id = call.header(REQUEST_ID).map(str::to_string);
            let minted = call.header(MINTED_KEY).map(str::to_string);
            answer(app, Call { method, path, request_id, minted, epoch }, &call.body).await
        }
    };
    net::answer::rpc(reply)
}

async fn paxos(msg: web::Json<decide::paxos::Request>, app: web::Data<ReplicaApp>) -> HttpResponse {
    match app.node.handle_paxos(&msg).await {
        Ok(reply) => HttpResponse::Ok().json(reply),
        // Not persisted, so not answered: the proposer treats it as no reply.
        Err(e) => error_response(&HandlerError::Table(TableError::Node(NodeError::Store(e)))),
    }
}

async fn view(app: web::Data<ReplicaApp>) -> HttpResponse {
    HttpResponse::Ok().json(app.node.view())
}

async fn lease(path: web::Path<u32>, app: web::Data<ReplicaApp>) -> HttpResponse {
    match app.node.grant_lease(path.into_inner()) {
        Some(view) => HttpResponse::Ok().json(view),
        None => HttpResponse::ServiceUnavailable().body("lease withheld: a view without you is being decided"),
    }
}

/// Query of `/internal/digest`.
#[derive(Deserialize)]
struct DigestQuery {
    /// Opens this anti-entropy round here (see `Node::begin_round`).
    round: Option<u64>,
    /// Also send the 256 bucket digests.
    #[serde(default)]
    buckets: bool,
}

/// `GET /internal/digest[?round=R&buckets=true]`: the root (and the bucket digests), read
/// from the digests the store keeps with every write: no document is read.
async fn digest(q: web::Query<DigestQuery>, app: web::Data<ReplicaApp>) -> HttpResponse {
    if let Some(round) = q.round {
        app.node.begin_round(round);
    }
    match app.node.store().digests().await {
        Ok(d) => {
            let mut body = serde_json::json!({ "root": d.root().to_hex(), "epoch": app.node.epoch() });
            if q.buckets {
                body["buckets"] = serde_json::json!(d.buckets().iter().map(|h| h.to_hex()).collect::<Vec<_>>());
            }
            HttpResponse::Ok().json(body)
        }
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

async fn ae_list(body: web::Json<model::wire::ListRequest>, app: web::Data<ReplicaApp>) -> HttpResponse {
    match app.node.list_buckets(body.round, &body.buckets).await {
        Ok(entries) => HttpResponse::Ok().json(entries),
        Err(e) => error_response(&HandlerError::Table(TableError::Node(e))),
    }
}

async fn ae_fetch(keys: web::Json<Vec<String>>, app: web::Data<ReplicaApp>) -> HttpResponse {
    match app.node.fetch(&keys).await {
        Ok(records) => HttpResponse::Ok().json(records),
        Err(e) => error_response(&HandlerError::Table(TableError::Node(e))),
    }
}

async fn ae_repair(
    repairs: web::Json<Vec<(Record, model::version::Version)>>,
    app: web::Data<ReplicaApp>,
) -> HttpResponse {
    let repairs = repairs.into_inner();
    if let Some((r, _)) = repairs.iter().find(|(r, _)| !r.hash_ok()) {
        return HttpResponse::BadRequest().body(format!("record {} does not match its hash", r.key));
    }
    match app.node.repair(repairs).await {
        Ok(applied) => {
            app.metrics.add("repaired_documents_total", labels(&[]), applied as u64);
            HttpResponse::Ok().json(serde_json::json!({ "applied": applied }))
        }
        Err(e) => error_response(&HandlerError::Table(TableError::Node(e))),
    }
}

async fn ae_end(round: web::Path<u64>, app: web::Data<ReplicaApp>) -> HttpResponse {
    app.node.end_round(round.into_inner());
    HttpResponse::Ok().finish()
}

/// The answer of a replica that lost its data while still a full member: its own failure,
/// which gets it evicted so that it can re-join.
fn recovering() -> Reply {
    Reply::unavailable(RECOVERING, "recovering: this replica lost its data and must re-join")
}

/// Ends the process when its store refuses every write for good ([`store::Store::stopped`],
/// seen by the node's `store-watch` worker): fail-stop, so that it is evicted at once (its
/// connections refused) and the launcher's, or the container's, restart opens the store
/// again from what is on disk.
fn exit_as_the_store_stopped(node: &Node, why: &str) {
    log::error!("{} replica {}: the store stopped ({why}); exiting", node.service, node.me);
    std::process::exit(STORE_STOPPED_EXIT);
}

/// The exit status of a replica whose store stopped (EX_IOERR).
pub const STORE_STOPPED_EXIT: i32 = 74;

async fn replica_health(app: web::Data<ReplicaApp>) -> HttpResponse {
    if app.node.needs_rejoin() {
        return net::answer::http(recovering());
    }
    if let Err(e) = app.node.store_health().await {
        return net::answer::http(Reply::unavailable("store", format!("the store cannot write: {e}")));
    }
    if let Some(why) = app.node.secret_refusal() {
        return net::answer::http(Reply::unavailable("secret", why));
    }
    health().await
}

async fn push(path: web::Path<u32>, app: web::Data<ReplicaApp>) -> HttpResponse {
    let target = path.into_inner();
    match app.node.push_to(target).await {
        Ok(n) => {
            log::info!("{} replica {}: pushed {n} documents to replica {target}", app.node.service, app.node.me);
            HttpResponse::Ok().json(serde_json::json!({ "pushed": n }))
        }
        Err(e) => error_response(&HandlerError::Table(TableError::Node(e))),
    }
}

/// `GET /internal/horizon`: this order replica's horizon report ([`model::wire::Horizon`]).
/// A replica that lost its data while a full member gives none: it cannot know the attempts in
/// flight among its orders.
async fn horizon(app: web::Data<ReplicaApp>) -> HttpResponse {
    if app.node.needs_rejoin() {
        return net::answer::http(recovering());
    }
    // The service's part first: an attempt started after it is counted by the view read next.
    match app.handler.horizon() {
        Some((resumed, oldest_ms)) => HttpResponse::Ok().json(app.node.horizon(resumed, oldest_ms).await),
        None => HttpResponse::NotFound().body("no checkouts here"),
    }
}

async fn metrics(app: web::Data<ReplicaApp>) -> HttpResponse {
    metrics_response(&app.metrics)
}

/// Registers a replica's routes: health, metrics, internal endpoints, and the dispatcher for
/// everything else. Tests reuse it.
///
/// The internal endpoints sit in one `/internal` scope: actix tries an app's routes in turn
/// and matches a route with a `{parameter}` by regular expression, so listed one by one they
/// cost every public request a few regex searches before it reaches the dispatcher; a scope
/// is one literal prefix comparison. A path under `/internal` that names no endpoint still
/// falls through to the dispatcher (a scope without a default service uses the app's).
pub fn configure_replica(app: web::Data<ReplicaApp>) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |cfg: &mut web::ServiceConfig| {
        let secret = web::Data::new(ClusterSecret(app.secret.as_str().into()));
        cfg.app_data(app.clone())
            .app_data(secret)
            .app_data(web::JsonConfig::default().limit(MAX_BODY))
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route("/health", web::get().to(replica_health))
            .route("/metrics", web::get().to(metrics))
            .service(internal_endpoints().wrap(actix_web::middleware::from_fn(require_secret)))
            // The app's default service, so also what actix calls for a path under
            // `/internal` with the wrong method: it checks the secret itself.
            .default_service(web::to(dispatch));
    }
}

/// The replica's internal endpoints, under `/internal`.
fn internal_endpoints() -> actix_web::Scope {
    web::scope("/internal")
        .route("/replicate", web::post().to(replicate))
        .route("/rpc", web::get().to(rpc))
        .route("/multi", web::post().to(multi))
        .route("/push/{target}", web::post().to(push))
        .route("/view", web::get().to(view))
        .route("/horizon", web::get().to(horizon))
        .route("/lease/{from}", web::get().to(lease))
        .route("/paxos", web::post().to(paxos))
        .route("/digest", web::get().to(digest))
        .route("/ae/list", web::post().to(ae_list))
        .route("/ae/fetch", web::post().to(ae_fetch))
        .route("/ae/repair", web::post().to(ae_repair))
        .route("/ae/end/{round}", web::post().to(ae_end))
}

/// Runs a replica of `settings.service` on `listener` until `shutdown` completes: opens the
/// store the settings name, builds the node with its peers from the topology, lets the
/// service build its handler, and serves.
pub async fn run_replica<F, S>(
    settings: net::settings::ReplicaSettings,
    topology: model::topology::Topology,
    listener: std::net::TcpListener,
    shutdown: S,
    make_handler: F,
) -> std::io::Result<()>
where
    F: FnOnce(Arc<Node>) -> Arc<dyn Handler>,
    S: Future<Output = ()> + Send + 'static,
{
    let database = store::mongo::database_name(settings.service, settings.id);
    let store = store::open_engine(&settings.engine, &settings.data_dir, &settings.mongo_uri, &database)
        .await
        .map_err(std::io::Error::other)?;
    let replicas = &topology.nodes(settings.service).replicas;
    let n = replicas.len() as u32;
    let peers = replicas.iter().enumerate().map(|(i, a)| (i as u32, format!("http://{a}"))).collect();
    let stored = store.get_meta(decide::paxos::META_KEY).await.map_err(std::io::Error::other)?;
    let acceptor = match stored.as_deref().and_then(decide::paxos::AcceptorState::decode) {
        Some(state) => state,
        None if settings.bootstrap => {
            // The cluster's very first start: every replica begins with the initial view.
            let state = decide::paxos::AcceptorState::initial(n);
            store.put_meta(decide::paxos::META_KEY, state.encode()).await.map_err(std::io::Error::other)?;
            state
        }
        None => decide::paxos::AcceptorState::fresh_empty(n),
    };
    let recovering = !acceptor.votes();
    let mut node = Node::new(
        settings.id,
        settings.service,
        store,
        peers,
        settings.secret.clone(),
        acceptor,
        crate::node::Timings::of(&settings),
    )
    .with_coordinators(&topology.nodes(settings.service).coordinators);
    if recovering && n > 1 {
        node = node.started_empty();
    }
    let node = Arc::new(node);
    node.start_workers(recovering, exit_as_the_store_stopped);
    let workers = node.workers().clone();
    log::info!(
        "{} replica {} serving on {} ({} engine, data in {})",
        settings.service,
        settings.id,
        listener.local_addr()?,
        node.store().engine(),
        settings.data_dir.display()
    );
    let handler = make_handler(node.clone());
    let closing = net::rpc::Closing::default();
    let app = web::Data::new(ReplicaApp {
        node,
        handler,
        metrics: Arc::new(Metrics::new()),
        secret: settings.secret,
        closing: closing.clone(),
    });
    // Internal connections end first: open, they would hold the graceful stop until its
    // timeout.
    let shutdown = async move {
        shutdown.await;
        closing.close();
    };
    let served = serve(listener, settings.workers, configure_replica(app), shutdown).await;
    // The workers end once the server answers nothing more: a round dropped in the middle of
    // a write (the order service's resume) must not leave an answered request behind it that
    // was decided without that write's bookkeeping.
    workers.stop(WORKERS_GRACE).await;
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::{call_service, init_service, read_body, TestRequest};
    use actix_web::App;
    use model::wire::SECRET;
    use net::server::FORBIDDEN;
    use store::mem::MemStore;

    struct Echo;

    #[async_trait]
    impl Handler for Echo {
        async fn handle(&self, command: Command, ctx: RequestCtx) -> Result<Reply, HandlerError> {
            Ok(Reply::ok_text(format!("{} {}", command.route_name(), ctx.key.unwrap_or_default())))
        }
        async fn batch_init(&self, command: Command, keys: Vec<String>) -> Result<Reply, HandlerError> {
            Ok(Reply::ok_text(format!("{} {}", command.route_name(), keys.len())))
        }
    }

    /// A standalone replica answering with [`Echo`], no secret, and its metrics.
    fn echo_app(node: Arc<Node>) -> (web::Data<ReplicaApp>, Arc<Metrics>) {
        echo_app_with_secret(node, "")
    }

    /// [`echo_app`] with the cluster secret `secret`.
    fn echo_app_with_secret(node: Arc<Node>, secret: &str) -> (web::Data<ReplicaApp>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let app = ReplicaApp {
            node,
            handler: Arc::new(Echo),
            metrics: metrics.clone(),
            secret: secret.to_string(),
            closing: Default::default(),
        };
        (web::Data::new(app), metrics)
    }

    /// Without the secret, every internal path and every routed request is a 403, whatever
    /// is wrong with its path, query or body; before, the Paxos body, the lease's argument and
    /// the digest's query were parsed first (400, 404, 400). With the secret, the same
    /// requests reach their parsers.
    #[actix_web::test]
    async fn the_secret_is_checked_before_anything_is_parsed() {
        let (app, _) = echo_app_with_secret(Arc::new(Node::standalone(Arc::new(MemStore::new()))), "s3cret");
        let svc = init_service(App::new().configure(configure_replica(app))).await;
        let cases: &[(&str, &str, &str, u16)] = &[
            ("POST", "/internal/paxos", "not json", 400),
            ("GET", "/internal/lease/x", "", 404),
            ("GET", "/internal/digest?round=abc", "", 400),
            ("POST", "/internal/replicate", "garbage", 400),
            ("POST", "/internal/ae/list", "{", 400),
            ("POST", "/internal/ae/end/x", "", 404),
            ("POST", "/internal/push/x", "", 404),
            ("GET", "/internal/nothing", "", 404),
            ("GET", "/internal/view", "", 200),
            ("GET", "/stock/find/x", "", 200),
        ];
        for (method, path, body, with_secret) in cases {
            for secret in [None, Some("wrong"), Some("s3cret")] {
                let mut req = TestRequest::default()
                    .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap())
                    .uri(path)
                    .insert_header(("content-type", "application/json"))
                    .set_payload(body.to_string());
                if let Some(s) = secret {
                    req = req.insert_header((SECRET, s));
                }
                let resp = call_service(&svc, req.to_request()).await;
                let want = if secret == Some("s3cret") { *with_secret } else { 403 };
                let status = resp.status().as_u16();
                let got = read_body(resp).await;
                assert_eq!(status, want, "{method} {path} secret {secret:?}: {got:?}");
                if want == 403 {
                    assert_eq!(std::str::from_utf8(&got).unwrap(), FORBIDDEN, "{method} {path}");
                }
            }
        }
    }

    /// Each call of a multi call is answered as the same request alone: status, body and type.
    /// The multi call is counted as one request carrying its calls.
    #[actix_web::test]
    async fn multi_answers_equal_single_answers() {
        let (app, metrics) = echo_app(Arc::new(Node::standalone(Arc::new(MemStore::new()))));
        let svc = init_service(App::new().configure(configure_replica(app))).await;
        let calls: Vec<MultiCall> = [
            (Method::Get, "/stock/find/x"),
            (Method::Post, "/stock/add/y/2"),
            (Method::Post, "/stock/add/x/-1"),
            (Method::Post, "/stock/find/x"),
            (Method::Get, "/stock/nothing"),
            (Method::Post, "/stock/item/create/3"),
        ]
        .into_iter()
        .map(|(method, path)| MultiCall { method, path: path.into() })
        .collect();
        let req = TestRequest::post().uri("/internal/multi").set_json(&calls).to_request();
        let resp = call_service(&svc, req).await;
        assert_eq!(resp.status().as_u16(), 200);
        let answers: Vec<Reply> = serde_json::from_slice(&read_body(resp).await).unwrap();
        assert_eq!(answers.len(), calls.len());
        assert_eq!(metrics.counter("replica_multi_requests_total", &labels(&[])), 1);
        assert_eq!(metrics.counter("replica_multi_calls_total", &labels(&[])), calls.len() as u64);
        for (call, answer) in calls.iter().zip(answers) {
            let method = match call.method {
                Method::Get => actix_web::http::Method::GET,
                Method::Post => actix_web::http::Method::POST,
            };
            let resp = call_service(&svc, TestRequest::default().method(method).uri(&call.path).to_request()).await;
            let status = resp.status().as_u16();
            let json =
                resp.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            let body = String::from_utf8(read_body(resp).await.to_vec()).unwrap();
            assert_eq!(answer, Reply { json, ..Reply::text(status, body) }, "{}", call.path);
        }
    }

    /// A replicate request is counted as one batch carrying its states.
    #[actix_web::test]
    async fn replicate_counts_batches_and_states() {
        let node = Arc::new(Node::standalone(Arc::new(MemStore::new())));
        let epoch = node.epoch();
        let (app, metrics) = echo_app(node);
        let svc = init_service(App::new().configure(configure_replica(app))).await;
        let v = model::version::Version { epoch, seq: 1 };
        let records = [Record::new("a".into(), v, "{}".into()), Record::new("b".into(), v, "{}".into())];
        let body = crate::fanout::batch_body(epoch, [crate::fanout::Encoded::new(&records)].iter());
        let resp =
            call_service(&svc, TestRequest::post().uri("/internal/replicate").set_payload(body).to_request()).await;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(metrics.counter("replicate_batches_total", &labels(&[])), 1);
        assert_eq!(metrics.counter("replicated_states_total", &labels(&[("applied", "true")])), 2);
    }

    /// Which handler answers which path: the internal endpoints, the public routes through
    /// the dispatcher, and everything in between (what actix answers for an internal path
    /// with the wrong method or argument, and that unknown paths reach the dispatcher).
    #[actix_web::test]
    async fn paths_reach_their_handlers() {
        let (app, _) = echo_app(Arc::new(Node::standalone(Arc::new(MemStore::new()))));
        let svc = init_service(App::new().configure(configure_replica(app))).await;
        let cases: &[(&str, &str, u16, &str)] = &[
            ("GET", "/health", 200, "ok"),
            ("POST", "/health", 404, "no such endpoint"),
            ("GET", "/internal/view", 200, "{\"epoch\":1,\"members\":[0],\"learners\":[]}"),
            ("POST", "/internal/view", 404, "no such endpoint"),
            ("GET", "/internal/lease/x", 404, "can not parse \"x\" to a u32"),
            ("GET", "/internal/ae/end/3", 404, "no such endpoint"),
            ("POST", "/internal/ae/end/x", 404, "can not parse \"x\" to a u64"),
            ("GET", "/internal/nothing", 404, "no such endpoint"),
            ("GET", "/internal", 404, "no such endpoint"),
            ("GET", "/internal/", 404, "no such endpoint"),
            ("GET", "/internalx/view", 404, "no such endpoint"),
            ("GET", "/stock/find/x", 200, "find x"),
            ("POST", "/stock/find/x", 405, "method not allowed"),
            ("PUT", "/stock/find/x", 405, "method not allowed"),
            ("POST", "/stock/add/x/-1", 400, "not a non-negative integer: '-1'"),
            ("GET", "/stock/nothing", 404, "no such endpoint"),
        ];
        for (method, path, status, body) in cases {
            let req = TestRequest::default()
                .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap())
                .uri(path)
                .to_request();
            let resp = call_service(&svc, req).await;
            assert_eq!(resp.status().as_u16(), *status, "{method} {path}");
            let got = read_body(resp).await;
            assert_eq!(std::str::from_utf8(&got).unwrap(), *body, "{method} {path}");
        }
    }
}
