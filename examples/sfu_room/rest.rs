//! server.js's broadcaster REST API and Room.js's broadcaster methods, on
//! the WebSocket's port, plus `GET /stats`.
//!
//! Every route's room is made if needed (server.js's `getOrCreateRoom`,
//! without `consumerReplicas`) and held while the request runs; a
//! broadcaster holds its room until it is deleted.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use protoo_server::RoomHold;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::handlers::webrtc_parameters;
use crate::media::{ConsumerEvent, MediaKind, Transport, TransportKind, TransportOptions, Worker};
use crate::room::{Broadcaster, Error, Listed, SfuRoom, SfuRooms, bad, fail, spawn_consumers};

#[derive(Clone)]
struct App {
    rooms: SfuRooms,
    worker: Arc<dyn Worker>,
}

type Reply<T = Json<Value>> = Result<T, Error>;

pub(crate) fn routes(rooms: SfuRooms, worker: Arc<dyn Worker>) -> Router {
    let broadcaster = "/rooms/{roomId}/broadcasters/{broadcasterId}";
    let transport = format!("{broadcaster}/transports/{{transportId}}");
    Router::new()
        .route("/stats", get(stats))
        .route("/rooms/{roomId}", get(rtp_capabilities))
        .route("/rooms/{roomId}/broadcasters", post(create_broadcaster))
        .route(broadcaster, delete(delete_broadcaster))
        .route(&format!("{broadcaster}/transports"), post(create_transport))
        .route(&format!("{transport}/connect"), post(connect_transport))
        .route(&format!("{transport}/producers"), post(create_producer))
        .route(&format!("{transport}/consume"), post(create_consumer))
        .with_state(App { rooms, worker })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    room_id: String,
    #[serde(default)]
    broadcaster_id: String,
    #[serde(default)]
    transport_id: String,
}

/// server.js's `expressApp.param('roomId')` and `req.params`: the route's
/// room, made if needed and held while the request runs, and its path's ids.
struct At {
    room: SfuRoom,
    hold: RoomHold,
    ids: Params,
}

impl FromRequestParts<App> for At {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let Path(ids) = Path::<Params>::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let held = app.rooms.admit(&ids.room_id, "").hold().await;
        let (room, hold) = held.map_err(|error| Error::from(error).into_response())?;
        Ok(At { room, hold, ids })
    }
}

impl At {
    fn broadcaster(&self) -> Result<Arc<Broadcaster>, Error> {
        self.room.data().broadcaster(&self.ids.broadcaster_id)
    }

    fn transport(&self) -> Result<Arc<dyn Transport>, Error> {
        let broadcaster = self.broadcaster()?;
        broadcaster.endpoint.transport(&self.ids.transport_id)
    }
}

async fn stats(State(app): State<App>) -> Json<Value> {
    let rooms = app.rooms.rooms().into_iter().map(|room| {
        json!({ "id": room.id(), "peers": room.len(), "broadcasters": room.data().broadcasters().len() })
    });
    Json(json!({ "rooms": rooms.collect::<Vec<_>>(), "routers": app.worker.live_routers() }))
}

async fn rtp_capabilities(at: At) -> Json<Value> {
    Json(at.room.data().router.rtp_capabilities())
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct NewBroadcaster {
    id: String,
    display_name: String,
    device: Device,
    rtp_capabilities: Option<Value>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Device {
    name: String,
    version: Option<Value>,
}

/// Tells the joined peers `newPeer`; answers them with their producers the
/// broadcaster can consume (none without its `rtpCapabilities`).
async fn create_broadcaster(at: At, Json(new): Json<NewBroadcaster>) -> Reply {
    let At { room, hold, .. } = at;
    let required = [
        ("id", &new.id),
        ("displayName", &new.display_name),
        ("device.name", &new.device.name),
    ];
    if let Some((name, _)) = required.iter().find(|(_, value)| value.is_empty()) {
        return Err(bad(format!("missing body.{name}")));
    }
    let device =
        json!({ "flag": "broadcaster", "name": new.device.name, "version": new.device.version });
    let listed = Listed {
        id: new.id,
        display_name: new.display_name,
        device,
    };
    let router = &room.data().router;
    let peers = room.exclusive(|members| {
        room.data()
            .add_broadcaster(listed.clone(), new.rtp_capabilities.clone(), hold)?;
        let _ = room.to_all().listed().notify("newPeer", &listed);
        let Some(caps) = &new.rtp_capabilities else {
            return Ok(Vec::new());
        };
        let peers = members.listed().filter_map(|member| {
            let mut info = serde_json::to_value(member.data().listed()?).ok()?;
            let producers = member
                .data()
                .producers()
                .into_iter()
                .filter(|p| router.can_consume(p.id(), caps));
            info["producers"] = producers
                .map(|p| json!({ "id": p.id(), "kind": p.kind() }))
                .collect();
            Some(info)
        });
        Ok::<_, Error>(peers.collect::<Vec<_>>())
    })?;
    Ok(Json(json!({ "peers": peers })))
}

/// Closes its transports and tells the joined peers `peerClosed`.
async fn delete_broadcaster(at: At) -> Reply<&'static str> {
    let At { room, ids, .. } = at;
    let id = ids.broadcaster_id;
    room.data().take_broadcaster(&id)?.endpoint.close();
    let _ = room
        .to_all()
        .listed()
        .notify("peerClosed", &json!({ "peerId": id }));
    Ok("broadcaster deleted")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewTransport {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    rtcp_mux: bool,
    comedia: Option<bool>,
    sctp_capabilities: Option<Value>,
}

/// A WebRTC transport (`type: "webrtc"`) or a plain one (`"plain"`).
async fn create_transport(at: At, Json(new): Json<NewTransport>) -> Reply {
    let broadcaster = at.broadcaster()?;
    let kind = match new.kind.as_str() {
        "webrtc" => TransportKind::WebRtc,
        "plain" => TransportKind::Plain,
        _ => return Err(bad("invalid type")),
    };
    let options = TransportOptions {
        rtcp_mux: new.rtcp_mux,
        comedia: new.comedia.unwrap_or(true),
        sctp_streams: new.sctp_capabilities.map(|caps| caps["numStreams"].clone()),
        ..TransportOptions::default()
    };
    let router = &at.room.data().router;
    let transport = router.create_transport(kind, options).await?;
    broadcaster.endpoint.add_transport(transport.clone());
    if kind == TransportKind::WebRtc {
        return Ok(Json(webrtc_parameters(&*transport)));
    }
    let (ip, port, rtcp_port) = transport.tuple();
    Ok(Json(
        json!({ "id": transport.id(), "ip": ip, "port": port, "rtcpPort": rtcp_port }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Connect {
    dtls_parameters: Value,
}

async fn connect_transport(at: At, Json(connect): Json<Connect>) -> Reply<()> {
    let transport = at.transport()?;
    if transport.kind() != TransportKind::WebRtc {
        let id = &at.ids.transport_id;
        return Err(fail(format!(
            "transport with id \"{id}\" is not a WebRtcTransport"
        )));
    }
    Ok(transport.connect(connect.dtls_parameters).await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewProducer {
    kind: MediaKind,
    rtp_parameters: Value,
}

/// Asks every joined peer `newConsumer` for the new producer.
async fn create_producer(at: At, Json(new): Json<NewProducer>) -> Reply {
    let broadcaster = at.broadcaster()?;
    let producer = at
        .transport()?
        .produce(new.kind, new.rtp_parameters, json!({}))
        .await?;
    let (room, owner) = (&at.room, &at.ids.broadcaster_id);
    room.exclusive(|members| {
        broadcaster.endpoint.add_producer(producer.clone());
        for member in members.listed() {
            spawn_consumers(room, member.peer(), owner, producer.clone());
        }
    });
    Ok(Json(json!({ "id": producer.id() })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Consume {
    producer_id: String,
}

/// A consumer of `?producerId=` for the broadcaster.
async fn create_consumer(at: At, Query(consume): Query<Consume>) -> Reply {
    let broadcaster = at.broadcaster()?;
    let caps = broadcaster.endpoint.rtp_capabilities();
    let caps = caps.ok_or_else(|| fail("broadcaster does not have rtpCapabilities"))?;
    let consumer = at
        .transport()?
        .consume(&consume.producer_id, &caps, false)
        .await?;
    broadcaster.endpoint.add_consumer(consumer.clone());
    let (owner, id) = (Arc::downgrade(&broadcaster), consumer.id().to_owned());
    consumer.on_event(Arc::new(move |event| {
        if let (ConsumerEvent::TransportClose | ConsumerEvent::ProducerClose, Some(owner)) =
            (event, owner.upgrade())
        {
            owner.endpoint.remove_consumer(&id);
        }
    }));
    Ok(Json(json!({
        "id": consumer.id(),
        "producerId": consume.producer_id,
        "kind": consumer.kind(),
        "rtpParameters": consumer.rtp_parameters(),
        "type": consumer.consumer_type(),
    })))
}
