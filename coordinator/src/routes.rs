//! The coordinator's HTTP surface, registered by [`configure`]: `/health`, `/metrics`,
//! `/admin/status` and `/admin/cluster`, and every public request of its service, which is
//! checked against the route table (docs/design.md §1.1) before anything is forwarded.

use crate::forward::ReplicaReply;
use crate::overview::{gather_cluster, render_html, render_text};
use crate::state::{Coordinator, Forward};
use crate::status::{gather, Format};
use actix_web::http::header::{ACCEPT, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use model::routing::{resolve, KeySource, Method, RouteError};
use model::wire::{MultiCall, REQUEST_ID};
use net::metrics::labels;
use net::server::{health, method_of, metrics_response, require_secret, route_error_reply, ClusterSecret, FORBIDDEN};
use std::borrow::Cow;
use std::time::Instant;

/// Largest request body accepted: public and saga requests carry everything in the path, so
/// a body is never needed; the bound keeps a client from making us buffer much.
pub const MAX_PUBLIC_BODY: usize = 64 * 1024;

/// The route label of requests that match no route.
const UNMATCHED: &str = "unmatched";

/// Registers the coordinator's routes. `run` and the tests both use it.
///
/// The admin and internal endpoints sit in scopes: actix tries an app's routes in turn and
/// matches a route with a `{parameter}` by regular expression, which listed one by one cost
/// every public request (the default service, tried last) regex searches; a scope is one
/// literal prefix comparison. Unknown paths under a scope still reach `public`, the app's
/// default service.
pub fn configure(app: web::Data<Coordinator>) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |cfg: &mut web::ServiceConfig| {
        let secret = web::Data::new(ClusterSecret(app.secret.as_str().into()));
        // The admin changes need the secret, the status pages do not.
        let view_changes = web::scope("/view")
            .wrap(from_fn(require_secret))
            .route("/{change}/{replica}", web::post().to(admin_view_change));
        let anti_entropy =
            web::resource("/anti-entropy").wrap(from_fn(require_secret)).route(web::post().to(admin_anti_entropy));
        cfg.app_data(app.clone())
            .app_data(secret)
            .app_data(web::PayloadConfig::new(MAX_PUBLIC_BODY))
            .route("/health", web::get().to(coordinator_health))
            .route("/metrics", web::get().to(metrics))
            .service(
                web::scope("/admin")
                    .route("/status", web::get().to(admin_status))
                    .route("/cluster", web::get().to(admin_cluster))
                    .service(view_changes)
                    .service(anti_entropy),
            );
        let internal = web::scope("/internal")
            .wrap(from_fn(require_secret))
            .route("/suspect/{replica}", web::post().to(suspect))
            .route("/multi", web::post().to(multi))
            .route("/rpc", web::get().to(rpc));
        #[cfg(feature = "fault-hooks")]
        let internal = internal.route("/fault/{cut_or_heal}/{replica}", web::post().to(fault));
        // The internal routes of the service's API (the saga's steps, all under `tx/`: a test
        // of the route table checks it) sit behind the same guard.
        cfg.service(internal);
        if model::routing::routes(app.service).iter().any(|r| r.internal) {
            let saga_steps = web::scope(&format!("/{}/tx", app.service.prefix()))
                .wrap(from_fn(require_secret))
                .default_service(web::to(saga_step));
            cfg.service(saga_steps);
        }
        cfg.default_service(web::to(public));
    }
}

/// `POST /internal/fault/{cut|heal}/{replica}` (cluster secret required; only in builds with
/// the `fault-hooks` feature, which the whole-cluster tests enable): cuts this coordinator
/// off from one replica, so that every request, probe and Paxos message it sends there fails
/// as a refused connection would, or heals the cut. The replica itself and the other
/// coordinators are untouched: the partial partition the fault tests need.
#[cfg(feature = "fault-hooks")]
async fn fault(path: web::Path<(String, u32)>, app: web::Data<Coordinator>) -> HttpResponse {
    let (what, id) = path.into_inner();
    let mut cut = app.forwarder.cut.write().unwrap();
    match what.as_str() {
        "cut" => cut.insert(id),
        "heal" => cut.remove(&id),
        _ => return HttpResponse::NotFound().body("cut or heal"),
    };
    log::warn!("fault hook: cut off from replicas {cut:?}");
    HttpResponse::Ok().json(&*cut)
}

/// `/health`: serving, and not refused by every replica for its secret ([`net::standing`]).
async fn coordinator_health(app: web::Data<Coordinator>) -> HttpResponse {
    match app.forwarder.secret_refusal() {
        Some(why) => HttpResponse::ServiceUnavailable().content_type("text/plain; charset=utf-8").body(why),
        None => health().await,
    }
}

async fn metrics(app: web::Data<Coordinator>) -> HttpResponse {
    metrics_response(&app.metrics)
}

/// `GET /admin/status`: this service's status ([`crate::status`]) as JSON, which the other
/// coordinators read to assemble the cluster page; asked for by a browser (`Accept:
/// text/html` or `?format=html`) or as text (`?format=text`), the whole cluster's page, as
/// `/admin/cluster` answers it (the addresses printed at start-up point here).
async fn admin_status(req: HttpRequest, app: web::Data<Coordinator>) -> HttpResponse {
    match format_of(&req) {
        Format::Json => HttpResponse::Ok().json(gather(&app).await),
        format => cluster_page(&app, format).await,
    }
}

/// `GET /admin/cluster`: every service's status ([`crate::overview`]) as JSON, as an HTML
/// page (`Accept: text/html` or `?format=html`), or as a terminal table (`?format=text`).
async fn admin_cluster(req: HttpRequest, app: web::Data<Coordinator>) -> HttpResponse {
    cluster_page(&app, format_of(&req)).await
}

/// The representation a request for an admin page asks for.
fn format_of(req: &HttpRequest) -> Format {
    Format::of(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()), req.query_string())
}

/// The cluster's status in `format`.
async fn cluster_page(app: &Coordinator, format: Format) -> HttpResponse {
    let cluster = gather_cluster(app).await;
    let now = model::side::now_ms();
    match format {
        Format::Json => HttpResponse::Ok().json(&cluster),
        Format::Html => HttpResponse::Ok().content_type("text/html; charset=utf-8").body(render_html(
            &cluster,
            (app.service, app.id),
            now,
        )),
        Format::Text => HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(render_text(&cluster, now)),
    }
}

/// `POST /admin/anti-entropy` (cluster secret required): runs an anti-entropy round now, on
/// this coordinator, and answers its report (the benchmark and operators use it).
async fn admin_anti_entropy(app: web::Data<Coordinator>) -> HttpResponse {
    HttpResponse::Ok().json(app.anti_entropy_round("requested").await)
}

/// `POST /admin/view/{evict|learner|promote}/{replica}` (cluster secret required): changes
/// the view by Paxos and answers the view routed by afterwards. For operators and tests;
/// the coordinators' own failure handling makes the same changes.
async fn admin_view_change(path: web::Path<(String, u32)>, app: web::Data<Coordinator>) -> HttpResponse {
    let (change, id) = path.into_inner();
    let n = app.forwarder.replicas();
    if id >= n {
        return HttpResponse::BadRequest().body(format!("no replica {id}"));
    }
    let f: fn(&model::wire::View, u32, u32) -> Option<model::wire::View> = match change.as_str() {
        "evict" => decide::paxos::evict,
        "learner" => decide::paxos::add_learner,
        "promote" => decide::paxos::promote,
        _ => return HttpResponse::NotFound().body("no such view change"),
    };
    let what = format!("{change} replica {id}");
    match app.change_view(&what, |v| f(v, id, n)).await {
        Ok(view) => HttpResponse::Ok().json(view),
        Err(e) => e.response(),
    }
}

/// `POST /internal/suspect/{replica}` (cluster secret required): a primary could not get a
/// peer's acknowledgement. The peer is re-probed and evicted if it does not answer; the reply
/// is the view routed by afterwards, which the primary serves by before it answers its write.
async fn suspect(path: web::Path<u32>, app: web::Data<Coordinator>) -> HttpResponse {
    let id = path.into_inner();
    if id >= app.forwarder.replicas() {
        return HttpResponse::BadRequest().body(format!("no replica {id}"));
    }
    app.evict_if_dead(id).await;
    HttpResponse::Ok().json(app.view.get())
}

/// `POST /internal/multi` (cluster secret required): several keyed requests of this service
/// in one exchange (`crate::multi`); the answer lists one answer per call, in order.
async fn multi(req: HttpRequest, body: web::Bytes, app: web::Data<Coordinator>) -> HttpResponse {
    multi_reply(&app, &body, request_id_of(&req)).await.http()
}

/// A multi call's answers (over HTTP or [`net::rpc`]).
async fn multi_reply(app: &Coordinator, body: &[u8], request_id: Cow<'_, str>) -> ReplicaReply {
    let start = Instant::now();
    let calls: Vec<MultiCall> = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) => return ReplicaReply::text(400, format!("multi call: {e}")),
    };
    if calls.len() > crate::multi::MAX_CALLS {
        return ReplicaReply::text(400, format!("multi call: more than {} calls", crate::multi::MAX_CALLS));
    }
    let answers = app.forward_multi(&calls, &request_id).await;
    app.metrics.add("coordinator_multi_calls_total", labels(&[]), calls.len() as u64);
    app.metrics.observe("coordinator_request_seconds", labels(&[("route", "multi")]), start.elapsed());
    ReplicaReply {
        status: 200,
        content_type: Some("application/json".into()),
        unavailable_cause: None,
        body: serde_json::to_vec(&answers).expect("answers serialize").into(),
    }
}

/// `GET /internal/rpc` (cluster secret required): a connection for internal calls
/// ([`net::rpc`]), which the order service's replicas use for the saga's steps: multi
/// calls, and single keyed requests answered as over HTTP.
async fn rpc(req: HttpRequest, payload: web::Payload, app: web::Data<Coordinator>) -> HttpResponse {
    let closing = app.closing.clone();
    net::rpc::serve(&req, payload, closing, move |call| {
        let app = app.clone();
        async move { rpc_answer(&app, call).await }
    })
}

/// Answers one internal call: the caller is authorized (the connection checked the secret).
async fn rpc_answer(app: &Coordinator, call: net::rpc::Request) -> net::rpc::Response {
    let path = call.path.split('?').next().unwrap_or_default();
    let request_id = request_id_or_new(call.header(REQUEST_ID));
    let reply = if call.method == Method::Post && path == model::wire::MULTI_PATH {
        multi_reply(app, &call.body, request_id).await
    } else {
        let incoming = Incoming {
            method: Some(call.method),
            path,
            path_and_query: &call.path,
            authorized: true,
            request_id,
            body: call.body.clone(),
            content_type: call.header(CONTENT_TYPE.as_str()),
        };
        counted(app, incoming).await
    };
    reply.into_rpc()
}

/// The request id a request came with (borrowed), or a new one.
fn request_id_of(req: &HttpRequest) -> Cow<'_, str> {
    request_id_or_new(req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()))
}

/// The request id a request came with, or a new one when it came without (or with an empty
/// one); over HTTP ([`request_id_of`]) and over an internal connection alike.
fn request_id_or_new(given: Option<&str>) -> Cow<'_, str> {
    match given {
        Some(id) if !id.is_empty() => Cow::Borrowed(id),
        _ => Cow::Owned(uuid::Uuid::new_v4().to_string()),
    }
}

/// Every other path: a public request of the service (or a 404). It does not carry the
/// secret as far as routing goes: an internal route reached here is refused.
async fn public(req: HttpRequest, body: web::Bytes, app: web::Data<Coordinator>) -> HttpResponse {
    routed(req, body, app, false).await
}

/// A path under the service's `tx/`, past the secret guard.
async fn saga_step(req: HttpRequest, body: web::Bytes, app: web::Data<Coordinator>) -> HttpResponse {
    routed(req, body, app, true).await
}

async fn routed(req: HttpRequest, body: web::Bytes, app: web::Data<Coordinator>, authorized: bool) -> HttpResponse {
    let incoming = Incoming {
        method: method_of(&req),
        path: req.path(),
        path_and_query: req.uri().path_and_query().map_or(req.path(), |p| p.as_str()),
        authorized,
        request_id: request_id_of(&req),
        body,
        content_type: req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
    };
    counted(&app, incoming).await.http()
}

/// A request to route, as it came over HTTP or an internal connection.
struct Incoming<'a> {
    /// GET or POST (`None`: another method).
    method: Option<Method>,
    /// The path, without the query.
    path: &'a str,
    /// Path and query, forwarded unchanged.
    path_and_query: &'a str,
    /// Whether it carries the cluster secret (internal routes need it).
    authorized: bool,
    request_id: Cow<'a, str>,
    body: web::Bytes,
    content_type: Option<&'a str>,
}

/// Routes and forwards a request, and counts it under its route.
async fn counted(app: &Coordinator, incoming: Incoming<'_>) -> ReplicaReply {
    let start = Instant::now();
    let (route, reply) = route_and_forward(&incoming, app).await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    app.metrics.inc("coordinator_requests_total", labels(&[("route", route), ("status", status.as_str())]));
    app.metrics.observe("coordinator_request_seconds", labels(&[("route", route)]), start.elapsed());
    log::debug!("{:?} {} -> {} in {:?}", incoming.method, incoming.path, status.as_str(), start.elapsed());
    reply
}

/// Resolves the request's route, refuses what must not be forwarded, and forwards the rest;
/// returns the route's name (for metrics) and the answer.
async fn route_and_forward(incoming: &Incoming<'_>, app: &Coordinator) -> (&'static str, ReplicaReply) {
    let resolved = match incoming.method {
        Some(m) => resolve(app.service, m, incoming.path),
        None if in_service(app, incoming.path) => Err(RouteError::MethodNotAllowed),
        None => Err(RouteError::NotFound),
    };
    let target = match resolved {
        Ok(t) => t,
        Err(e) => {
            return (UNMATCHED, ReplicaReply::from(route_error_reply(e)));
        }
    };
    let route = target.route;
    if route.internal && !incoming.authorized {
        return (route.name, ReplicaReply::text(403, FORBIDDEN));
    }
    // The request id is an idempotency key: refused before anything is forwarded when it is
    // too long or has characters outside its set (model::idempotency).
    if let Err(msg) = model::idempotency::validate(&incoming.request_id) {
        return (route.name, ReplicaReply::text(400, msg));
    }
    let fwd = Forward {
        route: route.name,
        method: match route.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        },
        path_and_query: incoming.path_and_query,
        request_id: &incoming.request_id,
        body: incoming.body.clone(),
        content_type: incoming.content_type,
        timeout: app.timeout_for(route),
    };
    let result = match route.key {
        KeySource::Arg(_) => {
            let key = target.key().expect("an argument-keyed route has its key");
            app.forward_keyed(&fwd, key, None).await
        }
        KeySource::Mint => {
            let key = model::routing::mint_key(app.service, &incoming.request_id);
            app.forward_keyed(&fwd, &key, Some(&key)).await
        }
        // `resolve` accepted the number: non-negative and at most MAX_BATCH.
        KeySource::Batch(i) => app.forward_batch(&fwd, target.int(i) as u64).await,
    };
    let reply = match result {
        Ok(reply) => reply,
        Err(e) => ReplicaReply::text(e.status(), e.body()),
    };
    (route.name, reply)
}

fn in_service(app: &Coordinator, path: &str) -> bool {
    path.strip_prefix('/').and_then(|p| p.strip_prefix(app.service.prefix())).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::{call_service, init_service, read_body, TestRequest};
    use actix_web::App;
    use model::topology::{Service, Topology};

    /// A coordinator whose replicas are unreachable: every case below must be answered
    /// without forwarding (a forward would be a 503).
    fn app() -> web::Data<Coordinator> {
        let settings = crate::state::test_settings(Service::Stock, 0);
        // Ports 1.. on loopback: nothing listens there, and no case below may forward anyway.
        let topology = Topology::local(1, 1, &mut (1..));
        web::Data::new(Coordinator::new(&settings, &topology))
    }

    #[actix_web::test]
    async fn answered_without_forwarding() {
        let svc = init_service(App::new().configure(configure(app()))).await;
        let cases: &[(&str, &str, u16, &str)] = &[
            ("GET", "/health", 200, "ok"),
            ("GET", "/stock/nothing/x", 404, "no such endpoint"),
            ("GET", "/orders/find/x", 404, "no such endpoint"),
            ("POST", "/stock/find/x", 405, "method not allowed"),
            ("PUT", "/stock/find/x", 405, "method not allowed"),
            ("PUT", "/elsewhere", 404, "no such endpoint"),
            ("POST", "/stock/add/x/-1", 400, "not a non-negative integer: '-1'"),
            ("POST", "/stock/add/x/1.5", 400, "not a non-negative integer: '1.5'"),
            ("POST", "/stock/tx/subtract/i/2/o%231", 403, "missing or wrong cluster secret"),
            // Around the coordinator's own endpoints: the wrong method or argument, unknown
            // paths under their prefixes (which reach the public handler). Without the secret,
            // everything under /internal and the admin changes is refused before it is parsed.
            ("POST", "/health", 404, "no such endpoint"),
            ("POST", "/metrics", 404, "no such endpoint"),
            ("GET", "/admin/view/evict/0", 403, "missing or wrong cluster secret"),
            ("POST", "/admin/view/evict/x", 403, "missing or wrong cluster secret"),
            ("POST", "/admin/view/evict/0", 403, "missing or wrong cluster secret"),
            ("POST", "/admin/status", 404, "no such endpoint"),
            ("POST", "/admin/cluster", 404, "no such endpoint"),
            ("GET", "/admin/anti-entropy", 403, "missing or wrong cluster secret"),
            ("POST", "/admin/anti-entropy", 403, "missing or wrong cluster secret"),
            ("GET", "/admin/nothing", 404, "no such endpoint"),
            ("GET", "/admin", 404, "no such endpoint"),
            ("GET", "/internal/suspect/0", 403, "missing or wrong cluster secret"),
            ("POST", "/internal/suspect/0", 403, "missing or wrong cluster secret"),
            ("POST", "/internal/suspect/x", 403, "missing or wrong cluster secret"),
            ("POST", "/internal/nothing", 403, "missing or wrong cluster secret"),
            ("GET", "/internal", 403, "missing or wrong cluster secret"),
            ("GET", "/adminx/status", 404, "no such endpoint"),
            ("GET", "/stock/find/x/", 404, "no such endpoint"),
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

    #[test]
    fn service_paths() {
        let app = app();
        assert!(in_service(&app, "/stock/x"));
        assert!(!in_service(&app, "/stockx/x"));
        assert!(!in_service(&app, "/stock"));
    }

    #[test]
    fn replies_pass_through() {
        let r = ReplicaReply {
            status: 503,
            content_type: Some("application/json".into()),
            unavailable_cause: Some("dependency".into()),
            body: web::Bytes::from_static(b"{}"),
        };
        let resp = r.http();
        assert_eq!(resp.status().as_u16(), 503);
        assert_eq!(resp.headers().get(CONTENT_TYPE).unwrap(), "application/json");
        assert_eq!(resp.headers().get(model::wire::UNAVAILABLE_CAUSE).unwrap(), "dependency");
    }
}
