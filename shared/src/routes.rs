//! Every route of template.yaml, the function that serves it and the handler behind it: the one
//! table the Lambda binaries, the local server and the tests all dispatch through.
//!
//! A Lambda binary names its [`Function`] constant (`gatehouse::lambda::run(&SESAMI_WEBHOOKS)`),
//! so it links and builds only its own platform. The local server and the tests build every
//! platform over one [`Deps`] ([`Platforms`]) and resolve a request to a [`Route`] here. A test
//! holds this table equal to template.yaml's routes and to every binary's constant.
//!
//! This is also the edge: [`answer`] is the one place a handler's refusal is logged and turned
//! into a response, in the format the route's callers read (a page for a browser, JSON for a
//! platform).

use crate::config::{Config, ConfigError, Vars};
use crate::connect::Core;
use crate::context::{Deps, Platform};
use crate::error::{Error, Result};
use crate::events::Events;
use crate::haravan::{self, Haravan};
use crate::momo::{self, Momo};
use crate::saison::{self, Saison};
use crate::sesami::{self, Sesami};
use crate::store::Store;
use crate::web::Format;
use crate::weblink::{self, Weblink};
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A handler's future.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Response<Body>>> + Send + 'a>>;

/// A handler over platform context `P`. It borrows the request, which the edge keeps to log a
/// refusal against its method and path.
pub type Handler<P> = for<'a> fn(&'a P, &'a Request) -> HandlerFuture<'a>;

/// One Lambda function of template.yaml: its name (the binary in functions/), how its errors
/// are shown, and its handler.
pub struct Function<P: 'static> {
    /// The function's and its binary's name.
    pub name: &'static str,
    /// How its errors are shown: a page on a browser route, JSON on a platform's, also for a
    /// 503 of a request out of time, which its handler never gets to answer itself.
    pub format: Format,
    /// The handler.
    pub handler: Handler<P>,
}

macro_rules! function {
    ($(#[$doc:meta])* $id:ident: $ty:ty = $name:literal, $format:ident, $handler:path) => {
        $(#[$doc])*
        pub const $id: Function<$ty> = Function {
            name: $name,
            format: Format::$format,
            handler: |cx, req| Box::pin($handler(cx, req)),
        };
    };
}

function!(
    /// `GET /sesami/install`.
    SESAMI_INSTALL: Sesami = "sesami-install", Html, sesami::install
);
function!(
    /// `GET /sesami/callback`.
    SESAMI_CALLBACK: Sesami = "sesami-callback", Html, sesami::callback
);
function!(
    /// `POST /sesami/webhooks`.
    SESAMI_WEBHOOKS: Sesami = "sesami-webhooks", Json, sesami::webhooks
);
function!(
    /// `GET|POST /haravan/install/login`.
    HARAVAN_LOGIN: Haravan = "haravan-login", Html, haravan::login
);
function!(
    /// `POST /haravan/install/grandservice`.
    HARAVAN_INSTALL: Haravan = "haravan-install", Html, haravan::install
);
function!(
    /// `GET|POST /haravan/webhooks`.
    HARAVAN_WEBHOOKS: Haravan = "haravan-webhooks", Json, haravan::webhooks
);
function!(
    /// `GET /haravan/logout`.
    HARAVAN_LOGOUT: Haravan = "haravan-logout", Json, haravan::logout
);
function!(
    /// `GET /saison/authorize`.
    SAISON_AUTHORIZE: Saison = "saison-authorize", Html, saison::authorize
);
function!(
    /// `GET /saison/callback`.
    SAISON_CALLBACK: Saison = "saison-callback", Html, saison::callback
);
function!(
    /// `POST /v1/connect-links` (IAM-authorized): a one-time link that starts a connection for
    /// one of the app's users (saison, haravan, weblink). It needs no platform's settings.
    CONNECT_LINKS: Core = "connect-links", Json, crate::connect::create
);
function!(
    /// `GET /v1/connections` (IAM-authorized): connections listed per platform or end user,
    /// from the table's indexes only.
    CONNECTIONS: Core = "connections", Json, crate::vending::list
);
function!(
    /// `GET /v1/connections/sesami/{tenant}`, `POST …/token` (IAM-authorized).
    SESAMI_CONNECTIONS: Sesami = "sesami-connections", Json, crate::vending::sesami
);
function!(
    /// `GET /v1/connections/haravan/{tenant}`, `POST …/token` (IAM-authorized).
    HARAVAN_CONNECTIONS: Haravan = "haravan-connections", Json, crate::vending::haravan
);
function!(
    /// `GET /v1/connections/saison/{tenant}`, `POST …/token` (IAM-authorized).
    SAISON_CONNECTIONS: Saison = "saison-connections", Json, crate::vending::saison
);
function!(
    /// `GET /v1/connections/momo/{tenant}`, `POST …/token` (IAM-authorized).
    MOMO_CONNECTIONS: Momo = "momo-connections", Json, crate::vending::momo
);
function!(
    /// `GET /v1/connections/weblink/{tenant}`, `POST …/token` (IAM-authorized).
    WEBLINK_CONNECTIONS: Weblink = "weblink-connections", Json, crate::vending::weblink
);
function!(
    /// `GET /v1/events/{platform}/{id}` (IAM-authorized): an event of the outbox, whole (what a reference
    /// on the bus points to).
    EVENTS_READ: Events = "events-read", Json, crate::events::read
);
function!(
    /// `POST /momo/requesttopay`.
    MOMO_REQUESTTOPAY: Momo = "momo-requesttopay", Json, momo::request_to_pay
);
function!(
    /// `PUT|POST /momo/callback/{referenceId}`.
    MOMO_CALLBACK: Momo = "momo-callback", Json, momo::callback
);
function!(
    /// `POST /weblink/guest-token`.
    WEBLINK_GUEST_TOKEN: Weblink = "weblink-guest-token", Json, weblink::guest_token
);
function!(
    /// `GET /weblink/login`.
    WEBLINK_LOGIN: Weblink = "weblink-login", Html, weblink::login
);
function!(
    /// `GET /weblink/callback`.
    WEBLINK_CALLBACK: Weblink = "weblink-callback", Html, weblink::callback
);
function!(
    /// `POST /weblink/refresh`.
    WEBLINK_REFRESH: Weblink = "weblink-refresh", Json, weblink::refresh
);

function!(
    /// `ANY /v1/proxy/sesami/{tenant}/{proxy+}` (IAM-authorized): a Sesami API call for a shop.
    SESAMI_PROXY: Sesami = "sesami-proxy", Json, crate::proxy::sesami
);
function!(
    /// `ANY /v1/proxy/haravan/{tenant}/{proxy+}` (IAM-authorized): a Haravan API call for an org.
    HARAVAN_PROXY: Haravan = "haravan-proxy", Json, crate::proxy::haravan
);
function!(
    /// `ANY /v1/proxy/saison/{tenant}/{proxy+}` (IAM-authorized): a MAC-signed Saison API call
    /// for a cardholder of an app user.
    SAISON_PROXY: Saison = "saison-proxy", Json, crate::proxy::saison
);
function!(
    /// `ANY /v1/proxy/momo/{tenant}/{proxy+}` (IAM-authorized): a MoMo API call for a product.
    MOMO_PROXY: Momo = "momo-proxy", Json, crate::proxy::momo
);
function!(
    /// `ANY /v1/proxy/weblink/{tenant}/{proxy+}` (IAM-authorized): a WebLink API call for a
    /// session.
    WEBLINK_PROXY: Weblink = "weblink-proxy", Json, crate::proxy::weblink
);

/// The method of a route that takes every method (template.yaml's `Method: ANY`).
pub fn any_method() -> Method {
    Method::from_bytes(b"ANY").unwrap_or(Method::GET)
}

/// Every platform's contexts over one [`Deps`]: what the local server and the tests serve all
/// routes with. (A Lambda binary builds only its own platform's.)
pub struct Platforms {
    /// What the platforms share.
    pub deps: Arc<Deps>,
    /// Sesami.
    pub sesami: Sesami,
    /// Haravan.
    pub haravan: Haravan,
    /// Saison connect.
    pub saison: Saison,
    /// MTN MoMo.
    pub momo: Momo,
    /// Administrate WebLink.
    pub weblink: Weblink,
    /// What needs no platform's settings (connect links, the connections listing).
    pub core: Core,
    /// The outbox's reader (`/v1/events`).
    pub events: Events,
    /// The connection health schedule's settings (the `connections-refresh` function, which
    /// serves no route: [`crate::health`]).
    pub health: crate::health::Settings,
}

crate::context::derefs_to_deps!(Platforms);

impl Platforms {
    /// Every platform, configured by `vars` (see [`Deps::from_vars`]).
    pub async fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Self::new(Arc::new(Deps::from_vars(vars).await?), vars)
    }

    /// Every platform over a given store (tests that share one store between apps).
    pub fn with_store(
        vars: &Vars,
        config: Config,
        store: Arc<dyn Store>,
        aws: Option<&aws_config::SdkConfig>,
    ) -> Result<Self, ConfigError> {
        Self::new(Arc::new(Deps::with_store(config, store, aws)?), vars)
    }

    /// Every platform over `deps`.
    pub fn new(deps: Arc<Deps>, vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            sesami: Sesami::build(deps.clone(), vars)?,
            haravan: Haravan::build(deps.clone(), vars)?,
            saison: Saison::build(deps.clone(), vars)?,
            momo: Momo::build(deps.clone(), vars)?,
            weblink: Weblink::build(deps.clone(), vars)?,
            core: Core::build(deps.clone(), vars)?,
            events: Events::build(deps.clone(), vars)?,
            health: crate::health::Settings::from_vars(vars)?,
            deps,
        })
    }
}

/// A [`Function`] of any platform.
#[derive(Clone, Copy)]
pub enum Served {
    /// A Sesami function.
    Sesami(&'static Function<Sesami>),
    /// A Haravan function.
    Haravan(&'static Function<Haravan>),
    /// A Saison connect function.
    Saison(&'static Function<Saison>),
    /// A MoMo function.
    Momo(&'static Function<Momo>),
    /// A WebLink function.
    Weblink(&'static Function<Weblink>),
    /// A function of no platform.
    Core(&'static Function<Core>),
    /// A function of the outbox (`/v1/events`).
    Events(&'static Function<Events>),
}

impl Served {
    /// The function's name.
    pub fn name(&self) -> &'static str {
        match self {
            Served::Sesami(f) => f.name,
            Served::Haravan(f) => f.name,
            Served::Saison(f) => f.name,
            Served::Momo(f) => f.name,
            Served::Weblink(f) => f.name,
            Served::Core(f) => f.name,
            Served::Events(f) => f.name,
        }
    }

    /// How the function's errors are shown.
    pub fn format(&self) -> Format {
        match self {
            Served::Sesami(f) => f.format,
            Served::Haravan(f) => f.format,
            Served::Saison(f) => f.format,
            Served::Momo(f) => f.format,
            Served::Weblink(f) => f.format,
            Served::Core(f) => f.format,
            Served::Events(f) => f.format,
        }
    }

    /// Runs the function's handler with its platform's context from `all`, as the function
    /// (the metrics it emits name it: [`crate::metrics::in_function`]).
    pub fn call<'a>(&self, all: &'a Platforms, req: &'a Request) -> HandlerFuture<'a> {
        Box::pin(crate::metrics::in_function(
            self.name(),
            self.handler(all, req),
        ))
    }

    fn handler<'a>(&self, all: &'a Platforms, req: &'a Request) -> HandlerFuture<'a> {
        match self {
            Served::Sesami(f) => (f.handler)(&all.sesami, req),
            Served::Haravan(f) => (f.handler)(&all.haravan, req),
            Served::Saison(f) => (f.handler)(&all.saison, req),
            Served::Momo(f) => (f.handler)(&all.momo, req),
            Served::Weblink(f) => (f.handler)(&all.weblink, req),
            Served::Core(f) => (f.handler)(&all.core, req),
            Served::Events(f) => (f.handler)(&all.events, req),
        }
    }
}

/// One route: a method and path of the HTTP API, and the function behind it.
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The path as template.yaml writes it (`{name}` for a path parameter).
    pub path: &'static str,
    /// The function that serves it.
    pub function: Served,
}

impl Route {
    /// The name of the function (the binary in functions/) that serves it.
    pub fn function_name(&self) -> &'static str {
        self.function.name()
    }

    /// How its errors are shown.
    pub fn format(&self) -> Format {
        self.function.format()
    }

    /// The route's key as API Gateway writes it (`GET /sesami/install`): the `Route` dimension
    /// of its [`crate::metrics::names::RESPONSES`].
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The answer to a request of this route ([`answer_route`]).
    pub fn answer(&self, result: Result<Response<Body>>) -> Response<Body> {
        answer_route(&self.key(), self.function_name(), self.format(), result)
    }
}

/// All routes.
pub fn all() -> Vec<Route> {
    use Served::*;
    let route = |method: Method, path: &'static str, function: Served| Route {
        method,
        path,
        function,
    };
    vec![
        route(Method::GET, "/sesami/install", Sesami(&SESAMI_INSTALL)),
        route(Method::GET, "/sesami/callback", Sesami(&SESAMI_CALLBACK)),
        route(Method::POST, "/sesami/webhooks", Sesami(&SESAMI_WEBHOOKS)),
        route(
            Method::GET,
            "/haravan/install/login",
            Haravan(&HARAVAN_LOGIN),
        ),
        route(
            Method::POST,
            "/haravan/install/login",
            Haravan(&HARAVAN_LOGIN),
        ),
        route(
            Method::POST,
            "/haravan/install/grandservice",
            Haravan(&HARAVAN_INSTALL),
        ),
        route(Method::GET, "/haravan/webhooks", Haravan(&HARAVAN_WEBHOOKS)),
        route(
            Method::POST,
            "/haravan/webhooks",
            Haravan(&HARAVAN_WEBHOOKS),
        ),
        route(Method::GET, "/haravan/logout", Haravan(&HARAVAN_LOGOUT)),
        route(Method::GET, "/saison/authorize", Saison(&SAISON_AUTHORIZE)),
        route(Method::GET, "/saison/callback", Saison(&SAISON_CALLBACK)),
        route(Method::POST, "/v1/connect-links", Core(&CONNECT_LINKS)),
        route(Method::GET, "/v1/connections", Core(&CONNECTIONS)),
        route(
            Method::GET,
            "/v1/connections/sesami/{tenant}",
            Sesami(&SESAMI_CONNECTIONS),
        ),
        route(
            Method::POST,
            "/v1/connections/sesami/{tenant}/token",
            Sesami(&SESAMI_CONNECTIONS),
        ),
        route(
            Method::GET,
            "/v1/connections/haravan/{tenant}",
            Haravan(&HARAVAN_CONNECTIONS),
        ),
        route(
            Method::POST,
            "/v1/connections/haravan/{tenant}/token",
            Haravan(&HARAVAN_CONNECTIONS),
        ),
        route(
            Method::GET,
            "/v1/connections/saison/{tenant}",
            Saison(&SAISON_CONNECTIONS),
        ),
        route(
            Method::POST,
            "/v1/connections/saison/{tenant}/token",
            Saison(&SAISON_CONNECTIONS),
        ),
        route(
            Method::GET,
            "/v1/connections/momo/{tenant}",
            Momo(&MOMO_CONNECTIONS),
        ),
        route(
            Method::POST,
            "/v1/connections/momo/{tenant}/token",
            Momo(&MOMO_CONNECTIONS),
        ),
        route(
            Method::GET,
            "/v1/connections/weblink/{tenant}",
            Weblink(&WEBLINK_CONNECTIONS),
        ),
        route(
            Method::POST,
            "/v1/connections/weblink/{tenant}/token",
            Weblink(&WEBLINK_CONNECTIONS),
        ),
        route(Method::POST, "/momo/requesttopay", Momo(&MOMO_REQUESTTOPAY)),
        route(
            Method::PUT,
            "/momo/callback/{referenceId}",
            Momo(&MOMO_CALLBACK),
        ),
        route(
            Method::POST,
            "/momo/callback/{referenceId}",
            Momo(&MOMO_CALLBACK),
        ),
        route(
            Method::POST,
            "/weblink/guest-token",
            Weblink(&WEBLINK_GUEST_TOKEN),
        ),
        route(Method::GET, "/weblink/login", Weblink(&WEBLINK_LOGIN)),
        route(Method::GET, "/weblink/callback", Weblink(&WEBLINK_CALLBACK)),
        route(Method::POST, "/weblink/refresh", Weblink(&WEBLINK_REFRESH)),
        route(
            any_method(),
            "/v1/proxy/sesami/{tenant}/{proxy+}",
            Sesami(&SESAMI_PROXY),
        ),
        route(
            any_method(),
            "/v1/proxy/haravan/{tenant}/{proxy+}",
            Haravan(&HARAVAN_PROXY),
        ),
        route(
            any_method(),
            "/v1/proxy/saison/{tenant}/{proxy+}",
            Saison(&SAISON_PROXY),
        ),
        route(
            any_method(),
            "/v1/proxy/momo/{tenant}/{proxy+}",
            Momo(&MOMO_PROXY),
        ),
        route(
            any_method(),
            "/v1/proxy/weblink/{tenant}/{proxy+}",
            Weblink(&WEBLINK_PROXY),
        ),
        route(
            Method::GET,
            "/v1/events/{platform}/{id}",
            Events(&EVENTS_READ),
        ),
    ]
}

/// Whether `path` matches the route's pattern (`{name}` matches one non-empty segment; a last
/// `{name+}` matches the rest of the path, at least one character of it, as API Gateway's
/// greedy parameter does: what the rest may hold is its handler's to check).
pub fn matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut s) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.starts_with('{') && a.ends_with("+}") => {
                return p.next().is_none() && !(b.is_empty() && s.clone().next().is_none());
            }
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
            if route.method == *method || route.method == any_method() {
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

/// The answer to a request: the handler's response, or its refusal shown in `format`. The one
/// place a refusal or failure is logged: a 4xx at `warn` with its message, a 5xx at `error` with
/// the detail that its body leaves out.
pub fn answer(format: Format, result: Result<Response<Body>>) -> Response<Body> {
    match result {
        Ok(resp) => resp,
        Err(e) => {
            log(&e);
            e.into_response(format)
        }
    }
}

/// [`answer`] for a request of route `route` (its key, `GET /sesami/install`) served by
/// `function`, counted in [`crate::metrics::names::RESPONSES`] by route, status class and, for
/// a refusal, its reason code: the one place every routed answer passes, timeouts included.
pub fn answer_route(
    route: &str,
    function: &'static str,
    format: Format,
    result: Result<Response<Body>>,
) -> Response<Body> {
    let reason = result.as_ref().err().map(Error::code);
    let resp = answer(format, result);
    let class = crate::metrics::status_class(resp.status().as_u16());
    let mut dims = vec![("Route", route), ("Status", class)];
    dims.extend(reason.map(|r| ("Reason", r)));
    crate::metrics::as_function(function, || {
        crate::metrics::count(
            crate::metrics::names::RESPONSES,
            crate::metrics::platform_of(function),
            &dims,
            &[],
        );
    });
    resp
}

fn log(e: &Error) {
    let status = e.status();
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), error = %e, "request failed");
    } else {
        tracing::warn!(status = status.as_u16(), error = %e, "request refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! named {
        ($($id:ident),* $(,)?) => {
            [$((stringify!($id), Served::from(&$id).name())),*]
        };
    }

    impl From<&'static Function<Sesami>> for Served {
        fn from(f: &'static Function<Sesami>) -> Self {
            Served::Sesami(f)
        }
    }
    impl From<&'static Function<Haravan>> for Served {
        fn from(f: &'static Function<Haravan>) -> Self {
            Served::Haravan(f)
        }
    }
    impl From<&'static Function<Saison>> for Served {
        fn from(f: &'static Function<Saison>) -> Self {
            Served::Saison(f)
        }
    }
    impl From<&'static Function<Momo>> for Served {
        fn from(f: &'static Function<Momo>) -> Self {
            Served::Momo(f)
        }
    }
    impl From<&'static Function<Weblink>> for Served {
        fn from(f: &'static Function<Weblink>) -> Self {
            Served::Weblink(f)
        }
    }
    impl From<&'static Function<Core>> for Served {
        fn from(f: &'static Function<Core>) -> Self {
            Served::Core(f)
        }
    }
    impl From<&'static Function<Events>> for Served {
        fn from(f: &'static Function<Events>) -> Self {
            Served::Events(f)
        }
    }

    /// A binary names its function by constant (`SESAMI_WEBHOOKS`); the integration tests hold
    /// every binary to the constant named for it, so each constant must carry its own name.
    #[test]
    fn each_constant_is_named_for_its_function() {
        let all = named!(
            SESAMI_INSTALL,
            SESAMI_CALLBACK,
            SESAMI_WEBHOOKS,
            HARAVAN_LOGIN,
            HARAVAN_INSTALL,
            HARAVAN_WEBHOOKS,
            HARAVAN_LOGOUT,
            SAISON_AUTHORIZE,
            SAISON_CALLBACK,
            CONNECT_LINKS,
            CONNECTIONS,
            SESAMI_CONNECTIONS,
            HARAVAN_CONNECTIONS,
            SAISON_CONNECTIONS,
            MOMO_CONNECTIONS,
            WEBLINK_CONNECTIONS,
            MOMO_REQUESTTOPAY,
            MOMO_CALLBACK,
            WEBLINK_GUEST_TOKEN,
            WEBLINK_LOGIN,
            WEBLINK_CALLBACK,
            WEBLINK_REFRESH,
            SESAMI_PROXY,
            HARAVAN_PROXY,
            SAISON_PROXY,
            MOMO_PROXY,
            WEBLINK_PROXY,
            EVENTS_READ,
        );
        for (id, name) in all {
            assert_eq!(id, name.to_ascii_uppercase().replace('-', "_"));
        }
        // And the table routes to each of them, and to no other.
        let routed: std::collections::BTreeSet<&str> =
            super::all().iter().map(Route::function_name).collect();
        let named: std::collections::BTreeSet<&str> = all.iter().map(|(_, n)| *n).collect();
        assert_eq!(routed, named);
    }

    #[test]
    fn paths_match_their_patterns() {
        assert!(matches(
            "/momo/callback/{referenceId}",
            "/momo/callback/abc"
        ));
        assert!(!matches("/momo/callback/{referenceId}", "/momo/callback/"));
        assert!(!matches(
            "/momo/callback/{referenceId}",
            "/momo/callback/a/b"
        ));
        // A greedy `{proxy+}` takes the rest of the path, one character at least.
        let proxy = "/v1/proxy/haravan/{tenant}/{proxy+}";
        assert!(matches(proxy, "/v1/proxy/haravan/1/com/shop.json"));
        assert!(matches(proxy, "/v1/proxy/haravan/1/x"));
        assert!(matches(proxy, "/v1/proxy/haravan/1/a//b/"));
        assert!(!matches(proxy, "/v1/proxy/haravan/1/"));
        assert!(!matches(proxy, "/v1/proxy/haravan/1"));
        assert!(!matches(proxy, "/v1/proxy/haravan//x"));
        assert!(!matches(proxy, "/v1/proxy/sesami/1/x"));
        for method in [Method::GET, Method::POST, Method::DELETE, Method::PATCH] {
            assert!(matches!(
                resolve(&super::all(), &method, "/v1/proxy/momo/collection/v1_0/account/balance"),
                Resolved::Route(r) if r.function_name() == "momo-proxy"
            ));
        }
        assert!(matches("/sesami/install", "/sesami/install"));
        assert!(!matches("/sesami/install", "/sesami/install/"));
        let all = super::all();
        assert!(matches!(
            resolve(&all, &Method::DELETE, "/sesami/install"),
            Resolved::WrongMethod
        ));
        assert!(matches!(
            resolve(&all, &Method::GET, "/nope"),
            Resolved::NotFound
        ));
    }
}
