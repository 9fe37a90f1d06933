//! The HTTP side every node process shares: serving on a bound listener ([`serve`]), the one
//! guard of the routes that need the cluster secret ([`require_secret`]), the answers to a path
//! that does not resolve, `/health` and `/metrics`.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use model::reply::Reply;
use model::routing::{Method, RouteError};
use model::wire::SECRET;
use std::future::Future;
use std::sync::Arc;

/// Whether a request carries the cluster secret: [`require_secret`] asks, and the replica's
/// dispatcher, which is also the app's default service (actix sends it a path under a guarded
/// scope with the wrong method).
pub fn authorized(req: &HttpRequest, secret: &str) -> bool {
    let given = req.headers().get(SECRET).map(|v| v.as_bytes()).unwrap_or(b"");
    // Compare without an early exit so the time taken says nothing about the secret.
    given.len() == secret.len() && given.iter().zip(secret.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The cluster secret, as the app data [`require_secret`] reads.
#[derive(Clone, Debug)]
pub struct ClusterSecret(pub Arc<str>);

/// The one guard of every route that needs the cluster secret (`scope.wrap(from_fn(require_secret))`):
/// on a replica everything but `/health` and `/metrics`; on a coordinator its `/internal`
/// endpoints, the admin changes and the service's saga steps (`/{service}/tx/`).
/// a request without the cluster secret ([`ClusterSecret`] in the app data; none registered
/// refuses everything) is answered 403 before its path, query or body is read, so that a
/// caller without the secret learns nothing from the way its request was malformed.
pub async fn require_secret(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<actix_web::body::BoxBody>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let ok = req.app_data::<web::Data<ClusterSecret>>().is_some_and(|s| authorized(req.request(), &s.0));
    if !ok {
        return Ok(req.into_response(forbidden()));
    }
    next.call(req).await
}

/// The refusal of a request without the secret.
pub fn forbidden() -> HttpResponse {
    HttpResponse::Forbidden().body(FORBIDDEN)
}

/// The body of [`forbidden`].
pub const FORBIDDEN: &str = "missing or wrong cluster secret";

/// The answer to a path that does not resolve.
pub fn route_error_reply(e: RouteError) -> Reply {
    match e {
        RouteError::NotFound => Reply::text(404, "no such endpoint"),
        RouteError::MethodNotAllowed => Reply::text(405, "method not allowed"),
        RouteError::Bad(msg) => Reply::text(400, msg),
    }
}

/// [`route_error_reply`] as a response.
pub fn route_error_response(e: RouteError) -> HttpResponse {
    crate::answer::http(route_error_reply(e))
}

/// The method of a request as the route table knows it.
pub fn method_of(req: &HttpRequest) -> Option<Method> {
    match *req.method() {
        actix_web::http::Method::GET => Some(Method::Get),
        actix_web::http::Method::POST => Some(Method::Post),
        _ => None,
    }
}

/// How long a stopping node waits for its workers to end, after its server stopped (each
/// ends at its next await).
pub const WORKERS_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// `/health`: the process is up and serving.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Renders a metrics registry at `/metrics`, in Prometheus's text format.
pub fn metrics_response(m: &crate::metrics::Metrics) -> HttpResponse {
    HttpResponse::Ok().content_type(crate::metrics::CONTENT_TYPE).body(m.render())
}

/// How long a node waits for a request's head after accepting a connection before it answers
/// 408. actix's default of 5 s fired under overload (a starved node reading a head that nginx
/// or a peer had sent at once): the 408 then reached clients as if the request were wrong
/// (seen in the consistency scenario and a 1,000-user locust run, docs/performance.md). The
/// nodes' clients are trusted (nginx, coordinators, peers), so the bound only has to catch a
/// connection that never sends anything; above nginx's 65 s upstream timeout, nginx gives up
/// first and answers 504.
pub const CLIENT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(70);

/// Serves `configure` on an already bound listener until `shutdown` completes.
pub async fn serve<F, S>(
    listener: std::net::TcpListener,
    workers: usize,
    configure: F,
    shutdown: S,
) -> std::io::Result<()>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    let server = HttpServer::new(move || App::new().configure(configure.clone()))
        .workers(workers)
        .keep_alive(model::wire::SERVER_KEEP_ALIVE)
        // An internal connection ([`net::rpc`]) streams many answers at once: with Nagle's
        // algorithm an answer written while an earlier one is unacknowledged waited for the
        // client's delayed ACK (forwarding over it ran at 1.3 of the 2 cores, p99 90 ms). An
        // HTTP answer is one write on a connection with nothing unacknowledged, so this
        // changes nothing for it.
        .tcp_nodelay(true)
        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
        .backlog(4096)
        .disable_signals()
        .listen(listener)?
        .run();
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown.await;
        handle.stop(true).await;
    });
    server.await
}
