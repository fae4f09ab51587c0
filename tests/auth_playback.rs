//! Signed playback URLs against the real binary: the token matrix (tokens minted by
//! `estuary sign` and, independently, by openssl), the token carried into every URI of
//! every playlist so players need it on the first URL only (checked by crawling, and by
//! ffprobe and ffmpeg's HLS demuxer), one cache entry for every entitled viewer, and an
//! edge that checks tokens itself while pulling from a signed origin on its own
//! credential.

mod auth_support;
mod common;
mod edge_support;

use std::time::Duration;

use auth_support::*;
use common::*;
use edge_support::*;

const WAIT: Duration = Duration::from_secs(30);

fn signed_cfg(extra: &str) -> String {
    format!("[auth]\nplayback_key = \"{KEY}\"\n[streams.paid]\nplayback = \"signed\"\n[streams.free]\n{extra}")
}

fn mv(node: &Node, token: &str) -> String {
    node.url(&format!("/live/paid/index.m3u8?__token__={}", q(token)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_matrix() {
    let node = Node::start("auth-matrix", &signed_cfg(""));
    let _p = small_publish(&node, "paid", 90);
    let valid = sign(&node, "paid", &["--ttl", "1h", "--id", "order-1"]);
    wait_ok(&mv(&node, &valid), WAIT).await;

    // No token; a public stream needs none (404: not published, not 403).
    assert_refused(
        &get(&node.url("/live/paid/index.m3u8")).await,
        "token_missing",
    );
    assert_refused(
        &get(&node.url("/live/paid/source/init.mp4")).await,
        "token_missing",
    );
    assert_eq!(get(&node.url("/live/free/index.m3u8")).await.status, 404);

    let t = now();
    let expired = sign(
        &node,
        "paid",
        &["--start", &(t - 7200).to_string(), "--ttl", "1h"],
    );
    assert_refused(&get(&mv(&node, &expired)).await, "expired");
    let later = sign(
        &node,
        "paid",
        &["--start", &(t + 3600).to_string(), "--ttl", "1h"],
    );
    assert_refused(&get(&mv(&node, &later)).await, "not_yet_valid");

    // openssl, the README's recipe: the right key plays, another key does not.
    let body = format!("exp={}~acl=/live/paid/*", t + 600);
    assert_eq!(
        get(&mv(&node, &openssl_token(KEY, &body))).await.status,
        200
    );
    let wrong = openssl_token(OTHER_KEY, &body);
    assert_refused(&get(&mv(&node, &wrong)).await, "bad_signature");
    // Several ACL entries (`!`) and wildcards, in Akamai's field order with `id`.
    let multi = openssl_token(
        KEY,
        &format!(
            "st={}~exp={}~acl=/live/other/*!/live/pa?d/*~id=u7",
            t - 5,
            t + 600
        ),
    );
    assert_eq!(get(&mv(&node, &multi)).await.status, 200);

    // Any changed field breaks the signature: a later expiry, a wider ACL.
    let exp_field = valid.split('~').find(|f| f.starts_with("exp=")).unwrap();
    let longer = valid.replace(exp_field, &format!("exp={}", t + 999_999));
    assert_refused(&get(&mv(&node, &longer)).await, "bad_signature");
    let wider = valid.replace("acl=/live/paid/*", "acl=/live/*");
    assert_refused(&get(&mv(&node, &wider)).await, "bad_signature");

    // A valid token of another stream.
    let free = sign(&node, "free", &[]);
    assert_refused(&get(&mv(&node, &free)).await, "outside_acl");

    // Bound to 127.0.0.2: refused from 127.0.0.1, played from 127.0.0.2.
    let bound = sign(&node, "paid", &["--ip", "127.0.0.2"]);
    assert_refused(&get(&mv(&node, &bound)).await, "ip_mismatch");
    let from2 = get_with(&mv(&node, &bound), Some([127, 0, 0, 2].into()), &[]).await;
    assert_eq!(from2.status, 200, "{}", from2.text());

    assert_refused(
        &get(&node.url("/live/paid/index.m3u8?__token__=junk")).await,
        "token_malformed",
    );

    // The same token in a cookie and as a path prefix.
    let cookie = format!("theme=dark; __token__={valid}");
    let r = get_with(
        &node.url("/live/paid/source/index.m3u8"),
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        !r.text().contains("__token__"),
        "a cookie needs no carrying"
    );
    let prefix = format!("/token/{}/live/paid", q(&valid).replace('~', "%7E"));
    let r = get(&node.url(&format!("{prefix}/source/index.m3u8"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Relative URIs resolve under the prefix by themselves.
    assert!(!r.text().contains("__token__"));
    let init = get(&node.url(&format!("{prefix}/source/init.mp4"))).await;
    assert_eq!(init.status, 200);
    assert_refused(
        &get(&node.url(&format!("/token/{}/live/paid/source/init.mp4", q(&free)))).await,
        "outside_acl",
    );

    for reason in [
        "token_missing",
        "expired",
        "not_yet_valid",
        "bad_signature",
        "outside_acl",
        "ip_mismatch",
        "token_malformed",
    ] {
        let n = metric(
            &node,
            "estuary_playback_refused_total",
            &format!("reason=\"{reason}\""),
        )
        .await;
        assert!(n >= 1.0, "{reason}: {n}");
    }
    assert_eq!(
        metric(
            &node,
            "estuary_playback_refused_total",
            "reason=\"bad_signature\""
        )
        .await,
        3.0
    );
}

/// Fetches `url` and checks it answers 200; returns the body text.
async fn fetch_ok(url: &str) -> String {
    let r = get(url).await;
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    r.text()
}

/// Every URI of a playlist carries the token; returns them resolved against `base`.
fn carried(base: &str, text: &str, token_q: &str) -> Vec<String> {
    let uris = all_uris(text);
    assert!(!uris.is_empty(), "{text}");
    for u in &uris {
        assert!(
            u.contains(&format!("__token__={token_q}")),
            "{u} lacks the token in\n{text}"
        );
    }
    uris.iter().map(|u| resolve(base, u)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_on_the_first_url_reaches_every_uri_and_players_play() {
    let node = Node::start("auth-carry", &signed_cfg(""));
    let _p = small_publish(&node, "paid", 90);
    let token = sign(&node, "paid", &["--ttl", "1h"]);
    let first = mv(&node, &token);
    wait_ok(&first, WAIT).await;
    wait_ok(
        &node.url(&format!(
            "/live/paid/audio/index.m3u8?__token__={}",
            q(&token)
        )),
        WAIT,
    )
    .await;
    let tq = q(&token);
    let text = fetch_ok(&first).await;
    let media = carried(&first, &text, &tq);
    assert!(media.len() >= 2, "video and audio: {media:?}");
    for m in &media {
        let text = fetch_ok(m).await;
        let uris = carried(m, &text, &tq);
        let lines = parse_playlist(&text);
        // EXT-X-MAP, parts, segments, the preload hint and rendition reports: each one
        // URL as a player builds it, fetched as such (the hint blocks until it exists).
        for tag_name in [
            "EXT-X-MAP",
            "EXT-X-PART",
            "EXT-X-PRELOAD-HINT",
            "EXT-X-RENDITION-REPORT",
        ] {
            let v = tags(&lines, tag_name);
            let a = attrs(
                v.last()
                    .unwrap_or_else(|| panic!("no {tag_name} in {text}")),
            );
            let url = resolve(m, &a["URI"]);
            let body = fetch_ok(&url).await;
            if tag_name == "EXT-X-RENDITION-REPORT" {
                carried(&url, &body, &tq);
            }
        }
        let name = |u: &str| {
            u.split('?')
                .next()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        };
        let seg = uris
            .iter()
            .find(|u| name(u).ends_with(".m4s") && !name(u).starts_with('p'))
            .unwrap_or_else(|| panic!("no segment in {text}"));
        fetch_ok(seg).await;
        // A blocking reload: the player appends _HLS_msn/_HLS_part to the URL it holds.
        let (msn, part) = next_part_target(&lines);
        let blocking = format!("{m}&_HLS_msn={msn}&_HLS_part={part}");
        let text = fetch_ok(&blocking).await;
        carried(m, &text, &tq);
        let delta = fetch_ok(&format!("{m}&_HLS_skip=YES")).await;
        carried(m, &delta, &tq);
    }

    // ffprobe and ffmpeg's HLS demuxer (ffplay's) with the token on the first URL only.
    let probe = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_type",
                "-of",
                "csv=p=0",
            ])
            .arg(&first)
            .output(),
    )
    .await
    .expect("ffprobe hung")
    .unwrap();
    let kinds = String::from_utf8_lossy(&probe.stdout).into_owned();
    assert!(
        probe.status.success() && kinds.contains("video") && kinds.contains("audio"),
        "{kinds}{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let frames = hls_frames(&first, 3).await;
    assert!(frames >= 60, "3 s at 30 fps, got {frames} frames");
    // Without the token ffmpeg gets nowhere.
    let denied = tokio::process::Command::new("ffprobe")
        .args(["-v", "error"])
        .arg(node.url("/live/paid/index.m3u8"))
        .output()
        .await
        .unwrap();
    assert!(!denied.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cached_part_serves_every_entitled_viewer() {
    let node = Node::start("auth-cache", &signed_cfg(""));
    let _p = small_publish(&node, "paid", 60);
    let a = sign(&node, "paid", &["--id", "viewer-a"]);
    let b = sign(&node, "paid", &["--id", "viewer-b"]);
    assert_ne!(a, b);
    let pl = |t: &str| node.url(&format!("/live/paid/source/index.m3u8?__token__={}", q(t)));
    wait_ok(&pl(&a), WAIT).await;
    let text = fetch_ok(&pl(&a)).await;
    let lines = parse_playlist(&text);
    let part = attrs(tags(&lines, "EXT-X-PART").first().unwrap())["URI"].clone();
    let part_a = resolve(&pl(&a), &part);
    let part_b = part_a.replace(&q(&a), &q(&b));
    assert_ne!(part_a, part_b);
    let (hits, misses) = (
        metric(&node, "estuary_cache_lookups_total", "result=\"hit\"").await,
        metric(&node, "estuary_cache_lookups_total", "result=\"miss\"").await,
    );
    let (ra, rb) = (get(&part_a).await, get(&part_b).await);
    assert_eq!((ra.status, rb.status), (200, 200));
    assert_eq!(ra.body, rb.body);
    // Both viewers were served from the one entry: two hits, no miss (a token in the key
    // would have missed for the second viewer).
    assert_eq!(
        metric(&node, "estuary_cache_lookups_total", "result=\"hit\"").await - hits,
        2.0
    );
    assert_eq!(
        metric(&node, "estuary_cache_lookups_total", "result=\"miss\"").await,
        misses
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_checks_tokens_and_pulls_a_signed_stream_on_its_own_credential() {
    const SECRET: &str = "tier-secret-0123456789";
    let origin = Node::start(
        "auth-origin",
        &format!("upstream.secret = \"{SECRET}\"\n{}", signed_cfg("")),
    );
    // The edge knows the key and signs every stream by default (it has no [streams]).
    let edge = Node::start(
        "auth-edge",
        &format!(
            "[auth]\nplayback_key = \"{KEY}\"\nplayback = \"signed\"\n{}",
            upstream_cfg(&[&origin], &format!("secret = \"{SECRET}\"\n"))
        ),
    );
    let _p = small_publish(&origin, "paid", 90);
    let token = sign(&origin, "paid", &["--ttl", "1h"]);
    wait_ok(&mv(&origin, &token), WAIT).await;
    // A viewer without a token is refused by both; the edge refuses before pulling.
    assert_refused(
        &get(&edge.url("/live/paid/index.m3u8")).await,
        "token_missing",
    );
    assert_refused(
        &get(&origin.url("/live/paid/index.m3u8")).await,
        "token_missing",
    );
    assert_eq!(
        metric(&edge, "estuary_upstream_requests_total", "").await,
        0.0
    );
    // With a token the edge plays: it pulled the signed stream with the tier secret.
    let text = wait_ok(&mv(&edge, &token), WAIT).await.text();
    let media = carried(&mv(&edge, &token), &text, &q(&token));
    let mpl = wait_ok(&media[0], WAIT).await;
    carried(&media[0], &mpl.text(), &q(&token));
    assert!(metric(&edge, "estuary_upstream_requests_total", "result=\"ok\"").await >= 2.0);
    // The edge checks the token itself: a forged or foreign one never reaches the origin.
    let forged = openssl_token(OTHER_KEY, &format!("exp={}~acl=/live/paid/*", now() + 600));
    assert_refused(&get(&mv(&edge, &forged)).await, "bad_signature");
    let free = sign(&origin, "free", &[]);
    assert_refused(&get(&mv(&edge, &free)).await, "outside_acl");
    // The tier secret lets a node pull without a viewer token.
    assert_eq!(
        get_auth(&origin.url("/live/paid/index.m3u8"), SECRET)
            .await
            .status,
        200
    );
}
