//! HLS viewers, counted from media playlist requests.
//!
//! HLS has no session: a player only fetches. A *viewer* here is a distinct client that
//! fetched (with a 200) a media playlist of the stream within the last [`WINDOW`]. Every
//! player reloads its media playlist at least once per target duration (LL-HLS players
//! once per part), so a playing client is never out of the window; one that stopped drops
//! out within it. A client is its peer IP address, its `X-Forwarded-For` header and its
//! `User-Agent` (hashed; nothing is stored in clear), so several players behind one NAT
//! count once per distinct browser or app. Behind a CDN or an edge tier this node sees
//! the cache's fetches: each shield or edge counts as one viewer unless it forwards
//! `X-Forwarded-For`. Each viewer counts under the rendition it last fetched a video
//! playlist of (the `audio` playlist only when it fetched nothing else), so the
//! renditions' counts add up to the stream's.
//!
//! Cost on the hot path: one hash of three short values and one short-held lock per
//! media playlist request. Forgotten clients are swept once per [`WINDOW`], and a stream
//! tracks at most [`MAX_CLIENTS`] at once (past that, new clients are not counted).

use std::{
    collections::{hash_map::Entry, BTreeMap, HashMap},
    hash::{BuildHasher, Hash, Hasher, RandomState},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use hyper::{header, Request};
use serde::Serialize;

/// How long a client counts as a viewer after its last media playlist fetch.
pub const WINDOW: Duration = Duration::from_secs(15);
/// Most clients tracked per stream.
pub const MAX_CLIENTS: usize = 100_000;

/// A client's identity, hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(u64);

#[derive(Debug)]
struct Seen {
    at: Instant,
    rendition: String,
}

#[derive(Debug)]
struct State {
    streams: HashMap<String, HashMap<ClientId, Seen>>,
    swept: Instant,
}

/// Recently seen HLS clients, by stream.
#[derive(Debug)]
pub struct Viewers {
    /// Per process random keys: identities cannot be compared across nodes or runs.
    keys: RandomState,
    state: Mutex<State>,
}

impl Default for Viewers {
    fn default() -> Self {
        Self {
            keys: RandomState::new(),
            state: Mutex::new(State {
                streams: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }
}

/// One stream's HLS viewers.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct StreamViewers {
    /// Distinct clients in the window.
    pub hls: usize,
    /// The same clients, by the rendition each fetched last.
    pub renditions: BTreeMap<String, usize>,
}

impl Viewers {
    /// The identity of the client sending `req` from `peer` (the connection's address).
    pub fn client<B>(&self, req: &Request<B>, peer: IpAddr) -> ClientId {
        let mut h = self.keys.build_hasher();
        Some(peer).hash(&mut h);
        for name in [
            header::HeaderName::from_static("x-forwarded-for"),
            header::USER_AGENT,
        ] {
            req.headers().get(name).map(|v| v.as_bytes()).hash(&mut h);
        }
        ClientId(h.finish())
    }

    /// Records that `client` fetched the media playlist at `path`
    /// (`/live/{stream}/{rendition}/index.m3u8`); other paths are ignored.
    pub fn seen(&self, path: &str, client: ClientId) {
        let Some((stream, rendition)) = parse(path) else {
            return;
        };
        self.seen_at(stream, rendition, client, Instant::now());
    }

    fn seen_at(&self, stream: &str, rendition: &str, client: ClientId, now: Instant) {
        let mut state = self.state.lock().expect("not poisoned");
        if now.saturating_duration_since(state.swept) >= WINDOW {
            sweep(&mut state.streams, now);
            state.swept = now;
        }
        let clients = match state.streams.get_mut(stream) {
            Some(c) => c,
            None => state.streams.entry(stream.to_owned()).or_default(),
        };
        let full = clients.len() >= MAX_CLIENTS;
        match clients.entry(client) {
            Entry::Occupied(e) => {
                let seen = e.into_mut();
                seen.at = now;
                // Players fetch the audio playlist beside the video one: keep the video.
                if seen.rendition != rendition
                    && (rendition != crate::media::AUDIO || seen.rendition.is_empty())
                {
                    rendition.clone_into(&mut seen.rendition);
                }
            }
            Entry::Vacant(_) if full => {}
            Entry::Vacant(e) => {
                e.insert(Seen {
                    at: now,
                    rendition: rendition.to_owned(),
                });
            }
        }
    }

    /// Every stream with a viewer in the window.
    pub fn snapshot(&self) -> BTreeMap<String, StreamViewers> {
        self.snapshot_at(Instant::now())
    }

    fn snapshot_at(&self, now: Instant) -> BTreeMap<String, StreamViewers> {
        let mut state = self.state.lock().expect("not poisoned");
        sweep(&mut state.streams, now);
        state.swept = now;
        state
            .streams
            .iter()
            .map(|(name, clients)| {
                let mut v = StreamViewers {
                    hls: clients.len(),
                    ..StreamViewers::default()
                };
                for seen in clients.values() {
                    *v.renditions.entry(seen.rendition.clone()).or_default() += 1;
                }
                (name.clone(), v)
            })
            .collect()
    }
}

/// Forgets clients not seen within the window, and streams left without one.
fn sweep(streams: &mut HashMap<String, HashMap<ClientId, Seen>>, now: Instant) {
    streams.retain(|_, clients| {
        clients.retain(|_, s| now.saturating_duration_since(s.at) < WINDOW);
        !clients.is_empty()
    });
}

fn parse(path: &str) -> Option<(&str, &str)> {
    match path.trim_start_matches('/').split('/').collect::<Vec<_>>()[..] {
        ["live", stream, rendition, "index.m3u8"] => Some((stream, rendition)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ua: &str) -> Request<()> {
        Request::builder()
            .header(header::USER_AGENT, ua)
            .body(())
            .unwrap()
    }

    #[test]
    fn distinct_clients_by_rendition_in_a_window() {
        let v = Viewers::default();
        let (a, b) = (
            v.client(&req("hls.js"), "10.0.0.1".parse().unwrap()),
            v.client(&req("hls.js"), "10.0.0.2".parse().unwrap()),
        );
        let c = v.client(&req("AppleCoreMedia"), "10.0.0.1".parse().unwrap());
        assert_eq!(
            a,
            v.client(&req("hls.js"), "10.0.0.1".parse().unwrap()),
            "the port does not matter"
        );
        assert_ne!(a, c);
        let t0 = Instant::now();
        v.seen_at("s", "720p", a, t0);
        v.seen_at("s", "audio", a, t0);
        v.seen_at("s", "720p", a, t0);
        v.seen_at("s", "360p", b, t0);
        v.seen_at("s", "audio", c, t0);
        v.seen_at("t", "source", a, t0);
        let snap = v.snapshot_at(t0 + Duration::from_secs(1));
        assert_eq!(snap["s"].hls, 3);
        assert_eq!(
            snap["s"].renditions,
            BTreeMap::from([("720p".into(), 1), ("360p".into(), 1), ("audio".into(), 1)])
        );
        assert_eq!(snap["t"].hls, 1);
        // b keeps fetching; the others stop and drop out after the window.
        v.seen_at("s", "360p", b, t0 + WINDOW);
        let snap = v.snapshot_at(t0 + WINDOW + Duration::from_secs(1));
        assert_eq!(snap["s"].hls, 1);
        assert!(!snap.contains_key("t"));
    }

    #[test]
    fn only_media_playlist_paths() {
        assert_eq!(parse("/live/s/720p/index.m3u8"), Some(("s", "720p")));
        assert_eq!(parse("/live/s/index.m3u8"), None);
        assert_eq!(parse("/live/s/720p/1.m4s"), None);
    }

    #[test]
    fn bounded_per_stream() {
        let v = Viewers::default();
        let t0 = Instant::now();
        for i in 0..MAX_CLIENTS as u64 + 10 {
            v.seen_at("s", "720p", ClientId(i), t0);
        }
        assert_eq!(v.snapshot_at(t0)["s"].hls, MAX_CLIENTS);
    }
}
