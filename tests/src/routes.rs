//! Every route of template.yaml and the handler behind it: the one table the local server and
//! the event tests dispatch through. A test holds it equal to template.yaml's routes.

use gatehouse::App;
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
    /// The handler.
    pub handler: Handler,
}

macro_rules! route {
    ($method:ident $path:literal => $function:literal, $($handler:ident)::+) => {
        Route {
            method: Method::$method,
            path: $path,
            function: $function,
            handler: |app, req| Box::pin($($handler)::+(app, req)),
        }
    };
}

/// All routes.
pub fn all() -> Vec<Route> {
    vec![
        route!(GET "/sesami/install" => "sesami-install", gatehouse::sesami::install),
        route!(GET "/sesami/callback" => "sesami-callback", gatehouse::sesami::callback),
        route!(POST "/sesami/webhooks" => "sesami-webhooks", gatehouse::sesami::webhooks),
        route!(GET "/haravan/install/login" => "haravan-login", gatehouse::haravan::login),
        route!(POST "/haravan/install/login" => "haravan-login", gatehouse::haravan::login),
        route!(POST "/haravan/install/grandservice" => "haravan-install", gatehouse::haravan::install),
        route!(GET "/haravan/webhooks" => "haravan-webhooks", gatehouse::haravan::webhooks),
        route!(POST "/haravan/webhooks" => "haravan-webhooks", gatehouse::haravan::webhooks),
        route!(GET "/haravan/logout" => "haravan-logout", gatehouse::haravan::logout),
        route!(GET "/saison/authorize" => "saison-authorize", gatehouse::saison::authorize),
        route!(GET "/saison/callback" => "saison-callback", gatehouse::saison::callback),
        route!(POST "/momo/requesttopay" => "momo-requesttopay", gatehouse::momo::request_to_pay),
        route!(PUT "/momo/callback/{referenceId}" => "momo-callback", gatehouse::momo::callback),
        route!(POST "/momo/callback/{referenceId}" => "momo-callback", gatehouse::momo::callback),
        route!(POST "/weblink/guest-token" => "weblink-guest-token", gatehouse::weblink::guest_token),
        route!(GET "/weblink/login" => "weblink-login", gatehouse::weblink::login),
        route!(GET "/weblink/callback" => "weblink-callback", gatehouse::weblink::callback),
        route!(POST "/weblink/refresh" => "weblink-refresh", gatehouse::weblink::refresh),
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
