//! [`Router`]: handlers by method, and the per-peer loop that reads a
//! peer's events and runs them.

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, poll_fn};
use std::sync::Arc;

use super::impls::{HandlerFuture, NotificationHandler, RequestHandler};
use crate::{IncomingRequest, Joined, Peer, PeerEvent, Room};

/// The reason of the 404 answered to a request with no handler.
pub const UNKNOWN_METHOD_REASON: &str = "unknown method";

type RequestFn<D, R, S> =
    Arc<dyn Fn(IncomingRequest, &Peer<D>, &Room<D, R>, &S) -> HandlerFuture + Send + Sync>;
type EventFn<D, R, S> =
    Arc<dyn Fn(PeerEvent, &Peer<D>, &Room<D, R>, &S) -> HandlerFuture + Send + Sync>;

/// A handler and whether it runs in its own task.
struct Route<F> {
    handler: F,
    concurrent: bool,
}

impl<F: Clone> Clone for Route<F> {
    fn clone(&self) -> Self {
        Route {
            handler: self.handler.clone(),
            concurrent: self.concurrent,
        }
    }
}

/// The route [`Router::concurrent`] applies to.
#[derive(Clone)]
enum Last {
    Request(Box<str>),
    Notification(Box<str>),
    Fallback,
    NotificationFallback,
}

struct Routes<D, R, S> {
    requests: HashMap<Box<str>, Route<RequestFn<D, R, S>>>,
    notifications: HashMap<Box<str>, Route<EventFn<D, R, S>>>,
    fallback: Option<Route<RequestFn<D, R, S>>>,
    notification_fallback: Option<Route<EventFn<D, R, S>>>,
    on_close: Option<EventFn<D, R, S>>,
    on_disconnected: Option<EventFn<D, R, S>>,
    on_resumed: Option<EventFn<D, R, S>>,
    last: Option<Last>,
}

impl<D, R, S> Clone for Routes<D, R, S> {
    fn clone(&self) -> Self {
        Routes {
            requests: self.requests.clone(),
            notifications: self.notifications.clone(),
            fallback: self.fallback.clone(),
            notification_fallback: self.notification_fallback.clone(),
            on_close: self.on_close.clone(),
            on_disconnected: self.on_disconnected.clone(),
            on_resumed: self.on_resumed.clone(),
            last: self.last.clone(),
        }
    }
}

/// Handlers by request and notification method, for the peers of rooms
/// whose peer data is `D` and room data `R`; `S` is the application state
/// its handlers take ([`State`](super::State)), given last with
/// [`Router::with_state`].
///
/// Built once, shared by every peer: [`Router::run`] takes `&self`, and a
/// clone is one reference count. See the [module docs](super) for an
/// example and for what runs concurrently.
pub struct Router<D = (), R = (), S = ()> {
    routes: Arc<Routes<D, R, S>>,
}

impl<D, R, S> Clone for Router<D, R, S> {
    fn clone(&self) -> Self {
        Router {
            routes: self.routes.clone(),
        }
    }
}

impl<D, R, S> Default for Router<D, R, S>
where
    D: Send + Sync + 'static,
    R: Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    fn default() -> Self {
        Router::new()
    }
}

impl<D, R, S> Router<D, R, S>
where
    D: Send + Sync + 'static,
    R: Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    /// A router with no handlers: every request answers 404
    /// [`UNKNOWN_METHOD_REASON`], every notification is dropped.
    pub fn new() -> Self {
        Router {
            routes: Arc::new(Routes {
                requests: HashMap::new(),
                notifications: HashMap::new(),
                fallback: None,
                notification_fallback: None,
                on_close: None,
                on_disconnected: None,
                on_resumed: None,
                last: None,
            }),
        }
    }

    fn routes(&mut self) -> &mut Routes<D, R, S> {
        Arc::make_mut(&mut self.routes)
    }

    /// Handles the requests of `method` with `handler`: an async function
    /// of extractors returning `Result<T: Serialize, E: IntoErrorData>`.
    ///
    /// # Panics
    ///
    /// If `method` already has a request handler.
    pub fn request<T, H: RequestHandler<T, D, R, S>>(mut self, method: &str, handler: H) -> Self {
        let routes = self.routes();
        let old = routes
            .requests
            .insert(method.into(), route(request_fn(handler)));
        assert!(old.is_none(), "request method {method:?} has two handlers");
        routes.last = Some(Last::Request(method.into()));
        self
    }

    /// Handles the notifications of `method` with `handler`: an async
    /// function of extractors returning `()` or `Result<(), E>`.
    ///
    /// # Panics
    ///
    /// If `method` already has a notification handler.
    pub fn notification<T, H: NotificationHandler<T, D, R, S>>(
        mut self,
        method: &str,
        handler: H,
    ) -> Self {
        let routes = self.routes();
        let old = routes
            .notifications
            .insert(method.into(), route(event_fn(handler)));
        assert!(
            old.is_none(),
            "notification method {method:?} has two handlers"
        );
        routes.last = Some(Last::Notification(method.into()));
        self
    }

    /// Handles the requests no handler is registered for (by default they
    /// answer 404 [`UNKNOWN_METHOD_REASON`]); [`Method`](crate::Method) is
    /// the method name.
    pub fn fallback<T, H: RequestHandler<T, D, R, S>>(mut self, handler: H) -> Self {
        let routes = self.routes();
        routes.fallback = Some(route(request_fn(handler)));
        routes.last = Some(Last::Fallback);
        self
    }

    /// Handles the notifications no handler is registered for (by default
    /// they are dropped).
    pub fn notification_fallback<T, H: NotificationHandler<T, D, R, S>>(
        mut self,
        handler: H,
    ) -> Self {
        let routes = self.routes();
        routes.notification_fallback = Some(route(event_fn(handler)));
        routes.last = Some(Last::NotificationFallback);
        self
    }

    /// Runs `handler` once the peer closed ([`PeerEvent::Closed`], its last
    /// event), before [`Router::run`] returns: an async function of
    /// extractors, [`CloseReason`](crate::CloseReason) among them, returning
    /// `()` or `Result<(), E>`. It runs after every one-at-a-time handler
    /// of the peer ended (concurrent ones may still run).
    pub fn on_close<T, H: NotificationHandler<T, D, R, S>>(mut self, handler: H) -> Self {
        self.routes().on_close = Some(event_fn(handler));
        self
    }

    /// Runs `handler` when the peer's transport was lost and its session
    /// waits for it ([`PeerEvent::Disconnected`], with a
    /// [resume window](crate::PeerConfig::resume_window)): an async
    /// function of extractors, [`CloseReason`](crate::CloseReason) (why it
    /// was lost) among them. Without one, the event is skipped.
    pub fn on_disconnected<T, H: NotificationHandler<T, D, R, S>>(mut self, handler: H) -> Self {
        self.routes().on_disconnected = Some(event_fn(handler));
        self
    }

    /// Runs `handler` when a new connection resumed the peer's session
    /// ([`PeerEvent::Resumed`]), after what was held for it was written:
    /// an async function of extractors, [`Missed`](super::Missed) (how
    /// many frames were written again) among them. Without one, the event
    /// is skipped.
    pub fn on_resumed<T, H: NotificationHandler<T, D, R, S>>(mut self, handler: H) -> Self {
        self.routes().on_resumed = Some(event_fn(handler));
        self
    }

    /// Lets the handler registered last (request, notification or
    /// fallback) run concurrently: each of its events is spawned in its own
    /// task, and the peer's loop reads on at once (see the
    /// [module docs](super#what-runs-concurrently)).
    ///
    /// # Panics
    ///
    /// If no handler was registered yet.
    pub fn concurrent(mut self) -> Self {
        let routes = self.routes();
        let last = routes.last.clone();
        let concurrent = match &last {
            Some(Last::Request(method)) => {
                routes.requests.get_mut(method).map(|r| &mut r.concurrent)
            }
            Some(Last::Notification(method)) => routes
                .notifications
                .get_mut(method)
                .map(|r| &mut r.concurrent),
            Some(Last::Fallback) => routes.fallback.as_mut().map(|r| &mut r.concurrent),
            Some(Last::NotificationFallback) => routes
                .notification_fallback
                .as_mut()
                .map(|r| &mut r.concurrent),
            None => None,
        };
        *concurrent.expect("concurrent() follows the handler it applies to") = true;
        self
    }

    /// Gives the handlers their state ([`State`](super::State)): the router
    /// is then ready to [`run`](Router::run). Call it last: the handlers
    /// registered after it take no state.
    pub fn with_state(self, state: S) -> Router<D, R, ()> {
        let routes = Arc::unwrap_or_clone(self.routes);
        let state = Arc::new(state);
        let requests = |route: Route<RequestFn<D, R, S>>| {
            let (handler, state) = (route.handler, state.clone());
            Route {
                handler: Arc::new(move |request, peer: &Peer<D>, room: &Room<D, R>, _: &()| {
                    handler(request, peer, room, &*state)
                }) as RequestFn<D, R, ()>,
                concurrent: route.concurrent,
            }
        };
        let events = |handler: EventFn<D, R, S>| {
            let state = state.clone();
            Arc::new(move |event, peer: &Peer<D>, room: &Room<D, R>, _: &()| {
                handler(event, peer, room, &*state)
            }) as EventFn<D, R, ()>
        };
        let event_route = |route: Route<EventFn<D, R, S>>| Route {
            handler: events(route.handler),
            concurrent: route.concurrent,
        };
        Router {
            routes: Arc::new(Routes {
                requests: (routes.requests.into_iter())
                    .map(|(method, route)| (method, requests(route)))
                    .collect(),
                notifications: (routes.notifications.into_iter())
                    .map(|(method, route)| (method, event_route(route)))
                    .collect(),
                fallback: routes.fallback.map(requests),
                notification_fallback: routes.notification_fallback.map(event_route),
                on_close: routes.on_close.map(events),
                on_disconnected: routes.on_disconnected.map(events),
                on_resumed: routes.on_resumed.map(events),
                last: routes.last,
            }),
        }
    }
}

impl<D, R> Router<D, R, ()>
where
    D: Send + Sync + 'static,
    R: Send + Sync + 'static,
{
    /// Runs one peer's loop: reads its events in order and runs their
    /// handlers, one at a time (a handler marked
    /// [`concurrent`](Router::concurrent) is spawned instead), until the
    /// peer closed and the close handler ran.
    ///
    /// Run it in the peer's own task, with what
    /// [`Rooms::admit`](crate::Rooms::admit) gave.
    pub fn run(&self, joined: Joined<D, R>) -> impl Future<Output = ()> + Send + '_ {
        // What this future holds while the peer is idle is, with its task,
        // every joined peer's cost: only the peer, its room, its events and
        // the handler running, never an event (`Routes::route` takes each
        // one synchronously), nor `joined` beside its parts.
        let Joined {
            room,
            peer,
            mut events,
            resumed,
            ..
        } = joined;
        let routes = &*self.routes;
        async move {
            if resumed {
                // The peer's events go on in the loop that runs it already.
                return;
            }
            while let Some(event) = poll_fn(|cx| events.poll_event(cx)).await {
                let last = matches!(event, PeerEvent::Closed(_));
                if let Some(handler) = routes.route(event, &peer, &room) {
                    handler.await;
                }
                if last {
                    break;
                }
            }
        }
    }
}

impl<D, R> Routes<D, R, ()> {
    /// The handler of `event`, to await in the loop (`None`: none to run
    /// there; a concurrent one is spawned, an unknown method answered 404).
    fn route(&self, event: PeerEvent, peer: &Peer<D>, room: &Room<D, R>) -> Option<HandlerFuture> {
        match event {
            PeerEvent::Request(request) => {
                let route = match self.requests.get(request.method()) {
                    Some(route) => route,
                    None => match &self.fallback {
                        Some(route) => route,
                        None => {
                            request.reject(404, UNKNOWN_METHOD_REASON);
                            return None;
                        }
                    },
                };
                dispatch((route.handler)(request, peer, room, &()), route.concurrent)
            }
            PeerEvent::Notification(ref notification) => {
                let route = match self.notifications.get(notification.method()) {
                    Some(route) => route,
                    None => match &self.notification_fallback {
                        Some(route) => route,
                        None => {
                            tracing::debug!(
                                method = notification.method(),
                                "notification with no handler dropped"
                            );
                            return None;
                        }
                    },
                };
                dispatch((route.handler)(event, peer, room, &()), route.concurrent)
            }
            PeerEvent::Disconnected(_) => {
                (self.on_disconnected.as_ref()).map(|handler| handler(event, peer, room, &()))
            }
            PeerEvent::Resumed { .. } => {
                (self.on_resumed.as_ref()).map(|handler| handler(event, peer, room, &()))
            }
            PeerEvent::Closed(_) => {
                (self.on_close.as_ref()).map(|handler| handler(event, peer, room, &()))
            }
        }
    }
}

/// A one-at-a-time handler, to await; a concurrent one is spawned.
fn dispatch(future: HandlerFuture, concurrent: bool) -> Option<HandlerFuture> {
    if concurrent {
        tokio::spawn(future);
        None
    } else {
        Some(future)
    }
}

fn route<F>(handler: F) -> Route<F> {
    Route {
        handler,
        concurrent: false,
    }
}

fn request_fn<T, D, R, S, H: RequestHandler<T, D, R, S>>(handler: H) -> RequestFn<D, R, S> {
    Arc::new(
        move |request, peer: &Peer<D>, room: &Room<D, R>, state: &S| {
            handler.call(request, peer, room, state)
        },
    )
}

fn event_fn<T, D, R, S, H: NotificationHandler<T, D, R, S>>(handler: H) -> EventFn<D, R, S> {
    Arc::new(move |event, peer: &Peer<D>, room: &Room<D, R>, state: &S| {
        handler.call(event, peer, room, state)
    })
}

impl<D, R, S> fmt::Debug for Router<D, R, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes = &*self.routes;
        f.debug_struct("Router")
            .field("requests", &routes.requests.keys().collect::<Vec<_>>())
            .field(
                "notifications",
                &routes.notifications.keys().collect::<Vec<_>>(),
            )
            .field("fallback", &routes.fallback.is_some())
            .field("on_close", &routes.on_close.is_some())
            .field("on_resumed", &routes.on_resumed.is_some())
            .finish()
    }
}
