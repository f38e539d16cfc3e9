//! Room.js's `_handleProtooRequest()` and its peer `close` handler: one
//! async handler per protoo request method.
//!
//! A peer's requests are handled one at a time, in order (the router's
//! default), as Node handles them; different peers' requests run in
//! parallel. Where Room.js relies on Node running one handler at a time
//! between two awaits (`join` marks the peer joined and reads the others'
//! producers, `produce` adds a producer and reads who joined), the section
//! runs in `Room::exclusive`, so each (peer, producer) pair gets exactly one
//! `newConsumer`.

use protoo_server::handler::{Data, Responder, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::media::{MediaKind, Transport, TransportKind, TransportOptions};
use crate::room::{Answer, Endpoint, Listed, RoomMedia, SfuPeer, SfuRoom, others, spawn_consumers};

pub(crate) fn router() -> Router<Endpoint, RoomMedia> {
    Router::new()
        .request("getRouterRtpCapabilities", get_router_rtp_capabilities)
        .request("join", join)
        .request("createWebRtcTransport", create_webrtc_transport)
        .request("connectWebRtcTransport", connect_webrtc_transport)
        .request("restartIce", restart_ice)
        .request("produce", produce)
        .request("closeProducer", close_producer)
        .request("pauseProducer", pause_producer)
        .request("resumeProducer", resume_producer)
        .request("pauseConsumer", pause_consumer)
        .request("resumeConsumer", resume_consumer)
        .request("setConsumerPreferredLayers", set_consumer_preferred_layers)
        .request("setConsumerPriority", set_consumer_priority)
        .request("requestConsumerKeyFrame", request_consumer_key_frame)
        .request("changeDisplayName", change_display_name)
        .request("getTransportStats", get_transport_stats)
        .request("getProducerStats", get_producer_stats)
        .request("getConsumerStats", get_consumer_stats)
        .on_close(peer_closed)
}

/// The ids a request names (missing ones are not found, as in Room.js).
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Ids {
    transport_id: String,
    producer_id: String,
    consumer_id: String,
}

async fn get_router_rtp_capabilities(room: SfuRoom) -> Answer<Value> {
    Ok(room.data().router.rtp_capabilities())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Join {
    #[serde(flatten)]
    me: Listed,
    rtp_capabilities: Option<Value>,
}

/// Answers the joined others (peers and broadcasters), asks the newcomer
/// `newConsumer` for their producers, and tells them `newPeer`.
async fn join(room: SfuRoom, peer: SfuPeer, Data(join): Data<Join>, answer: Responder) -> Answer {
    let me = Listed {
        id: peer.id().into(),
        ..join.me
    };
    room.exclusive(|members| {
        peer.data().join(me.clone(), join.rtp_capabilities)?;
        room.set_presence(peer.id(), &me)?;
        let broadcasters = room.data().broadcasters();
        let peers = members.listed().filter(|other| other.id() != peer.id());
        let endpoints = peers
            .map(|other| other.data())
            .chain(broadcasters.iter().map(|b| &b.endpoint));
        let joined: Vec<_> = endpoints
            .filter_map(|other| Some((other.listed()?, other.producers())))
            .collect();
        answer.accept(
            &json!({ "peers": joined.iter().map(|(listed, _)| listed).collect::<Vec<_>>() }),
        );
        for (owner, producers) in joined {
            producers
                .into_iter()
                .for_each(|p| spawn_consumers(&room, &peer, &owner.id, p));
        }
        let _ = others(&room, &peer).notify("newPeer", &me);
        Ok(())
    })
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct CreateTransport {
    force_tcp: bool,
    producing: bool,
    consuming: bool,
    sctp_capabilities: Option<Value>,
}

async fn create_webrtc_transport(
    room: SfuRoom,
    peer: SfuPeer,
    Data(new): Data<CreateTransport>,
) -> Answer<Value> {
    let options = TransportOptions {
        force_tcp: new.force_tcp,
        producing: new.producing,
        consuming: new.consuming,
        sctp_streams: new.sctp_capabilities.map(|caps| caps["numStreams"].clone()),
        ..TransportOptions::default()
    };
    let router = &room.data().router;
    let transport = router
        .create_transport(TransportKind::WebRtc, options)
        .await?;
    peer.data().add_transport(transport.clone());
    Ok(webrtc_parameters(&*transport))
}

/// What a client is told of a WebRTC transport.
pub(crate) fn webrtc_parameters(transport: &dyn Transport) -> Value {
    json!({
        "id": transport.id(),
        "iceParameters": transport.ice_parameters(),
        "iceCandidates": transport.ice_candidates(),
        "dtlsParameters": transport.dtls_parameters(),
        "sctpParameters": transport.sctp_parameters(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Connect {
    #[serde(flatten)]
    ids: Ids,
    dtls_parameters: Value,
}

async fn connect_webrtc_transport(peer: SfuPeer, Data(connect): Data<Connect>) -> Answer {
    let transport = peer.data().transport(&connect.ids.transport_id)?;
    Ok(transport.connect(connect.dtls_parameters).await?)
}

async fn restart_ice(peer: SfuPeer, Data(ids): Data<Ids>) -> Answer<Value> {
    Ok(peer
        .data()
        .transport(&ids.transport_id)?
        .restart_ice()
        .await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Produce {
    #[serde(flatten)]
    ids: Ids,
    kind: MediaKind,
    rtp_parameters: Value,
    #[serde(default)]
    app_data: Map<String, Value>,
}

/// Answers the producer's id, then asks every other joined peer
/// `newConsumer` for it.
async fn produce(room: SfuRoom, peer: SfuPeer, Data(new): Data<Produce>) -> Answer<Value> {
    peer.data().joined()?;
    let transport = peer.data().transport(&new.ids.transport_id)?;
    let mut app_data = new.app_data;
    app_data.insert("peerId".into(), peer.id().into());
    let producer = transport
        .produce(new.kind, new.rtp_parameters, app_data.into())
        .await?;
    room.exclusive(|members| {
        peer.data().add_producer(producer.clone());
        for other in members.listed().filter(|other| other.id() != peer.id()) {
            spawn_consumers(&room, other.peer(), peer.id(), producer.clone());
        }
    });
    Ok(json!({ "id": producer.id() }))
}

async fn close_producer(peer: SfuPeer, Data(ids): Data<Ids>) -> Answer {
    peer.data().joined()?;
    peer.data().take_producer(&ids.producer_id)?.close();
    Ok(())
}

async fn pause_producer(peer: SfuPeer, Data(ids): Data<Ids>) -> Answer {
    peer.data().joined()?;
    Ok(peer.data().producer(&ids.producer_id)?.pause().await?)
}

async fn resume_producer(peer: SfuPeer, Data(ids): Data<Ids>) -> Answer {
    peer.data().joined()?;
    Ok(peer.data().producer(&ids.producer_id)?.resume().await?)
}

async fn pause_consumer(peer: SfuPeer, Data(ids): Data<Ids>) -> Answer {
    peer.data().joined()?;
    Ok(peer.data().consumer(&ids.consumer_id)?.pause().await?)
}

async fn resume_consumer(peer: SfuPeer, Data(ids): Data<Ids>) -> Answer {
    peer.data().joined()?;
    Ok(peer.data().consumer(&ids.consumer_id)?.resume().await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layers {
    #[serde(flatten)]
    ids: Ids,
    spatial_layer: u8,
    temporal_layer: Option<u8>,
}

async fn set_consumer_preferred_layers(peer: SfuPeer, Data(layers): Data<Layers>) -> Answer {
    peer.data().joined()?;
    let consumer = peer.data().consumer(&layers.ids.consumer_id)?;
    Ok(consumer
        .set_preferred_layers(layers.spatial_layer, layers.temporal_layer)
        .await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Priority {
    #[serde(flatten)]
    ids: Ids,
    priority: u8,
}

async fn set_consumer_priority(peer: SfuPeer, Data(priority): Data<Priority>) -> Answer {
    peer.data().joined()?;
    let consumer = peer.data().consumer(&priority.ids.consumer_id)?;
    Ok(consumer.set_priority(priority.priority).await?)
}

async fn request_consumer_key_frame(peer: SfuPeer, Data(ids): Data<Ids>) -> Answer {
    peer.data().joined()?;
    Ok(peer
        .data()
        .consumer(&ids.consumer_id)?
        .request_key_frame()
        .await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DisplayName {
    display_name: String,
}

async fn change_display_name(
    room: SfuRoom,
    peer: SfuPeer,
    Data(name): Data<DisplayName>,
) -> Answer {
    let (listed, old) = peer.data().rename(name.display_name)?;
    room.set_presence(peer.id(), &listed)?;
    let changed =
        json!({ "peerId": peer.id(), "displayName": listed.display_name, "oldDisplayName": old });
    let _ = others(&room, &peer).notify("peerDisplayNameChanged", &changed);
    Ok(())
}

async fn get_transport_stats(peer: SfuPeer, Data(ids): Data<Ids>) -> Answer<Value> {
    Ok(peer.data().transport(&ids.transport_id)?.stats().await?)
}

async fn get_producer_stats(peer: SfuPeer, Data(ids): Data<Ids>) -> Answer<Value> {
    Ok(peer.data().producer(&ids.producer_id)?.stats().await?)
}

async fn get_consumer_stats(peer: SfuPeer, Data(ids): Data<Ids>) -> Answer<Value> {
    Ok(peer.data().consumer(&ids.consumer_id)?.stats().await?)
}

/// Room.js's peer `close` handler: a joined peer's leaving is told to the
/// joined others; its transports close (and with them its producers, whose
/// consumers tell their peers `consumerClosed`).
async fn peer_closed(room: SfuRoom, peer: SfuPeer) {
    if peer.data().joined().is_ok() {
        let _ = others(&room, &peer).notify("peerClosed", &json!({ "peerId": peer.id() }));
    }
    peer.data().close();
}
