//! Every route of template.yaml and the handler behind it: the one table the local server and
//! the event tests dispatch through. A test holds it equal to template.yaml's routes.

use gatehouse::App;
use gatehouse::web::Format;
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use std::future::Future;
use std::pin::Pin;

/// A handler's future.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>;
/// A route's handler: the same function its Lambda binary runs.
pub type Handler = for<'a> fn(&'a App, Request) -> HandlerFuture<'a>;

/// One route.
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The path as template.yaml writes it (`{name}` for a path parameter).
    pub path: &'static str,
    /// The Lambda binary (functions/) that serves it.
    pub function: &'static str,
    /// How its errors are shown (a page for a browser route, JSON for a platform's), also a
    /// 503 for a request out of time, which its handler never gets to answer itself. The
    /// binary passes the same to `gatehouse::lambda::run` (a test holds them equal).
    pub format: Format,
    /// The handler.
    pub handler: Handler,
}

macro_rules! route {
    ($method:ident $path:literal => $function:literal, $format:ident, $($handler:ident)::+) => {
        Route {
            method: Method::$method,
            path: $path,
            function: $function,
            format: Format::$format,
            handler: |app, req| Box::pin($($handler)::+(app, req)),
        }
    };
}

/// All routes.
pub fn all() -> Vec<Route> {
    vec![
        route!(GET "/sesami/install" => "sesami-install", Html, gatehouse::sesami::install),
        route!(GET "/sesami/callback" => "sesami-callback", Html, gatehouse::sesami::callback),
        route!(POST "/sesami/webhooks" => "sesami-webhooks", Json, gatehouse::sesami::webhooks),
        route!(GET "/haravan/install/login" => "haravan-login", Html, gatehouse::haravan::login),
        route!(POST "/haravan/install/login" => "haravan-login", Html, gatehouse::haravan::login),
        route!(POST "/haravan/install/grandservice" => "haravan-install", Html, gatehouse::haravan::install),
        route!(GET "/haravan/webhooks" => "haravan-webhooks", Json, gatehouse::haravan::webhooks),
        route!(POST "/haravan/webhooks" => "haravan-webhooks", Json, gatehouse::haravan::webhooks),
        route!(GET "/haravan/logout" => "haravan-logout", Json, gatehouse::haravan::logout),
        route!(GET "/saison/authorize" => "saison-authorize", Html, gatehouse::saison::authorize),
        route!(GET "/saison/callback" => "saison-callback", Html, gatehouse::saison::callback),
        route!(POST "/momo/requesttopay" => "momo-requesttopay", Json, gatehouse::momo::request_to_pay),
        route!(PUT "/momo/callback/{referenceId}" => "momo-callback", Json, gatehouse::momo::callback),
        route!(POST "/momo/callback/{referenceId}" => "momo-callback", Json, gatehouse::momo::callback),
        route!(POST "/weblink/guest-token" => "weblink-guest-token", Json, gatehouse::weblink::guest_token),
        route!(GET "/weblink/login" => "weblink-login", Html, gatehouse::weblink::login),
        route!(GET "/weblink/callback" => "weblink-callback", Html, gatehouse::weblink::callback),
        route!(POST "/weblink/refresh" => "weblink-refresh", Json, gatehouse::weblink::refresh),
    ]
}

/// Whether `path` matches the route's pattern (`{name}` matches one non-empty segment).
pub fn matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut s) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.starts_with('{') && a.ends_with('}') => {
                if b.is_empty() {
                    return false;
                }
            }
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// What a request resolves to.
pub enum Resolved<'r> {
    /// A route serves it.
    Route(&'r Route),
    /// The path exists but not for this method.
    WrongMethod,
    /// No such path.
    NotFound,
}

/// Finds the route for `method` and `path`.
pub fn resolve<'r>(routes: &'r [Route], method: &Method, path: &str) -> Resolved<'r> {
    let mut path_known = false;
    for route in routes {
        if matches(route.path, path) {
            if route.method == *method {
                return Resolved::Route(route);
            }
            path_known = true;
        }
    }
    if path_known {
        Resolved::WrongMethod
    } else {
        Resolved::NotFound
    }
}
