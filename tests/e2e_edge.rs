//! End to end, the edge tier against Estuary nodes: real `estuary` binaries on loopback
//! pull from each other (origin ← edge ← mid-tier edge), from two origins with failover,
//! over https with a custom CA, through a Redis directory, and behind Varnish. Foreign
//! and hostile origins are in `e2e_edge_foreign.rs`; the peers live in `edge_support`.

mod common;
mod edge_support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::*;
use edge_support::*;

const SECRET: &str = "edge-secret-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_origin_edge_midtier_serves_the_origins_bytes_one_fetch_per_object() {
    // The origin takes pullers only with the secret; the mid-tier sends it.
    let origin = Node::start(
        "edge-origin",
        &format!(
            "[streams.demo]\n[upstream]\nsecret = \"{SECRET}\"\nrequire_secret = true\n[interact]\ntoken_secret = \"{SECRET}-tokens-0123456789\"\n"
        ),
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
    assert_eq!(part.status, 200, "hinted part {hinted}");
    assert!(matches!(&part.body[4..8], b"moof" | b"styp"));
    assert!(t0.elapsed() < Duration::from_secs(3));

    // Only the rendition viewers asked for is followed; the other is reported, not pulled.
    assert_eq!(
        metric(&edge, "estuary_upstream_followers_active", "").await,
        1.0
    );
    assert_eq!(
        metric(&mid, "estuary_upstream_followers_active", "").await,
        1.0
    );

    // A poll at the origin reaches the last edge's playlists as the origin's DATERANGE.
    let token = mint_token(&origin, "host", "ops", "Ops", "demo");
    let code = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-d",
            r#"{"question":"Tea?","options":["Yes","No"],"duration_secs":60}"#,
        ])
        .arg(origin.url("/api/streams/demo/polls"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&code.stdout), "201");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let at_edge = parse_playlist(&get(&url).await.text());
        if let Some(d) = tags(&at_edge, "EXT-X-DATERANGE").first() {
            let o = parse_playlist(
                &get_auth(&origin.url("/live/demo/source/index.m3u8"), SECRET)
                    .await
                    .text(),
            );
            assert_eq!(tags(&o, "EXT-X-DATERANGE").first(), Some(d));
            assert_eq!(attrs(d)["CLASS"], "com.estuary.poll");
            break;
        }
        assert!(Instant::now() < deadline, "no EXT-X-DATERANGE at the edge");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Delta updates at the edge once more than CAN-SKIP-UNTIL is listed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = parse_playlist(&get(&format!("{url}?_HLS_skip=YES")).await.text());
        if let Some(s) = tags(&d, "EXT-X-SKIP").first() {
            assert!(attrs(s)["SKIPPED-SEGMENTS"].parse::<u64>().unwrap() > 0);
            let full = segments(&parse_playlist(&get(&url).await.text()));
            let delta = segments(&d);
            assert!(delta.len() < full.len());
            let (first, _, uri) = &delta[0];
            assert!(full.iter().any(|(m, _, u)| m == first && u == uri));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no EXT-X-SKIP at the edge after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A real player through the chain: GStreamer's hlsdemux2 decodes video and audio
    // (the audio rendition is followed from the player's first request).
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("gst-launch-1.0")
            .args(["-q", "uridecodebin3"])
            .arg(format!("uri={}", edge.url("/live/demo/index.m3u8")))
            .args(["name=d", "d.", "!", "video/x-raw", "!", "queue", "!"])
            .args(["fakesink", "num-buffers=60", "d.", "!", "audio/x-raw", "!"])
            .args(["queue", "!", "fakesink", "num-buffers=60"])
            .output(),
    )
    .await
    .expect("gst-launch did not finish")
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

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
    // Both renditions are followed now that a player asked for audio too.
    assert_eq!(
        metric(&edge, "estuary_upstream_followers_active", "").await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_next_origin_keeps_msn_increasing_with_a_discontinuity() {
    let a = Node::start("fo-a", "[streams.demo]\n");
    let b = Node::start("fo-b", "[streams.demo]\n");
    let edge = Node::start(
        "fo-edge",
        &upstream_cfg(&[&a, &b], "failover_after = \"1500ms\"\n"),
    );
    let mut pub_a = small_publish(&a, "demo", 60);
    wait_ok(&a.url("/live/demo/index.m3u8"), Duration::from_secs(20)).await;
    let url = edge.url("/live/demo/source/index.m3u8");
    wait_ok(&url, Duration::from_secs(20)).await;
    // Let the edge list a few segments from A.
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let lines = parse_playlist(&get(&url).await.text());
        if segments(&lines).len() >= 3 {
            break lines;
        }
        assert!(Instant::now() < deadline, "edge never listed 3 segments");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (_, last_a, discs_a) = msn_span(&before);
    let old_segments = segments(&before);

    // The publisher moves from A to B.
    let _ = pub_a.0.kill();
    let _ = pub_a.wait_exit(Duration::from_secs(5));
    let _pub_b = small_publish(&b, "demo", 60);

    // The edge keeps serving what it listed, then continues from B: MSNs keep
    // increasing, and the first segment from B carries EXT-X-DISCONTINUITY.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut prev = (0, last_a);
    let after = loop {
        let r = get(&url).await;
        assert_eq!(r.status, 200, "edge playlist during the failover");
        let lines = parse_playlist(&r.text());
        let (first, last, discs) = msn_span(&lines);
        assert!(
            first >= prev.0,
            "media sequence went back {prev:?} -> {first}"
        );
        assert!(last >= prev.1, "last MSN went back {prev:?} -> {last}");
        prev = (first, last);
        for (m, _, uri) in segments(&lines).iter().filter(|s| s.0 <= last_a) {
            let g = get(&edge.url(&format!("/live/demo/source/{uri}"))).await;
            assert_eq!(g.status, 200, "segment {m} ({uri}) listed from A is gone");
        }
        if discs > discs_a && last >= last_a + 3 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "no continuation from B: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Segments from B decode, with B's init segment.
    let segs = segments(&after);
    let (_, _, uri) = segs.last().cloned().unwrap();
    let map = tags(&after, "EXT-X-MAP")
        .last()
        .map(|m| attrs(m)["URI"].clone())
        .unwrap();
    let init = get(&edge.url(&format!("/live/demo/source/{map}"))).await;
    let seg = get(&edge.url(&format!("/live/demo/source/{uri}"))).await;
    assert_eq!((init.status, seg.status), (200, 200));
    let file = edge.dir.join("b.mp4");
    std::fs::write(&file, [init.body.to_vec(), seg.body.to_vec()].concat()).unwrap();
    assert!(ffprobe(&file).starts_with("h264,640,360,"));
    // MSNs stayed contiguous through the move.
    let msns: Vec<u64> = segs.iter().map(|s| s.0).collect();
    assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "{msns:?}");
    assert!(old_segments.iter().all(|s| s.0 <= last_a));
    assert!(metric(&edge, "estuary_upstream_failovers_total", "").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varnish_in_front_of_an_edge_collapses_blocking_reloads_and_hinted_parts() {
    let origin = Node::start("vc-origin", "[streams.demo]\n");
    let edge = Node::start("vc-edge", &upstream_cfg(&[&origin], ""));
    let _pub = small_publish(&origin, "demo", 60);
    let varnish = start_varnish(edge.http, &edge.dir).await;
    let cdn = |p: &str| format!("http://{}{p}", varnish.addr);
    let url = cdn("/live/demo/source/index.m3u8");
    wait_ok(&url, Duration::from_secs(30)).await;
    let served = |route: &'static str| {
        let edge = &edge;
        async move {
            metric(
                edge,
                "estuary_http_requests_total",
                &format!("route=\"{route}\""),
            )
            .await
        }
    };

    // Ten players block on the same next part, with the parameters in either order.
    let lines = parse_playlist(&get(&url).await.text());
    let (m, p) = next_part(&lines);
    let before = served("media_playlist").await;
    let mut players = Vec::new();
    for i in 0..10 {
        let u = if i % 2 == 0 {
            format!("{url}?_HLS_msn={m}&_HLS_part={p}")
        } else {
            format!("{url}?_HLS_part={p}&_HLS_msn={m}")
        };
        players.push(tokio::spawn(async move { get(&u).await }));
    }
    let mut bodies = Vec::new();
    for pl in players {
        let r = pl.await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.headers.contains_key("age"), "no Age header");
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        served("media_playlist").await - before,
        1.0,
        "Varnish did not collapse the blocking reloads"
    );
    let again = get(&format!("{url}?_HLS_msn={m}&_HLS_part={p}")).await;
    assert_eq!(again.body, bodies[0]);
    assert_eq!(
        served("media_playlist").await - before,
        1.0,
        "not served from cache"
    );

    // Ten players GET the hinted part before it exists: one request reaches the edge.
    let lines = parse_playlist(&bodies[0].iter().map(|b| *b as char).collect::<String>());
    let hint = attrs(tag(&lines, "EXT-X-PRELOAD-HINT"))["URI"].clone();
    let before = served("part").await;
    let mut players = Vec::new();
    for _ in 0..10 {
        let u = cdn(&format!("/live/demo/source/{hint}"));
        players.push(tokio::spawn(async move { get(&u).await }));
    }
    let mut parts = Vec::new();
    for pl in players {
        let r = pl.await.unwrap();
        assert_eq!(r.status, 200, "hinted part {hint} through Varnish");
        parts.push(r.body);
    }
    assert!(parts.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        served("part").await - before,
        1.0,
        "hinted part not collapsed"
    );
    let direct = get(&edge.url(&format!("/live/demo/source/{hint}"))).await;
    assert_eq!(direct.body, parts[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origin_is_trusted_through_the_custom_ca_only() {
    let pki = tempdir("edge-pki");
    let (ca, cert, key) = test_pki(&pki);
    let origin = Node::start(
        "tls-origin",
        &format!(
            "http.tls_cert = \"{}\"\nhttp.tls_key = \"{}\"\n[streams.demo]\n",
            cert.display(),
            key.display()
        ),
    );
    let _pub = small_publish(&origin, "demo", 40);
    let base = format!("https://127.0.0.1:{}/live", origin.http.port());
    let trusting = Node::start(
        "tls-edge",
        &format!(
            "[upstream]\norigins = [\"{base}\"]\nca_file = \"{}\"\n",
            ca.display()
        ),
    );
    let doubting = Node::start(
        "tls-edge-noca",
        &format!("[upstream]\norigins = [\"{base}\"]\n"),
    );
    let url = trusting.url("/live/demo/source/index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(&url).await;
        if r.status == 200 && r.text().contains("#EXT-X-PART:") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no playlist over https: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let lines = parse_playlist(&get(&url).await.text());
    let (m, p) = next_part(&lines);
    let r = get(&format!("{url}?_HLS_msn={m}&_HLS_part={p}")).await;
    assert_eq!(r.status, 200);
    assert!(
        metric(
            &trusting,
            "estuary_upstream_requests_total",
            "kind=\"hint\",result=\"ok\""
        )
        .await
            >= 1.0
    );
    // Without the CA the origin's certificate is refused: viewers get 503.
    assert_eq!(
        get(&doubting.url("/live/demo/index.m3u8")).await.status,
        503
    );
    assert!(
        metric(
            &doubting,
            "estuary_upstream_requests_total",
            "result=\"connect\""
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_directory_finds_the_origin_and_follows_the_publisher_to_another() {
    let redis = start_redis();
    let dir = format!(
        "[upstream]\nredis = \"redis://127.0.0.1:{}\"\nlease = \"3s\"\nfailover_after = \"1500ms\"\n",
        redis.port
    );
    let a = Node::start("dir-a", &format!("[streams.demo]\n{dir}"));
    let b = Node::start("dir-b", &format!("[streams.demo]\n{dir}"));
    // The edge has no static origins: only the directory says where streams are.
    let edge = Node::start("dir-edge", &dir);
    let mut pub_b = small_publish(&b, "demo", 60);
    wait_ok(&b.url("/live/demo/index.m3u8"), Duration::from_secs(20)).await;
    let url = edge.url("/live/demo/source/index.m3u8");
    let first = wait_ok(&url, Duration::from_secs(20)).await;
    let (_, last_b, discs_b) = msn_span(&parse_playlist(&first.text()));
    assert!(
        metric(
            &b,
            "estuary_http_requests_total",
            "route=\"media_playlist\""
        )
        .await
            >= 1.0
    );
    assert_eq!(
        metric(
            &a,
            "estuary_http_requests_total",
            "route=\"media_playlist\""
        )
        .await,
        0.0
    );

    // The publisher moves to A; A registers the stream and the edge follows it there.
    let _ = pub_b.0.kill();
    let _ = pub_b.wait_exit(Duration::from_secs(5));
    let _pub_a = small_publish(&a, "demo", 60);
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut prev = last_b;
    loop {
        let r = get(&url).await;
        assert_eq!(r.status, 200);
        let (_, last, discs) = msn_span(&parse_playlist(&r.text()));
        assert!(last >= prev, "MSN went back {prev} -> {last}");
        prev = last;
        let pulled_a = metric(
            &a,
            "estuary_http_requests_total",
            "route=\"media_playlist\"",
        )
        .await;
        if discs > discs_b && last >= last_b + 3 && pulled_a > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "edge did not move to A: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(metric(&edge, "estuary_upstream_failovers_total", "").await >= 1.0);
}
