//! End to end: ffmpeg (libsrt, OBS's path) publishes over SRT; an HTTP client, our own
//! playlist parser and ffprobe check the LL-HLS output of the real binary.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::*;

const STREAMS: &str = "[streams.demo]\n[streams.secret]\npassphrase = \"0123456789abcdef\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_play_blocking_reload_preload_and_delta() {
    let node = Node::start("play", STREAMS);
    // A 1 s GOP gives 1 s segments, so a delta update has something to skip soon.
    let _pub = ffmpeg_publish(&srt_url(&node, "#!::r=live/demo,m=publish", None), 40, 30);

    // Multivariant: a passthrough variant with a separate AAC audio group.
    let mv = wait_ok(&node.url("/live/demo/index.m3u8"), Duration::from_secs(20)).await;
    assert_eq!(mv.header("content-type"), "application/vnd.apple.mpegurl");
    assert_eq!(mv.header("cache-control"), "no-cache");
    assert_eq!(mv.header("access-control-allow-origin"), "*");
    let lines = parse_playlist(&mv.text());
    let media = attrs(tag(&lines, "EXT-X-MEDIA"));
    assert_eq!(media["TYPE"], "AUDIO");
    assert_eq!(media["URI"], "audio/index.m3u8");
    let group = media["GROUP-ID"].clone();
    let inf = attrs(tag(&lines, "EXT-X-STREAM-INF"));
    assert_eq!(inf["RESOLUTION"], "1280x720");
    assert_eq!(inf["AUDIO"], group);
    let codecs = inf["CODECS"].to_ascii_lowercase();
    assert!(
        codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"),
        "{codecs}"
    );
    let bw: u64 = inf["BANDWIDTH"].parse().unwrap();
    assert!(bw > 500_000 && bw < 20_000_000, "BANDWIDTH {bw}");
    assert!(inf.contains_key("AVERAGE-BANDWIDTH") && inf.contains_key("FRAME-RATE"));
    assert!(lines.contains(&Line::Uri("source/index.m3u8".into())));

    // Media playlist, tag by tag.
    let url = node.url("/live/demo/source/index.m3u8");
    let pl = get(&url).await;
    assert_eq!(pl.status, 200);
    assert_eq!(pl.header("cache-control"), "no-cache");
    let lines = parse_playlist(&pl.text());
    let version: u32 = tag(&lines, "EXT-X-VERSION").parse().unwrap();
    assert!(version >= 9);
    let target: f64 = tag(&lines, "EXT-X-TARGETDURATION").parse().unwrap();
    let part_target: f64 = attrs(tag(&lines, "EXT-X-PART-INF"))["PART-TARGET"]
        .parse()
        .unwrap();
    assert!(
        (0.2..0.25).contains(&part_target),
        "PART-TARGET {part_target}"
    );
    let sc = attrs(tag(&lines, "EXT-X-SERVER-CONTROL"));
    assert_eq!(sc["CAN-BLOCK-RELOAD"], "YES");
    assert!(sc["PART-HOLD-BACK"].parse::<f64>().unwrap() >= 3.0 * part_target - 1e-9);
    assert!(sc["CAN-SKIP-UNTIL"].parse::<f64>().unwrap() >= 6.0 * target);
    assert_eq!(attrs(tag(&lines, "EXT-X-MAP"))["URI"], "init.mp4");
    assert!(!tags(&lines, "EXT-X-PROGRAM-DATE-TIME").is_empty());
    let hint = attrs(tag(&lines, "EXT-X-PRELOAD-HINT"));
    assert_eq!(hint["TYPE"], "PART");
    let report = attrs(tag(&lines, "EXT-X-RENDITION-REPORT"));
    assert_eq!(report["URI"], "../audio/index.m3u8");
    assert!(report.contains_key("LAST-MSN") && report.contains_key("LAST-PART"));
    let parts = tags(&lines, "EXT-X-PART");
    assert!(!parts.is_empty());
    for p in &parts {
        let a = attrs(p);
        let d: f64 = a["DURATION"].parse().unwrap();
        assert!(
            d > 0.0 && d <= part_target + 1e-9,
            "part {p} longer than PART-TARGET"
        );
    }
    for (_, d, _) in segments(&lines) {
        assert!(d.round() <= target, "segment of {d}s over target {target}");
    }

    // A segment is its parts, byte for byte, and decodes.
    let segs = segments(&lines);
    let by_seg = segment_parts(&lines);
    let (msn, seg_dur, seg_uri, seg_parts) = segs
        .iter()
        .rev()
        .find_map(|(m, d, u)| {
            let parts = &by_seg.iter().find(|(sm, p)| sm == m && !p.is_empty())?.1;
            Some((*m, *d, u.clone(), parts.clone()))
        })
        .expect("a complete segment with listed parts");
    let seg = get(&node.url(&format!("/live/demo/source/{seg_uri}"))).await;
    assert_eq!(seg.status, 200);
    assert!(seg.header("cache-control").contains("max-age="));
    assert!(seg.header("cache-control").contains("immutable"));
    let mut joined = Vec::new();
    assert!(
        attrs_independent(&seg_parts[0]),
        "first part of a segment is INDEPENDENT=YES"
    );
    for a in &seg_parts {
        let r = get(&node.url(&format!("/live/demo/source/{}", a["URI"]))).await;
        assert_eq!(r.status, 200, "{}", a["URI"]);
        joined.extend_from_slice(&r.body);
    }
    assert_eq!(joined, seg.body.to_vec(), "segment {msn} != its parts");
    let init = get(&node.url("/live/demo/source/init.mp4")).await;
    assert_eq!(init.status, 200);
    assert_eq!(init.header("content-type"), "video/mp4");
    let file = node.dir.join("seg.mp4");
    std::fs::write(&file, [init.body.to_vec(), seg.body.to_vec()].concat()).unwrap();
    let probe = ffprobe(&file);
    assert!(probe.starts_with("h264,1280,720,"), "{probe}");
    let frames: u32 = probe.rsplit(',').nth(1).unwrap().parse().unwrap();
    let expected = (seg_dur * 30.0).round() as u32;
    assert!(
        frames.abs_diff(expected) <= 1,
        "{seg_dur} s at 30 fps is ~{expected} frames: {probe}"
    );

    // Audio rendition decodes too.
    let alines = parse_playlist(&get(&node.url("/live/demo/audio/index.m3u8")).await.text());
    let (_, _, auri) = segments(&alines).last().cloned().unwrap();
    let ainit = get(&node.url("/live/demo/audio/init.mp4")).await;
    let aseg = get(&node.url(&format!("/live/demo/audio/{auri}"))).await;
    let afile = node.dir.join("audio.mp4");
    std::fs::write(&afile, [ainit.body.to_vec(), aseg.body.to_vec()].concat()).unwrap();
    assert!(ffprobe(&afile).starts_with("aac,"));

    // Blocking reload: ask for the part after the newest; the answer waits for it, and
    // lists the part the preload hint named.
    let asked = std::time::SystemTime::now();
    let pl = get(&url).await;
    let lines = parse_playlist(&pl.text());
    let hinted = attrs(tag(&lines, "EXT-X-PRELOAD-HINT"))["URI"].clone();
    let (m, p) = next_part_target(&lines);
    let t0 = Instant::now();
    let blocked = get(&format!("{url}?_HLS_msn={m}&_HLS_part={p}")).await;
    let waited = t0.elapsed();
    assert_eq!(blocked.status, 200);
    // The stream API stamps each rendition's latest part with its publication time (the
    // parked-request benchmark's zero): the part waited for did not exist when the
    // playlist above was asked for, so the newest is stamped after that, and not later
    // than now.
    let api: serde_json::Value =
        serde_json::from_slice(&get(&node.url("/api/streams/demo")).await.body).unwrap();
    let src = &api["renditions"]["source"];
    let ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            * 1e3
    };
    let stamp = src["part_published_unix_ms"].as_f64().expect("a stamp");
    assert!(
        stamp >= ms(asked) && stamp <= ms(std::time::SystemTime::now()),
        "{src}"
    );
    assert!(
        src["hint"].as_str().is_some_and(|h| h.starts_with('p')),
        "{src}"
    );
    let bl = parse_playlist(&blocked.text());
    let listed = tags(&bl, "EXT-X-PART")
        .iter()
        .any(|x| attrs(x)["URI"] == hinted);
    assert!(
        listed,
        "blocking reload returned a playlist without {hinted}"
    );
    assert!(waited < Duration::from_secs(3), "blocked {waited:?}");
    // Each `_HLS_msn`/`_HLS_part` URL has one answer: the playlist as that part was
    // published, byte for byte, even once later parts exist (the node keeps the last few).
    // Asked again right after the next part appeared, the same URL answers the same.
    let mut same = false;
    for _ in 0..3 {
        let lines = parse_playlist(&get(&url).await.text());
        let (m, p) = next_part_target(&lines);
        let first = get(&format!("{url}?_HLS_msn={m}&_HLS_part={p}")).await;
        let (m2, p2) = next_part_target(&parse_playlist(&first.text()));
        let later = get(&format!("{url}?_HLS_msn={m2}&_HLS_part={p2}")).await;
        let again = get(&format!("{url}?_HLS_msn={m}&_HLS_part={p}")).await;
        assert_eq!((first.status, later.status, again.status), (200, 200, 200));
        assert_ne!(later.body, first.body);
        if again.body == first.body {
            same = true;
            break;
        }
    }
    assert!(same, "a blocking reload URL answered with a later playlist");

    // Preload hint: GET the hinted part before it exists; it arrives complete. Every hint
    // names a part that will exist, whether or not a segment ends before it.
    let hinted = attrs(tag(&bl, "EXT-X-PRELOAD-HINT"))["URI"].clone();
    let part = get(&node.url(&format!("/live/demo/source/{hinted}"))).await;
    assert_eq!(part.status, 200, "hinted {hinted}");
    assert!(part.body.len() > 100);
    // A part is moof + mdat; one that opens a segment may lead with styp.
    let at = if &part.body[4..8] == b"styp" {
        u32::from_be_bytes(part.body[0..4].try_into().unwrap()) as usize
    } else {
        0
    };
    assert_eq!(
        &part.body[at + 4..at + 8],
        b"moof",
        "a part starts with moof"
    );
    // A part that is neither published nor hinted is not waited for.
    let n: u64 = hinted[1..hinted.len() - 4].parse().unwrap();
    let far = get(&node.url(&format!("/live/demo/source/p{}.m4s", n + 50))).await;
    assert_eq!(far.status, 404);

    // Bad delivery directives are refused at once.
    for q in [
        "_HLS_part=1",
        "_HLS_msn=abc",
        "_HLS_msn=999999",
        "_HLS_msn=1&_HLS_part=99999",
        "_HLS_skip=maybe",
    ] {
        let r = get(&format!("{url}?{q}")).await;
        assert_eq!(r.status, 400, "{q}");
    }

    // Delta update once more than CAN-SKIP-UNTIL is listed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = get(&format!("{url}?_HLS_skip=YES")).await;
        let dl = parse_playlist(&d.text());
        if let Some(s) = tags(&dl, "EXT-X-SKIP").first() {
            let skipped: u64 = attrs(s)["SKIPPED-SEGMENTS"].parse().unwrap();
            assert!(skipped > 0);
            let full = parse_playlist(&get(&url).await.text());
            let fs = segments(&full);
            let ds = segments(&dl);
            assert!(ds.len() < fs.len());
            // The delta's segments are the full playlist's tail, with the same MSNs.
            let tail: Vec<_> = fs.iter().filter(|s| s.0 >= ds[0].0).map(|s| s.0).collect();
            let dm: Vec<_> = ds.iter().map(|s| s.0).collect();
            assert_eq!(
                &tail[..dm.len().min(tail.len())],
                &dm[..dm.len().min(tail.len())]
            );
            break;
        }
        assert!(Instant::now() < deadline, "no EXT-X-SKIP after 30 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // HTTP/2 over cleartext (prior knowledge) serves the same playlist.
    let h2 = get_h2c(&url).await;
    assert_eq!(h2.status, 200);
    assert_eq!(h2.version, hyper::Version::HTTP_2);

    // Metrics saw it all.
    assert!(
        metric(
            &node,
            "estuary_parts_published_total",
            "rendition=\"source\""
        )
        .await
            > 10.0
    );
    assert!(metric(&node, "estuary_segments_published_total", "stream=\"demo\"").await > 2.0);
    assert!(metric(&node, "estuary_part_publish_latency_seconds_count", "").await > 10.0);
    assert!(metric(&node, "estuary_ingest_bytes_total", "stream=\"demo\"").await > 100_000.0);
    assert_eq!(metric(&node, "estuary_publishers_active", "").await, 1.0);
    assert!(metric(&node, "estuary_cache_bytes", "").await > 100_000.0);
    assert!(
        metric(
            &node,
            "estuary_http_requests_total",
            "route=\"part\",status=\"200\""
        )
        .await
            >= 1.0
    );
    assert_eq!(get(&node.url("/healthz")).await.status, 200);
    assert_eq!(get(&node.url("/readyz")).await.status, 200);
}

fn attrs_independent(a: &std::collections::BTreeMap<String, String>) -> bool {
    a.get("INDEPENDENT").map(String::as_str) == Some("YES")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_publishes_a_test_pattern_over_srt() {
    // No [streams.demo] in the config: --demo adds it.
    let node = Node::start_with_args("demo", "", &["--demo"]);
    let mv = wait_ok(&node.url("/live/demo/index.m3u8"), Duration::from_secs(30)).await;
    let lines = parse_playlist(&mv.text());
    let inf = attrs(tag(&lines, "EXT-X-STREAM-INF"));
    // High profile 4:2:0, which every browser decodes.
    assert!(
        inf["CODECS"].to_ascii_lowercase().starts_with("avc1.64"),
        "{}",
        inf["CODECS"]
    );
    assert_eq!(inf["RESOLUTION"], "1280x720");
    let pl = parse_playlist(&get(&node.url("/live/demo/source/index.m3u8")).await.text());
    let (_, _, uri) = segments(&pl).last().cloned().unwrap();
    let init = get(&node.url("/live/demo/source/init.mp4")).await;
    let seg = get(&node.url(&format!("/live/demo/source/{uri}"))).await;
    let f = node.dir.join("demo.mp4");
    std::fs::write(&f, [init.body.to_vec(), seg.body.to_vec()].concat()).unwrap();
    assert!(ffprobe(&f).starts_with("h264,1280,720,"));
    assert!(node.log().contains("demo publisher connected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_are_placed_on_the_video_timeline_as_dateranges() {
    let secret = "e2e-secret-0123456789abcdef";
    let node = Node::start(
        "daterange",
        &format!("[interact]\ntoken_secret = \"{secret}\"\n[streams.demo]\n"),
    );
    let _pub = ffmpeg_publish(&srt_url(&node, "demo", None), 40, 30);
    wait_ok(&node.url("/live/demo/index.m3u8"), Duration::from_secs(20)).await;
    // The CLI mints the host token from the same config.
    let token = mint_token(&node, "host", "ops", "Ops", "demo");
    let post = |path: &str, body: &str| {
        let o = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/stderr",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
            ])
            .args(["-H", &format!("Authorization: Bearer {token}"), "-d", body])
            .arg(node.url(path))
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, body) = post(
        "/api/streams/demo/polls",
        r#"{"question":"Tea or coffee?","options":["Tea","Coffee"],"duration_secs":60}"#,
    );
    assert_eq!(code, "201", "{body}");
    let url = node.url("/live/demo/source/index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(5);
    let (lines, dr) = loop {
        let lines = parse_playlist(&get(&url).await.text());
        if let Some(d) = tags(&lines, "EXT-X-DATERANGE").first().map(|d| attrs(d)) {
            break (lines, d);
        }
        assert!(
            Instant::now() < deadline,
            "no EXT-X-DATERANGE after creating a poll"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dr["CLASS"], "com.estuary.poll");
    assert!(dr["ID"].starts_with("poll-"));
    let start = humantime::parse_rfc3339(&dr["START-DATE"]).unwrap();
    // Stamped with the timeline of the latest part, so it lies within the listed media.
    let pdts: Vec<_> = tags(&lines, "EXT-X-PROGRAM-DATE-TIME")
        .into_iter()
        .map(|t| humantime::parse_rfc3339(t).unwrap())
        .collect();
    assert!(start >= pdts[0], "poll starts before the playlist");
    assert!(start <= std::time::SystemTime::now());
    // The delta update carries it too, and so does the audio playlist.
    assert!(get(&format!("{url}?_HLS_skip=YES"))
        .await
        .text()
        .contains("EXT-X-DATERANGE"));
    // The audio playlist takes it on its own next part, which may come a little later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !get(&node.url("/live/demo/audio/index.m3u8"))
        .await
        .text()
        .contains("com.estuary.poll")
    {
        assert!(Instant::now() < deadline, "no poll in the audio playlist");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let poll_id = dr["ID"].trim_start_matches("poll-").to_owned();
    let (code, body) = post(&format!("/api/streams/demo/polls/{poll_id}/close"), "");
    assert_eq!(code, "200", "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = get(&url).await.text();
        if text.contains("END-DATE=") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no END-DATE after closing the poll"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = Node::start("slowloris", "[streams.demo]\n");
    let mut s = tokio::net::TcpStream::connect(node.http).await.unwrap();
    // Half a request, then nothing: the server closes it after its header timeout.
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("connection still open after 20 s")
        .unwrap_or(0);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "closed too early: {waited:?}"
    );
    // Closed, possibly after a 408.
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    // Other clients are served meanwhile and after.
    assert_eq!(get(&node.url("/healthz")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_and_gstreamer_play_the_playlists() {
    let node = Node::start("players", "[streams.demo]\n");
    let _pub = ffmpeg_publish(&srt_url(&node, "demo", None), 40, 30);
    let url = node.url("/live/demo/index.m3u8");
    wait_ok(&url, Duration::from_secs(20)).await;
    // ffmpeg's HLS demuxer (what ffplay and many players use): 4 s of video from the
    // multivariant playlist, frame by frame.
    let frames = hls_frames(&url, 4).await;
    assert!(
        (110..=130).contains(&frames),
        "4 s at 30 fps, got {frames} frames"
    );
    // GStreamer's hlsdemux2 (adaptivedemux2): decode video and audio to EOS after a
    // bounded number of buffers each; any error makes gst-launch fail.
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("gst-launch-1.0")
            .args(["-q", "uridecodebin3", &format!("uri={url}"), "name=d"])
            .args([
                "d.",
                "!",
                "video/x-raw",
                "!",
                "queue",
                "!",
                "fakesink",
                "num-buffers=60",
            ])
            .args([
                "d.",
                "!",
                "audio/x-raw",
                "!",
                "queue",
                "!",
                "fakesink",
                "num-buffers=60",
            ])
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
}

/// curl as a client: single byte ranges on media (206, 416, Accept-Ranges), HEAD, 405
/// with Allow, and 400 for an HTTP/1.1 request without Host (raw TCP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_head_allow_and_host() {
    use std::io::{Read, Write};
    let node = Node::start("ranges", "[streams.demo]\n");
    let _p = ffmpeg_publish(&srt_url(&node, "demo", None), 20, 30);
    // The multivariant playlist appears once every rendition has a complete segment.
    wait_ok(&node.url("/live/demo/index.m3u8"), Duration::from_secs(20)).await;
    let pl = get(&node.url("/live/demo/source/index.m3u8")).await;
    let (_, _, seg) = segments(&parse_playlist(&pl.text()))
        .last()
        .cloned()
        .unwrap();
    let url = node.url(&format!("/live/demo/source/{seg}"));
    let whole = get(&url).await;
    assert_eq!(whole.header("accept-ranges"), "bytes");
    let len = whole.body.len();
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-D", "-", "-o", "/dev/stdout"])
            .args(args)
            .arg(&url)
            .output()
            .unwrap();
        out.stdout
    };
    let split = |raw: &[u8]| {
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (
            String::from_utf8_lossy(&raw[..at]).to_lowercase(),
            raw[at..].to_vec(),
        )
    };
    let (h, body) = split(&curl(&["-r", "100-1099"]));
    assert!(h.starts_with("http/1.1 206"), "{h}");
    assert!(
        h.contains(&format!("content-range: bytes 100-1099/{len}")),
        "{h}"
    );
    assert_eq!(body, whole.body[100..1100].to_vec());
    let (h, body) = split(&curl(&["-r", "-500"]));
    assert!(h.starts_with("http/1.1 206"), "{h}");
    assert_eq!(body, whole.body[len - 500..].to_vec());
    let (h, body) = split(&curl(&["-r", &format!("{}-", len + 10)]));
    assert!(h.starts_with("http/1.1 416"), "{h}");
    assert!(h.contains(&format!("content-range: bytes */{len}")), "{h}");
    assert!(body.is_empty());
    let (h, body) = split(&curl(&["-r", "0-9,20-29"]));
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert_eq!(body.len(), len);
    // HEAD: the headers of a GET, and no body (curl -I prints the headers alone).
    let head = Command::new("curl")
        .args(["-s", "-I"])
        .arg(&url)
        .output()
        .unwrap()
        .stdout;
    let (h, body) = split(&head);
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(h.contains(&format!("content-length: {len}")), "{h}");
    assert!(body.is_empty());
    let (h, _) = split(&curl(&["-X", "DELETE"]));
    assert!(h.starts_with("http/1.1 405"), "{h}");
    assert!(h.contains("allow: get, head, options"), "{h}");

    let raw = |req: &str| {
        let mut s = std::net::TcpStream::connect(node.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    };
    let r = raw("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

/// Silent sockets cannot lock viewers out: connections that send nothing are closed after
/// `http.idle_timeout`, and at the connection cap the longest-idle one makes room for a
/// newcomer at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_silent_connections_are_closed() {
    use std::io::Read;
    let node = Node::start(
        "idleconn",
        "http.idle_timeout = \"2s\"\nhttp.max_connections = 40\n",
    );
    let mut silent: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(node.http).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // At the cap, a real request still gets in: the longest-idle socket is shed.
    let t0 = Instant::now();
    assert_eq!(get(&node.url("/healthz")).await.status, 200);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(
        metric(
            &node,
            "estuary_http_connections_closed_total",
            "reason=\"shed\""
        )
        .await
            >= 1.0
    );
    // The rest are closed once idle: each read ends (EOF or reset) well within 5 s.
    let start = Instant::now();
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => {}
            Ok(_) => panic!("a silent socket got bytes"),
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "a silent socket is still open after {:?}",
                start.elapsed()
            ),
        }
    }
    assert!(
        metric(
            &node,
            "estuary_http_connections_closed_total",
            "reason=\"idle\""
        )
        .await
            >= 30.0
    );
}

/// The node tells HTTP/2 from HTTP/1.1 by the first bytes on a plain connection. A client
/// whose first packet holds only part of the HTTP/2 preface, or only the first letter of
/// an HTTP/1.1 method that shares it, is still served in its own version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_version_is_told_from_split_first_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = Node::start("versions", "");
    let _ = wait_ok(&node.url("/healthz"), Duration::from_secs(20)).await;

    // HTTP/2 with prior knowledge, the preface in two writes 300 ms apart.
    let mut s = tokio::net::TcpStream::connect(node.http).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut out = b"\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
                                                         // HEADERS, END_STREAM | END_HEADERS, stream 1: GET http://127.0.0.1/healthz (HPACK:
                                                         // static :method GET, :scheme http, then :path and :authority as literals).
    let mut block = vec![0x82, 0x86, 0x44, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x41, 9]);
    block.extend_from_slice(b"127.0.0.1");
    let len = block.len() as u32;
    out.extend_from_slice(&[
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        1,
        5,
        0,
        0,
        0,
        1,
    ]);
    out.extend_from_slice(&block);
    s.write_all(&out).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = Vec::new();
        loop {
            let mut head = [0u8; 9];
            s.read_exact(&mut head)
                .await
                .expect("the node closed the HTTP/2 connection");
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0; len];
            s.read_exact(&mut payload).await.unwrap();
            seen.push(head[3]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            assert_ne!(head[3], 7, "GOAWAY after frames {seen:?}");
            if head[3] == 1 && stream == 1 {
                return payload[0];
            }
        }
    })
    .await
    .expect("no HTTP/2 response within 10 s");
    assert_eq!(status, 0x88, "HPACK :status 200");

    // HTTP/1.1 whose first packet is "P", the preface's first letter too.
    let mut s = tokio::net::TcpStream::connect(node.http).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(
        b"OST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut resp))
        .await
        .expect("no HTTP/1.1 response within 10 s")
        .unwrap();
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 "), "{resp}");

    // And an ordinary HTTP/1.1 client sends two requests on one connection.
    let mut s = tokio::net::TcpStream::connect(node.http).await.unwrap();
    for close in ["keep-alive", "close"] {
        s.write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: {close}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    }
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut resp))
        .await
        .expect("no HTTP/1.1 responses within 10 s")
        .unwrap();
    let resp = String::from_utf8_lossy(&resp);
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 2, "{resp}");
}

/// On SIGTERM a request in flight is answered, not cut: a blocking playlist reload parked
/// when the signal comes still gets its HTTP answer, an idle keep-alive connection is
/// closed, and the node exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_requests_in_flight_and_closes_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut node = Node::start(
        "graceful",
        "hls.blocking_timeout = \"2s\"\n[streams.demo]\n",
    );
    let _pub = ffmpeg_publish(&srt_url(&node, "demo", None), 40, 60);
    let url = node.url("/live/demo/source/index.m3u8");
    let pl = wait_ok(&url, Duration::from_secs(20)).await;
    let lines = parse_playlist(&pl.text());
    let last = segments(&lines).last().map_or(
        tag(&lines, "EXT-X-MEDIA-SEQUENCE").parse::<u64>().unwrap(),
        |s| s.0,
    );

    // Parked: a reload for the first part two segments on, which takes seconds to come.
    let mut parked = tokio::net::TcpStream::connect(node.http).await.unwrap();
    parked
        .write_all(
            format!(
                "GET /live/demo/source/index.m3u8?_HLS_msn={}&_HLS_part=0 HTTP/1.1\r\nHost: x\r\n\r\n",
                last + 2
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // An idle keep-alive connection that has had its answer.
    let mut idle = tokio::net::TcpStream::connect(node.http).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    node.signal("TERM");
    // The idle connection is closed by the node.
    let r = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection is still open after SIGTERM: {r:?}"
    );
    // The parked request gets a whole answer: the playlist or the blocking timeout's 503.
    let mut got = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), parked.read(&mut buf))
            .await
            .expect("no answer to the parked request")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.1 503"),
        "the parked request was not answered before the node closed it: {text:?}"
    );
    let status = node.wait_exit(Duration::from_secs(10)).expect("node exits");
    assert!(status.success(), "{status:?}\n{}", node.log());
}
