//! A room's state (Room.js's fields), what peers and broadcasters hold
//! (Room.js's `peer.data`), the room's creation and close, and Room.js's
//! `_createConsumer`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use futures_util::future::join_all;
use protoo_server::log::Remote;
use protoo_server::{Broadcast, ErrorData, IntoErrorData, Peer, Room, RoomHold, RoomSetup, Rooms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::media::{Consumer, ConsumerEvent, Producer, Router, Transport, Worker};

pub(crate) type SfuRooms = Rooms<Endpoint, RoomMedia>;
pub(crate) type SfuRoom = Room<Endpoint, RoomMedia>;
pub(crate) type SfuPeer = Peer<Endpoint>;
pub(crate) type SfuBroadcast<'a> = Broadcast<'a, Endpoint, RoomMedia>;
pub(crate) type Answer<T = ()> = Result<T, Error>;

/// A failed request: a protoo error response, or an HTTP status for REST.
#[derive(Debug)]
pub(crate) struct Error(u16, String);

/// Room.js's `throw new Error(message)`: 500.
pub(crate) fn fail(message: impl Into<String>) -> Error {
    Error(500, message.into())
}

/// Room.js's `throw new TypeError(message)`: 400.
pub(crate) fn bad(message: impl Into<String>) -> Error {
    Error(400, message.into())
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        fail(error.to_string())
    }
}

impl IntoErrorData for Error {
    fn into_error_data(self) -> ErrorData {
        ErrorData::new(self.0, self.1)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, self.1).into_response()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a joined peer or a broadcaster is listed to the others (and its
/// presence in the room).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Listed {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) device: Value,
}

/// What a peer (its protoo peer data) or a broadcaster holds.
#[derive(Default)]
pub(crate) struct Endpoint(Mutex<EndpointState>);

#[derive(Default)]
struct EndpointState {
    listed: Option<Listed>,
    rtp_capabilities: Option<Value>,
    transports: HashMap<String, Arc<dyn Transport>>,
    producers: HashMap<String, Arc<dyn Producer>>,
    consumers: HashMap<String, Arc<dyn Consumer>>,
}

fn find<T: ?Sized>(map: &HashMap<String, Arc<T>>, what: &str, id: &str) -> Result<Arc<T>, Error> {
    map.get(id)
        .cloned()
        .ok_or_else(|| fail(format!("{what} with id \"{id}\" not found")))
}

impl Endpoint {
    pub(crate) fn listed(&self) -> Option<Listed> {
        lock(&self.0).listed.clone()
    }

    /// Room.js's "Ensure the Peer is joined".
    pub(crate) fn joined(&self) -> Result<Listed, Error> {
        self.listed().ok_or_else(|| fail("Peer not yet joined"))
    }

    pub(crate) fn join(&self, listed: Listed, caps: Option<Value>) -> Answer {
        let mut state = lock(&self.0);
        if state.listed.is_some() {
            return Err(fail("Peer already joined"));
        }
        (state.listed, state.rtp_capabilities) = (Some(listed), caps);
        Ok(())
    }

    /// The new listing and the old display name.
    pub(crate) fn rename(&self, display_name: String) -> Answer<(Listed, String)> {
        let mut state = lock(&self.0);
        let Some(listed) = state.listed.as_mut() else {
            return Err(fail("Peer not yet joined"));
        };
        let old = std::mem::replace(&mut listed.display_name, display_name);
        Ok((listed.clone(), old))
    }

    pub(crate) fn rtp_capabilities(&self) -> Option<Value> {
        lock(&self.0).rtp_capabilities.clone()
    }

    pub(crate) fn transport(&self, id: &str) -> Result<Arc<dyn Transport>, Error> {
        find(&lock(&self.0).transports, "transport", id)
    }

    pub(crate) fn producer(&self, id: &str) -> Result<Arc<dyn Producer>, Error> {
        find(&lock(&self.0).producers, "producer", id)
    }

    pub(crate) fn consumer(&self, id: &str) -> Result<Arc<dyn Consumer>, Error> {
        find(&lock(&self.0).consumers, "consumer", id)
    }

    pub(crate) fn producers(&self) -> Vec<Arc<dyn Producer>> {
        lock(&self.0).producers.values().cloned().collect()
    }

    pub(crate) fn add_transport(&self, transport: Arc<dyn Transport>) {
        lock(&self.0)
            .transports
            .insert(transport.id().to_owned(), transport);
    }

    pub(crate) fn add_producer(&self, producer: Arc<dyn Producer>) {
        lock(&self.0)
            .producers
            .insert(producer.id().to_owned(), producer);
    }

    pub(crate) fn add_consumer(&self, consumer: Arc<dyn Consumer>) {
        lock(&self.0)
            .consumers
            .insert(consumer.id().to_owned(), consumer);
    }

    pub(crate) fn remove_consumer(&self, id: &str) {
        lock(&self.0).consumers.remove(id);
    }

    pub(crate) fn take_producer(&self, id: &str) -> Result<Arc<dyn Producer>, Error> {
        let producer = lock(&self.0).producers.remove(id);
        producer.ok_or_else(|| fail(format!("producer with id \"{id}\" not found")))
    }

    /// The transport the client receives on.
    fn consuming_transport(&self) -> Option<Arc<dyn Transport>> {
        let state = lock(&self.0);
        state
            .transports
            .values()
            .find(|t| t.options().consuming)
            .cloned()
    }

    /// Closes its transports, and so its producers and consumers.
    pub(crate) fn close(&self) {
        let transports = std::mem::take(&mut lock(&self.0).transports);
        transports.values().for_each(|transport| transport.close());
    }
}

/// A REST broadcaster: a member of its room that is not a protoo peer.
pub(crate) struct Broadcaster {
    pub(crate) endpoint: Endpoint,
    _hold: RoomHold,
}

/// A room's data: Room.js's fields.
pub(crate) struct RoomMedia {
    pub(crate) router: Arc<dyn Router>,
    consumer_replicas: usize,
    broadcasters: Mutex<HashMap<String, Arc<Broadcaster>>>,
}

impl RoomMedia {
    pub(crate) fn broadcaster(&self, id: &str) -> Result<Arc<Broadcaster>, Error> {
        let broadcasters = lock(&self.broadcasters);
        let broadcaster = broadcasters.get(id).cloned();
        broadcaster.ok_or_else(|| fail(format!("broadcaster with id \"{id}\" does not exist")))
    }

    pub(crate) fn broadcasters(&self) -> Vec<Arc<Broadcaster>> {
        lock(&self.broadcasters).values().cloned().collect()
    }

    pub(crate) fn add_broadcaster(&self, b: Listed, caps: Option<Value>, hold: RoomHold) -> Answer {
        let id = b.id.clone();
        let mut broadcasters = lock(&self.broadcasters);
        let Entry::Vacant(entry) = broadcasters.entry(id.clone()) else {
            return Err(fail(format!("broadcaster with id \"{id}\" already exists")));
        };
        let state = EndpointState {
            listed: Some(b),
            rtp_capabilities: caps,
            ..Default::default()
        };
        entry.insert(Arc::new(Broadcaster {
            endpoint: Endpoint(Mutex::new(state)),
            _hold: hold,
        }));
        Ok(())
    }

    pub(crate) fn take_broadcaster(&self, id: &str) -> Result<Arc<Broadcaster>, Error> {
        let broadcaster = lock(&self.broadcasters).remove(id);
        broadcaster.ok_or_else(|| fail(format!("broadcaster with id \"{id}\" does not exist")))
    }
}

/// Room.js's `create()`: the room's router, made by its first admission
/// (with the `consumerReplicas` of its query, if any).
pub(crate) async fn create(worker: Arc<dyn Worker>, setup: RoomSetup) -> Answer<RoomMedia> {
    let router = worker.create_router().await?;
    tracing::info!(room_id = %Remote(&setup.room_id), router_id = router.id(), "new room");
    let replicas = setup.context.param("consumerReplicas");
    Ok(RoomMedia {
        router,
        consumer_replicas: replicas.and_then(|n| n.parse().ok()).unwrap_or(0),
        broadcasters: Mutex::default(),
    })
}

/// Room.js's `close()`: the room closed (its last member left), so does its
/// router; the broadcasters go (and their holds).
pub(crate) fn closed(room: &SfuRoom) {
    tracing::info!(room_id = %Remote(room.id()), "room closed");
    room.data().router.close();
    drop(std::mem::take(&mut *lock(&room.data().broadcasters)));
}

/// The other joined peers of `peer` (Room.js's `_getJoinedPeers({ excludePeer })`).
pub(crate) fn others<'a>(room: &'a SfuRoom, peer: &'a SfuPeer) -> SfuBroadcast<'a> {
    room.to_all().except([peer.id()]).listed()
}

/// Room.js's `_createConsumer()`, in a task of its own: `1 +
/// consumerReplicas` consumers of `producer` for `peer`, each created
/// paused, announced with a `newConsumer` request, and resumed once the
/// peer answered.
pub(crate) fn spawn_consumers(room: &SfuRoom, peer: &SfuPeer, owner: &str, p: Arc<dyn Producer>) {
    let (room, peer, owner, producer) = (room.clone(), peer.clone(), owner.to_owned(), p);
    tokio::spawn(async move {
        let router = &room.data().router;
        let caps = peer.data().rtp_capabilities();
        let Some(caps) = caps.filter(|caps| router.can_consume(producer.id(), caps)) else {
            return;
        };
        let Some(transport) = peer.data().consuming_transport() else {
            // Up to the client (Room.js warns): not a warning here.
            return tracing::debug!("_createConsumer() | Transport for consuming not found");
        };
        let replicas = 0..=room.data().consumer_replicas;
        let replicas = replicas.map(|_| consume(&peer, &owner, &producer, &transport, &caps));
        for result in join_all(replicas).await {
            if let Err(error) = result {
                // The client may refuse it (Room.js warns).
                tracing::debug!(error = %Remote(&error.1), "_createConsumer() | failed");
            }
        }
    });
}

async fn consume(
    peer: &SfuPeer,
    producer_peer: &str,
    producer: &Arc<dyn Producer>,
    transport: &Arc<dyn Transport>,
    caps: &Value,
) -> Result<(), Error> {
    let consumer = transport.consume(producer.id(), caps, true).await?;
    peer.data().add_consumer(consumer.clone());
    let (to, id) = (peer.clone(), consumer.id().to_owned());
    consumer.on_event(Arc::new(move |event| consumer_event(&to, &id, event)));
    let offer = json!({
        "peerId": producer_peer,
        "producerId": producer.id(),
        "id": consumer.id(),
        "kind": consumer.kind(),
        "rtpParameters": consumer.rtp_parameters(),
        "type": consumer.consumer_type(),
        "appData": producer.app_data(),
        "producerPaused": consumer.producer_paused(),
    });
    peer.request("newConsumer", &offer).await?;
    consumer.resume().await?;
    let _ = peer.notify(
        "consumerScore",
        &json!({ "consumerId": consumer.id(), "score": consumer.score() }),
    );
    Ok(())
}

/// A consumer's events, told to its peer.
fn consumer_event(peer: &SfuPeer, id: &str, event: ConsumerEvent) {
    let (method, data) = match event {
        ConsumerEvent::TransportClose => return peer.data().remove_consumer(id),
        ConsumerEvent::ProducerClose => {
            peer.data().remove_consumer(id);
            ("consumerClosed", json!({ "consumerId": id }))
        }
        ConsumerEvent::ProducerPause => ("consumerPaused", json!({ "consumerId": id })),
        ConsumerEvent::ProducerResume => ("consumerResumed", json!({ "consumerId": id })),
        ConsumerEvent::Score(score) => {
            ("consumerScore", json!({ "consumerId": id, "score": score }))
        }
        ConsumerEvent::LayersChange(layers) => {
            let layers = layers.unwrap_or_default();
            let (spatial, temporal) = (&layers["spatialLayer"], &layers["temporalLayer"]);
            (
                "consumerLayersChanged",
                json!({ "consumerId": id, "spatialLayer": spatial, "temporalLayer": temporal }),
            )
        }
    };
    let _ = peer.notify(method, &data);
}
