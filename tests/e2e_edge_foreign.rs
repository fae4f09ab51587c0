//! End to end, the edge tier against origins that are not Estuary: a plain HLS origin
//! (ffmpeg's HLS muxer behind a tiny file server), nginx requiring mutual TLS, scripted
//! origins that restart their numbering, list a long event or mark gaps, and a hostile
//! server (500, truncated, garbage, stall). The peers live in `edge_support`.

mod common;
mod edge_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use edge_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_hls_origin_plays_through_the_edge_and_followers_stop_when_idle() {
    let dir = tempdir("plain-hls");
    let _ff = ffmpeg_hls(&dir, 60);
    let server = file_server(dir.clone()).await;
    let edge = Node::start(
        "plain-edge",
        &format!("[upstream]\norigins = [\"http://{server}/live\"]\nidle = \"2s\"\n"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("v/index.m3u8").exists() {
        assert!(Instant::now() < deadline, "ffmpeg wrote no playlist");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mv = wait_ok(&edge.url("/live/plain/index.m3u8"), Duration::from_secs(20)).await;
    assert!(parse_playlist(&mv.text()).contains(&Line::Uri("v/index.m3u8".into())));
    let url = edge.url("/live/plain/v/index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let r = get(&url).await;
        if r.status == 200 {
            let lines = parse_playlist(&r.text());
            if segments(&lines).len() >= 2 {
                break lines;
            }
        }
        assert!(Instant::now() < deadline, "edge never listed 2 segments");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Whole segments, the origin's names and numbers, and the edge's own blocking reload.
    assert!(tags(&lines, "EXT-X-PART").is_empty());
    assert_eq!(attrs(tag(&lines, "EXT-X-MAP"))["URI"], "init.mp4");
    assert!(!tags(&lines, "EXT-X-PROGRAM-DATE-TIME").is_empty());
    let segs = segments(&lines);
    let (msn, _, uri) = segs.last().cloned().unwrap();
    assert_eq!(uri, format!("{msn}.m4s"), "ffmpeg's numbering is kept");
    let seg = get(&edge.url(&format!("/live/plain/v/{uri}"))).await;
    let init = get(&edge.url("/live/plain/v/init.mp4")).await;
    assert_eq!((seg.status, init.status), (200, 200));
    if let Ok(disk) = std::fs::read(dir.join("v").join(&uri)) {
        assert_eq!(
            seg.body.to_vec(),
            disk,
            "segment differs from ffmpeg's file"
        );
    }
    let file = edge.dir.join("plain.mp4");
    std::fs::write(&file, [init.body.to_vec(), seg.body.to_vec()].concat()).unwrap();
    assert!(ffprobe(&file).starts_with("h264,640,360,"));
    let t0 = Instant::now();
    let next = get(&format!("{url}?_HLS_msn={}", msn + 1)).await;
    assert_eq!(next.status, 200);
    assert!(segments(&parse_playlist(&next.text()))
        .iter()
        .any(|s| s.0 == msn + 1));
    assert!(t0.elapsed() < Duration::from_secs(5));
    // ffmpeg's HLS demuxer plays the edge's playlist.
    let frames = hls_frames(&edge.url("/live/plain/index.m3u8"), 2).await;
    assert!(frames >= 50, "2 s at 30 fps, got {frames} frames");

    // Nobody watches: the follower stops after upstream.idle; a new viewer restarts it.
    assert_eq!(
        metric(&edge, "estuary_upstream_followers_active", "").await,
        1.0
    );
    wait_metric_until(
        &edge,
        "estuary_upstream_followers_active",
        "",
        |v| v == 0.0,
        Duration::from_secs(15),
    )
    .await;
    let multivariant = "kind=\"multivariant\",result=\"ok\"";
    assert_eq!(
        metric(&edge, "estuary_upstream_requests_total", multivariant).await,
        1.0
    );
    let r = get(&url).await;
    assert_eq!(r.status, 200);
    // The stream was forgotten with its last follower: its multivariant playlist is
    // fetched afresh.
    assert_eq!(
        metric(&edge, "estuary_upstream_requests_total", multivariant).await,
        2.0
    );
    let (_, last_before, _) = msn_span(&lines);
    wait_metric(
        &edge,
        "estuary_upstream_followers_active",
        "",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, last, _) = msn_span(&parse_playlist(&get(&url).await.text()));
        if last > last_before + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted follower made no progress"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_upstream_gets_viewers_503_or_404_and_the_edge_stays_up() {
    let server = hostile_server().await;
    let edge = Node::start(
        "hostile-edge",
        &format!(
            "hls.blocking_timeout = \"2s\"\n[upstream]\norigins = [\"http://{server}/live\"]\ncleartext_http2 = false\nrequest_timeout = \"1s\"\nfailover_after = \"1s\"\n"
        ),
    );
    assert_eq!(get(&edge.url("/live/nosuch/index.m3u8")).await.status, 404);
    assert_eq!(get(&edge.url("/live/badmv/index.m3u8")).await.status, 503);
    let mv = get(&edge.url("/live/bad/index.m3u8")).await;
    assert_eq!(mv.status, 200);
    assert!(mv.text().contains("\nr500/index.m3u8\n"));
    assert_eq!(
        get(&edge.url("/live/bad/nosuch/index.m3u8")).await.status,
        404
    );
    for r in ["r500", "trunc", "junk", "stall"] {
        let t0 = Instant::now();
        let pl = get(&edge.url(&format!("/live/bad/{r}/index.m3u8"))).await;
        assert_eq!(pl.status, 503, "{r}: {}", pl.text());
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{r} took {:?}",
            t0.elapsed()
        );
        let part = get(&edge.url(&format!("/live/bad/{r}/p1.m4s"))).await;
        assert!(
            matches!(part.status, 503 | 404),
            "{r} part: {}",
            part.status
        );
    }
    // Many viewers at once on a failing rendition: still answered, node still healthy.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let u = edge.url("/live/bad/trunc/index.m3u8");
        tasks.push(tokio::spawn(async move { get(&u).await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    // ... and viewers hammering one costs upstream a few requests, not one each.
    let playlist = "kind=\"playlist\"";
    let before = metric(&edge, "estuary_upstream_requests_total", playlist).await;
    for _ in 0..50 {
        assert_eq!(
            get(&edge.url("/live/bad/r500/index.m3u8")).await.status,
            503
        );
    }
    let asked = metric(&edge, "estuary_upstream_requests_total", playlist).await - before;
    assert!(asked <= 10.0, "50 viewer requests made {asked} upstream");
    assert_eq!(get(&edge.url("/healthz")).await.status, 200);
    for (labels, what) in [
        ("result=\"status\"", "500s"),
        ("result=\"body\"", "truncated bodies"),
        ("result=\"timeout\"", "stalls"),
        ("result=\"not_found\"", "404s"),
    ] {
        assert!(
            metric(&edge, "estuary_upstream_requests_total", labels).await >= 1.0,
            "{what} not counted"
        );
    }
    assert!(
        metric(
            &edge,
            "estuary_upstream_rejected_total",
            "what=\"playlist\""
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &edge,
            "estuary_upstream_rejected_total",
            "what=\"multivariant\""
        )
        .await
            >= 1.0
    );
    assert!(!edge.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origin_that_restarts_its_numbering_never_sends_the_edge_back() {
    let script: Script = Default::default();
    let set = |path: &str, body: &[u8]| {
        script
            .lock()
            .unwrap()
            .insert(format!("/live/ext/{path}"), body.to_vec());
    };
    set(
        "index.m3u8",
        b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nv/index.m3u8\n",
    );
    set("v/init.mp4", b"init-A");
    for m in 100..103 {
        set(&format!("v/a{m}.m4s"), format!("segment a{m}").as_bytes());
    }
    let daterange = "#EXT-X-DATERANGE:ID=\"ad-1\",CLASS=\"com.example.ad\",START-DATE=\"2026-01-01T00:00:01.000Z\",DURATION=10.0";
    set(
        "v/index.m3u8",
        format!(
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:100\n#EXT-X-MAP:URI=\"init.mp4\"\n{daterange}\n#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z\n#EXTINF:1.000,\na100.m4s\n#EXTINF:1.000,\na101.m4s\n#EXTINF:1.000,\na102.m4s\n"
        )
        .as_bytes(),
    );
    let server = scripted_server(script.clone()).await;
    let edge = Node::start(
        "ext-edge",
        &format!("[upstream]\norigins = [\"http://{server}/live\"]\ncleartext_http2 = false\nfailover_after = \"1s\"\n"),
    );
    let url = edge.url("/live/ext/v/index.m3u8");
    let first = wait_ok(&url, Duration::from_secs(20)).await;
    let lines = parse_playlist(&first.text());
    let segs = segments(&lines);
    assert_eq!(
        segs.iter().map(|s| (s.0, s.2.as_str())).collect::<Vec<_>>(),
        vec![(100, "a100.m4s"), (101, "a101.m4s"), (102, "a102.m4s")]
    );
    assert_eq!(
        tag(&lines, "EXT-X-DATERANGE"),
        &daterange["#EXT-X-DATERANGE:".len()..]
    );
    assert_eq!(
        get(&edge.url("/live/ext/v/a101.m4s")).await.body,
        &b"segment a101"[..]
    );
    assert_eq!(
        get(&edge.url("/live/ext/v/init.mp4")).await.body,
        &b"init-A"[..]
    );

    // The origin restarts: numbering from 0, the same init name with new bytes, then it
    // ends the stream.
    set("v/init.mp4", b"init-B");
    for m in 0..2 {
        set(&format!("v/b{m}.m4s"), format!("segment b{m}").as_bytes());
    }
    set(
        "v/index.m3u8",
        b"#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:10:00.000Z\n#EXTINF:1.000,\nb0.m4s\n#EXTINF:1.000,\nb1.m4s\n#EXT-X-ENDLIST\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let text = get(&url).await.text();
        let lines = parse_playlist(&text);
        if segments(&lines).last().is_some_and(|s| s.0 == 104) {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "edge never took the restarted origin: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The window keeps upstream's length (3); MSNs continue where they were.
    let segs = segments(&lines);
    let msns: Vec<u64> = segs.iter().map(|s| s.0).collect();
    assert_eq!(msns, vec![102, 103, 104], "MSNs continue");
    assert_eq!(segs[0].2, "a102.m4s");
    let body = |i: usize| get_body(&edge, &segs[i].2);
    assert_eq!(body(1).await, &b"segment b0"[..]);
    assert_eq!(body(2).await, &b"segment b1"[..]);
    // What left the playlist is still served.
    assert_eq!(get_body(&edge, "a100.m4s").await, &b"segment a100"[..]);
    // a102's PDT follows from the one upstream wrote on a100 only.
    assert_eq!(
        tags(&lines, "EXT-X-PROGRAM-DATE-TIME")[0],
        "2026-01-01T00:00:02.000Z"
    );
    // A discontinuity and the new init segment come with the first restarted segment.
    let text = get(&url).await.text();
    let before_b0 = &text[..text.find(&segs[1].2).unwrap()];
    let tail = &before_b0[before_b0.rfind("a102.m4s").unwrap()..];
    assert!(tail.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    let map = attrs(tags(&lines, "EXT-X-MAP").last().unwrap())["URI"].clone();
    assert_ne!(map, "init.mp4");
    assert!(
        tail.contains(&format!("#EXT-X-MAP:URI=\"{map}\"")),
        "{text}"
    );
    assert_eq!(get_body(&edge, &map).await, &b"init-B"[..]);
    assert_eq!(get_body(&edge, "init.mp4").await, &b"init-A"[..]);
    // The origin ended the stream: so does the edge, with no preload hint.
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    assert!(!text.contains("PRELOAD-HINT"));
}

async fn get_body(edge: &Node, file: &str) -> Bytes {
    let r = get(&edge.url(&format!("/live/ext/v/{file}"))).await;
    assert_eq!(r.status, 200, "{file}");
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_opens_an_origin_that_requires_one() {
    // nginx stands in for a foreign https origin (h2 by ALPN) that requires mutual TLS,
    // serving ffmpeg's HLS output.
    let pki = tempdir("mtls-pki");
    let _ = test_pki(&pki);
    let (cert, key) = client_cert(&pki);
    let www = tempdir("mtls-www");
    let _ff = ffmpeg_hls(&www, 60);
    let nginx = start_nginx_mtls(&tempdir("mtls-nginx"), &www, &pki).await;
    let upstream = format!(
        "[upstream]\norigins = [\"https://{}/live\"]\nca_file = \"{}\"\n",
        nginx.addr,
        pki.join("ca.pem").display()
    );
    let with_cert = Node::start(
        "mtls-edge",
        &format!(
            "{upstream}client_cert = \"{}\"\nclient_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let without = Node::start("mtls-edge-nocert", &upstream);
    let url = with_cert.url("/live/plain/v/index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(&url).await;
        if r.status == 200 && segments(&parse_playlist(&r.text())).len() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no playlist through mutual TLS: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let lines = parse_playlist(&get(&url).await.text());
    let (_, _, uri) = segments(&lines).last().cloned().unwrap();
    let seg = get(&with_cert.url(&format!("/live/plain/v/{uri}"))).await;
    assert_eq!(seg.status, 200);
    assert!(seg.body.len() > 1000);
    // Without the certificate nginx refuses the edge; viewers get 503.
    assert_eq!(
        get(&without.url("/live/plain/index.m3u8")).await.status,
        503
    );
    assert!(
        metric(
            &without,
            "estuary_upstream_requests_total",
            "result=\"status\""
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_event_playlist_is_joined_at_its_live_end() {
    let script: Script = Default::default();
    let mut pl = String::from(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:1\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init.mp4\"\n",
    );
    {
        let mut s = script.lock().unwrap();
        s.insert(
            "/live/long/index.m3u8".into(),
            b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nv/index.m3u8\n".to_vec(),
        );
        s.insert("/live/long/v/init.mp4".into(), b"init".to_vec());
        for m in 0..300 {
            pl.push_str(&format!("#EXTINF:1.000,\ns{m}.m4s\n"));
            s.insert(
                format!("/live/long/v/s{m}.m4s"),
                format!("s{m}").into_bytes(),
            );
        }
        s.insert("/live/long/v/index.m3u8".into(), pl.into_bytes());
    }
    let server = scripted_server(script).await;
    let edge = Node::start(
        "long-edge",
        &format!("[upstream]\norigins = [\"http://{server}/live\"]\ncleartext_http2 = false\n"),
    );
    let r = wait_ok(
        &edge.url("/live/long/v/index.m3u8"),
        Duration::from_secs(20),
    )
    .await;
    let segs = segments(&parse_playlist(&r.text()));
    let msns: Vec<u64> = segs.iter().map(|s| s.0).collect();
    assert_eq!(msns, (279..300).collect::<Vec<u64>>());
    assert_eq!(segs[0].2, "s279.m4s");
    // Only what is listed was pulled.
    let pulled = metric(&edge, "estuary_upstream_requests_total", "kind=\"segment\"").await;
    assert_eq!(pulled, 21.0);
    assert_eq!(
        get(&edge.url("/live/long/v/s299.m4s")).await.body,
        &b"s299"[..]
    );
    assert_eq!(get(&edge.url("/live/long/v/s100.m4s")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_listed_not_fetched_and_an_origin_ignoring_directives_is_not_hammered() {
    let script: Script = Default::default();
    {
        let mut s = script.lock().unwrap();
        s.insert(
            "/live/gap/index.m3u8".into(),
            b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nv/index.m3u8\n".to_vec(),
        );
        // LL-HLS that claims blocking reload but answers every reload at once, with a
        // part marked GAP=YES and a segment marked EXT-X-GAP (neither is served).
        s.insert(
            "/live/gap/v/index.m3u8".into(),
            b"#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART-INF:PART-TARGET=0.500\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:1.000,\ng0.m4s\n#EXT-X-GAP\n#EXTINF:1.000,\ng1.m4s\n#EXT-X-PART:DURATION=0.500,URI=\"h0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.500,URI=\"h1.m4s\",GAP=YES\n#EXTINF:1.000,\ng2.m4s\n#EXT-X-PART:DURATION=0.500,URI=\"h2.m4s\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"h3.m4s\"\n"
                .to_vec(),
        );
        for f in ["g0", "g2", "h0", "h2"] {
            s.insert(format!("/live/gap/v/{f}.m4s"), f.as_bytes().to_vec());
        }
    }
    let server = scripted_server(script).await;
    let edge = Node::start(
        "gap-edge",
        &format!("[upstream]\norigins = [\"http://{server}/live\"]\ncleartext_http2 = false\nfailover_after = \"10s\"\n"),
    );
    let url = edge.url("/live/gap/v/index.m3u8");
    let text = wait_ok(&url, Duration::from_secs(20)).await.text();
    let lines = parse_playlist(&text);
    let segs = segments(&lines);
    assert_eq!(
        segs.iter().map(|s| s.2.as_str()).collect::<Vec<_>>(),
        vec!["g0.m4s", "g1.m4s", "g2.m4s"]
    );
    assert!(
        text.contains("#EXT-X-GAP\n#EXTINF:1.000,\ng1.m4s\n"),
        "{text}"
    );
    assert!(text.contains("URI=\"h1.m4s\",GAP=YES"), "{text}");
    assert!(text.contains("URI=\"h2.m4s\",INDEPENDENT=YES"), "{text}");
    assert_eq!(get(&edge.url("/live/gap/v/g2.m4s")).await.body, &b"g2"[..]);
    assert_eq!(get(&edge.url("/live/gap/v/h2.m4s")).await.body, &b"h2"[..]);
    // Nothing was asked for what upstream marked missing.
    let failed = metric(
        &edge,
        "estuary_upstream_requests_total",
        "result=\"not_found\"",
    )
    .await;
    let before = metric(
        &edge,
        "estuary_upstream_requests_total",
        "kind=\"blocking\"",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reloads = metric(
        &edge,
        "estuary_upstream_requests_total",
        "kind=\"blocking\"",
    )
    .await
        - before;
    assert!(reloads <= 25.0, "{reloads} blocking reloads in 2 s");
    // Only the hint (h3, never served) may have answered 404.
    assert!(failed <= 1.0, "{failed} upstream 404s");
}
