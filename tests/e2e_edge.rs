//! End to end, the edge tier: real `estuary` binaries on loopback pull from each other
//! (origin ← edge ← mid-tier edge), from two origins with failover, from a plain HLS
//! origin (ffmpeg's HLS muxer behind a tiny file server), and from a hostile server.

mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

const SECRET: &str = "edge-secret-0123";

fn small_publish(node: &Node, stream: &str, secs: u32) -> Publisher {
    let x264 = x264_args(30);
    let args: Vec<&str> = x264.iter().map(String::as_str).collect();
    ffmpeg_publish_with(&srt_url(node, stream, None), secs, &args, "640x360")
}

fn upstream_cfg(origins: &[&Node], extra: &str) -> String {
    let list: Vec<String> = origins
        .iter()
        .map(|n| format!("\"http://{}/live\"", n.http))
        .collect();
    format!("[upstream]\norigins = [{}]\n{extra}", list.join(", "))
}

/// GET with an `Authorization: Bearer` header, over h2c.
async fn get_auth(url: &str, secret: &str) -> Resp {
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(true);
    let client: Client<_, Empty<Bytes>> = b.build_http();
    let req = hyper::Request::get(url)
        .header("authorization", format!("Bearer {secret}"))
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    let version = resp.version();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
        version,
    }
}

/// The part after the newest listed one: (MSN, part index), read from the playlist.
fn next_part(lines: &[Line]) -> (u64, u64) {
    let mut msn: u64 = tag(lines, "EXT-X-MEDIA-SEQUENCE").parse().unwrap();
    if let Some(s) = tags(lines, "EXT-X-SKIP").first() {
        msn += attrs(s)["SKIPPED-SEGMENTS"].parse::<u64>().unwrap();
    }
    let mut parts = 0;
    for l in lines {
        match l {
            Line::Tag(n, _) if n == "EXT-X-PART" => parts += 1,
            Line::Uri(_) => {
                msn += 1;
                parts = 0;
            }
            _ => {}
        }
    }
    (msn, parts)
}

/// Parts listed per segment MSN (complete and open), in order.
fn parts_by_msn(lines: &[Line]) -> BTreeMap<u64, Vec<String>> {
    let mut msn: u64 = tag(lines, "EXT-X-MEDIA-SEQUENCE").parse().unwrap();
    if let Some(s) = tags(lines, "EXT-X-SKIP").first() {
        msn += attrs(s)["SKIPPED-SEGMENTS"].parse::<u64>().unwrap();
    }
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for l in lines {
        match l {
            Line::Tag(n, v) if n == "EXT-X-PART" => {
                out.entry(msn).or_default().push(attrs(v)["URI"].clone())
            }
            Line::Uri(_) => msn += 1,
            _ => {}
        }
    }
    out
}

/// Waits until a metric stops changing (the followers went quiet), within `limit`.
async fn settle(node: &Node, name: &str, labels: &str, limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    let mut last = metric(node, name, labels).await;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let v = metric(node, name, labels).await;
        if v == last {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} still changing");
        last = v;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_origin_edge_midtier_serves_the_origins_bytes_one_fetch_per_object() {
    // The origin takes pullers only with the secret; the mid-tier sends it.
    let origin = Node::start(
        "edge-origin",
        &format!("[streams.demo]\n[upstream]\nsecret = \"{SECRET}\"\nrequire_secret = true\n"),
    );
    let mid = Node::start(
        "edge-mid",
        &upstream_cfg(&[&origin], &format!("secret = \"{SECRET}\"\n")),
    );
    let edge = Node::start("edge-last", &upstream_cfg(&[&mid], ""));
    let mut publisher = small_publish(&origin, "demo", 60);
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_auth(&origin.url("/live/demo/index.m3u8"), SECRET)
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "origin never published");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        get(&origin.url("/live/demo/index.m3u8")).await.status,
        401,
        "origin serves pullers without the secret"
    );

    // The multivariant playlist reaches the last edge with the origin's renditions.
    let mv = wait_ok(&edge.url("/live/demo/index.m3u8"), Duration::from_secs(20)).await;
    let lines = parse_playlist(&mv.text());
    assert_eq!(attrs(tag(&lines, "EXT-X-MEDIA"))["URI"], "audio/index.m3u8");
    assert!(lines.contains(&Line::Uri("source/index.m3u8".into())));

    let url = edge.url("/live/demo/source/index.m3u8");
    let pl = wait_ok(&url, Duration::from_secs(20)).await;
    let lines = parse_playlist(&pl.text());
    assert!(tag(&lines, "EXT-X-VERSION").parse::<u32>().unwrap() >= 9);
    let sc = attrs(tag(&lines, "EXT-X-SERVER-CONTROL"));
    assert_eq!(sc["CAN-BLOCK-RELOAD"], "YES");
    assert!(sc.contains_key("PART-HOLD-BACK") && sc.contains_key("CAN-SKIP-UNTIL"));
    assert!(attrs(tag(&lines, "EXT-X-PART-INF")).contains_key("PART-TARGET"));
    assert!(!tags(&lines, "EXT-X-PROGRAM-DATE-TIME").is_empty());
    assert_eq!(attrs(tag(&lines, "EXT-X-MAP"))["URI"], "init.mp4");
    assert_eq!(attrs(tag(&lines, "EXT-X-PRELOAD-HINT"))["TYPE"], "PART");
    let report = attrs(tag(&lines, "EXT-X-RENDITION-REPORT"));
    assert_eq!(report["URI"], "../audio/index.m3u8");
    assert!(report.contains_key("LAST-MSN") && report.contains_key("LAST-PART"));

    // Several players read the last edge at once: blocking reload for the next part,
    // then every new part, then the hinted part.
    let mut players = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        let base = edge.url("/live/demo/source/");
        players.push(tokio::spawn(async move {
            let mut seen: BTreeMap<String, Bytes> = BTreeMap::new();
            let mut lines = parse_playlist(&get(&url).await.text());
            let end = Instant::now() + Duration::from_secs(6);
            let mut reloads = 0;
            while Instant::now() < end && reloads < 100 {
                let (m, p) = next_part(&lines);
                let r = get(&format!("{url}?_HLS_msn={m}&_HLS_part={p}")).await;
                assert_eq!(r.status, 200, "blocking reload at the edge: {}", r.text());
                reloads += 1;
                lines = parse_playlist(&r.text());
                let listed = parts_by_msn(&lines);
                assert!(
                    listed.get(&m).is_some_and(|v| v.len() as u64 > p)
                        || listed.keys().any(|k| *k > m),
                    "blocking reload answered without part {m}.{p}"
                );
                for uri in listed.values().flatten() {
                    if !seen.contains_key(uri) {
                        let r = get(&format!("{base}{uri}")).await;
                        assert_eq!(r.status, 200, "listed part {uri} at the edge");
                        seen.insert(uri.clone(), r.body);
                    }
                }
            }
            (seen, reloads)
        }));
    }
    let mut seen: BTreeMap<String, Bytes> = BTreeMap::new();
    for p in players {
        let (s, reloads) = p.await.unwrap();
        assert!(reloads >= 5, "only {reloads} blocking reloads in 6 s");
        for (k, v) in s {
            if let Some(prev) = seen.get(&k) {
                assert_eq!(prev, &v, "two players got different bytes for {k}");
            }
            seen.insert(k, v);
        }
    }
    assert!(seen.len() >= 10, "players saw {} parts", seen.len());

    // A part at the last edge is byte-identical to the origin's (checked while listed).
    let lines = parse_playlist(&get(&url).await.text());
    let listed = parts_by_msn(&lines);
    let mut compared = 0;
    for uri in listed.values().flatten() {
        let Some(b) = seen.get(uri) else { continue };
        let o = get_auth(&origin.url(&format!("/live/demo/source/{uri}")), SECRET).await;
        assert_eq!(o.status, 200, "{uri} at the origin");
        assert_eq!(&o.body, b, "part {uri} differs from the origin's");
        assert!(
            matches!(&b[4..8], b"moof" | b"styp"),
            "{uri} is not a CMAF chunk"
        );
        compared += 1;
    }
    assert!(compared >= 3, "compared {compared} parts with the origin");

    // Parts concatenate to the segment, at the edge and against the origin's segment.
    let segs = segments(&lines);
    let (msn, _, seg_uri) = segs
        .iter()
        .rev()
        .find(|(m, _, _)| listed.contains_key(m))
        .cloned()
        .expect("a complete segment with listed parts");
    let seg = get(&edge.url(&format!("/live/demo/source/{seg_uri}"))).await;
    assert_eq!(seg.status, 200);
    let mut joined = Vec::new();
    for uri in &listed[&msn] {
        let r = get(&edge.url(&format!("/live/demo/source/{uri}"))).await;
        assert_eq!(r.status, 200);
        joined.extend_from_slice(&r.body);
    }
    assert_eq!(
        joined,
        seg.body.to_vec(),
        "segment {msn} != its parts at the edge"
    );
    let oseg = get_auth(&origin.url(&format!("/live/demo/source/{seg_uri}")), SECRET).await;
    assert_eq!(
        oseg.body, seg.body,
        "segment {msn} differs from the origin's"
    );
    let init = get(&edge.url("/live/demo/source/init.mp4")).await;
    let oinit = get_auth(&origin.url("/live/demo/source/init.mp4"), SECRET).await;
    assert_eq!(init.status, 200);
    assert_eq!(init.body, oinit.body);
    let file = edge.dir.join("seg.mp4");
    std::fs::write(&file, [init.body.to_vec(), seg.body.to_vec()].concat()).unwrap();
    assert!(ffprobe(&file).starts_with("h264,640,360,"));

    // The preload hint at the edge: GET it before it exists; it arrives complete.
    let pl = parse_playlist(&get(&url).await.text());
    let hinted = attrs(tag(&pl, "EXT-X-PRELOAD-HINT"))["URI"].clone();
    let t0 = Instant::now();
    let part = get(&edge.url(&format!("/live/demo/source/{hinted}"))).await;
    // As at the origin, a hinted part may end up in the next segment instead (404).
    let part = if part.status == 200 {
        part
    } else {
        let pl = parse_playlist(&get(&url).await.text());
        let hinted = attrs(tag(&pl, "EXT-X-PRELOAD-HINT"))["URI"].clone();
        get(&edge.url(&format!("/live/demo/source/{hinted}"))).await
    };
    assert_eq!(part.status, 200);
    assert_eq!(&part.body[4..8], b"moof");
    assert!(t0.elapsed() < Duration::from_secs(3));

    // Same 400 rules as the origin.
    for q in [
        "_HLS_part=1",
        "_HLS_msn=abc",
        "_HLS_msn=999999",
        "_HLS_skip=maybe",
    ] {
        assert_eq!(get(&format!("{url}?{q}")).await.status, 400, "{q}");
    }
    // Unknown stream and rendition: 404 through the chain.
    assert_eq!(get(&edge.url("/live/nosuch/index.m3u8")).await.status, 404);
    assert_eq!(
        get(&edge.url("/live/demo/nosuch/index.m3u8")).await.status,
        404
    );

    // One upstream request per object per edge, however many players: stop the
    // publisher, let the followers go quiet, then compare what the mid-tier served the
    // last edge with what the last edge stored.
    let _ = publisher.0.kill();
    let _ = publisher.wait_exit(Duration::from_secs(5));
    settle(
        &edge,
        "estuary_upstream_objects_total",
        "",
        Duration::from_secs(30),
    )
    .await;
    let fetched_parts = metric(
        &edge,
        "estuary_upstream_requests_total",
        "kind=\"part\",result=\"ok\"",
    )
    .await
        + metric(
            &edge,
            "estuary_upstream_requests_total",
            "kind=\"hint\",result=\"ok\"",
        )
        .await;
    let stored_parts = metric(&edge, "estuary_upstream_objects_total", "kind=\"part\"").await;
    let served_by_mid = metric(
        &mid,
        "estuary_http_requests_total",
        "route=\"part\",status=\"200\"",
    )
    .await;
    let served_by_edge = metric(
        &edge,
        "estuary_http_requests_total",
        "route=\"part\",status=\"200\"",
    )
    .await;
    assert_eq!(fetched_parts, stored_parts, "edge fetched a part twice");
    assert_eq!(
        served_by_mid, fetched_parts,
        "mid served the edge a part twice"
    );
    assert!(
        served_by_edge >= 3.0 * stored_parts.min(seen.len() as f64),
        "players read {served_by_edge} parts, the edge pulled {stored_parts}"
    );
    assert!(metric(&edge, "estuary_upstream_edge_latency_seconds_count", "").await > 10.0);
    assert!(metric(&edge, "estuary_upstream_bytes_total", "").await > 100_000.0);
    // Only the rendition viewers asked for is followed; the other is reported, not pulled.
    assert_eq!(
        metric(&edge, "estuary_upstream_followers_active", "").await,
        1.0
    );
    assert_eq!(
        metric(&mid, "estuary_upstream_followers_active", "").await,
        1.0
    );
}
