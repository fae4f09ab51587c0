//! Metric families of the interaction channel, registered on a passed-down registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Interaction metrics; cheap to clone (the families are reference-counted).
#[derive(Clone)]
pub(crate) struct Metrics {
    /// Open WebSocket connections.
    pub connections: IntGauge,
    /// Rooms on this node.
    pub rooms: IntGauge,
    /// Rooms closed after `room_idle_timeout` without connections or activity.
    pub rooms_evicted: IntCounter,
    /// Client frames by type.
    pub frames_in: IntCounterVec,
    /// Error frames sent, by code.
    pub errors: IntCounterVec,
    /// Frames written to clients.
    pub deliveries: IntCounter,
    /// Coalesced writes of broadcast frames (deliveries / writes = frames per write).
    pub broadcast_writes: IntCounter,
    /// Frames broadcast by rooms (each serialized once).
    pub broadcasts: IntCounter,
    /// Connections dropped because they fell `send_queue` frames behind.
    pub slow_drops: IntCounter,
    /// Connections closed for repeated bad frames, ping timeouts or write timeouts.
    pub closed_abuse: IntCounterVec,
    /// Upgrade requests refused, by reason.
    pub refused: IntCounterVec,
    /// Bus (Redis) failures.
    pub bus_errors: IntCounter,
    /// Bus events dropped because a room's inbox was full.
    pub bus_dropped: IntCounter,
}

impl Metrics {
    /// Creates and registers the families.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            connections: IntGauge::new(
                "estuary_interact_connections",
                "Open interaction WebSocket connections",
            )?,
            rooms: IntGauge::new("estuary_interact_rooms", "Interaction rooms on this node")?,
            rooms_evicted: IntCounter::new(
                "estuary_interact_rooms_evicted_total",
                "Interaction rooms closed for being idle",
            )?,
            frames_in: IntCounterVec::new(
                Opts::new("estuary_interact_frames_in_total", "Client frames by type"),
                &["type"],
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "estuary_interact_errors_total",
                    "Error frames sent, by code",
                ),
                &["code"],
            )?,
            deliveries: IntCounter::new(
                "estuary_interact_deliveries_total",
                "Frames written to interaction clients",
            )?,
            broadcast_writes: IntCounter::new(
                "estuary_interact_broadcast_writes_total",
                "Coalesced socket writes of broadcast frames (one per drained queue)",
            )?,
            broadcasts: IntCounter::new(
                "estuary_interact_broadcasts_total",
                "Frames broadcast by interaction rooms",
            )?,
            slow_drops: IntCounter::new(
                "estuary_interact_slow_consumer_drops_total",
                "Connections dropped for falling behind their room",
            )?,
            closed_abuse: IntCounterVec::new(
                Opts::new(
                    "estuary_interact_closed_total",
                    "Connections closed by the server, by reason",
                ),
                &["reason"],
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "estuary_interact_refused_total",
                    "WebSocket upgrades refused, by reason",
                ),
                &["reason"],
            )?,
            bus_errors: IntCounter::new(
                "estuary_interact_bus_errors_total",
                "Interaction bus (Redis) failures",
            )?,
            bus_dropped: IntCounter::new(
                "estuary_interact_bus_dropped_total",
                "Bus events dropped because a room inbox was full",
            )?,
        };
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.rooms.clone()))?;
        registry.register(Box::new(m.rooms_evicted.clone()))?;
        registry.register(Box::new(m.frames_in.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.broadcast_writes.clone()))?;
        registry.register(Box::new(m.broadcasts.clone()))?;
        registry.register(Box::new(m.slow_drops.clone()))?;
        registry.register(Box::new(m.closed_abuse.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.bus_errors.clone()))?;
        registry.register(Box::new(m.bus_dropped.clone()))?;
        Ok(m)
    }
}
