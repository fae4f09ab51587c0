//! Content steering against real nodes: an origin and two edges on loopback, each edge
//! a pathway (`a`, `b`), every node configured with the same `[steering]`. The stream is
//! signed, so the viewer's token must follow it into every pathway and the manifest.
//! Checks the multivariant playlist (pathways, groups, URIs that play on the other
//! edge), the steering manifests, and that a drained edge (`POST /admin/drain`) and then
//! a stopped one move last, as each node sees it.

mod auth_support;
mod common;
mod edge_support;

use std::time::{Duration, Instant};

use auth_support::{get_with, q, sign, KEY};
use common::*;
use edge_support::*;
use serde_json::Value;

const SECRET: &str = "steering-tier-secret-0123";
const ADMIN: &str = "steering-admin-token-0123";
const WAIT: Duration = Duration::from_secs(30);

/// Every node signs every stream with the same key, as a tier must.
fn signed() -> String {
    format!("[auth]\nplayback_key = \"{KEY}\"\nplayback = \"signed\"\n")
}

type Attrs = std::collections::BTreeMap<String, String>;

/// The steering tag and the variants by pathway: (PATHWAY-ID, attributes, URI).
fn pathways(text: &str) -> (Attrs, Vec<(String, Attrs, String)>) {
    let lines = parse_playlist(text);
    let tag = attrs(common::tag(&lines, "EXT-X-CONTENT-STEERING"));
    let mut out = Vec::new();
    let mut it = lines.iter();
    while let Some(l) = it.next() {
        if let Line::Tag(n, v) = l {
            if n == "EXT-X-STREAM-INF" {
                let a = attrs(v);
                let Some(Line::Uri(u)) = it.next() else {
                    panic!("no URI after EXT-X-STREAM-INF: {text}")
                };
                out.push((a["PATHWAY-ID"].clone(), a, u.clone()));
            }
        }
    }
    (tag, out)
}

async fn manifest(url: &str) -> Value {
    let r = get(url).await;
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("cache-control"), "no-store");
    serde_json::from_slice(&r.body).unwrap()
}

fn priority(m: &Value) -> Vec<&str> {
    m["PATHWAY-PRIORITY"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// Polls a steering manifest until its priority is `want`, within [`WAIT`].
async fn wait_priority(url: &str, want: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = manifest(url).await;
        if priority(&m) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: {m} never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathways_carry_the_token_and_a_drained_or_stopped_edge_goes_last() {
    let (pa, pb) = (free_port(), free_port());
    let origin = Node::start(
        "steer-origin",
        &format!(
            "upstream.secret = \"{SECRET}\"\n{}[streams.demo]\n{}",
            signed(),
            steering_cfg(pa, pb, "", "")
        ),
    );
    let edge = |tag: &str, port: u16, id: &str| {
        Node::start_at(
            tag,
            port,
            &format!(
                "admin.token = \"{ADMIN}\"\ndrain_timeout = \"60s\"\n{}{}{}",
                signed(),
                upstream_cfg(&[&origin], &format!("secret = \"{SECRET}\"\n")),
                steering_cfg(pa, pb, id, "")
            ),
        )
    };
    let mut a = edge("steer-a", pa, "a");
    let b = edge("steer-b", pb, "b");
    assert_eq!((a.http.port(), b.http.port()), (pa, pb));
    let _pub = small_publish(&origin, "demo", 120);
    let token = sign(&origin, "demo", &["--ttl", "1h"]);
    let tq = format!("__token__={}", q(&token));
    let mv_a = a.url(&format!("/live/demo/index.m3u8?{tq}"));
    let text = wait_ok(&mv_a, WAIT).await.text();

    // Edge a: its own pathway first, relative; b's variants point at edge b, token on.
    let (tag, variants) = pathways(&text);
    assert_eq!(tag["SERVER-URI"], format!("steering.json?{tq}"), "{text}");
    assert_eq!(tag["PATHWAY-ID"], "a");
    let ids: Vec<&str> = variants.iter().map(|(p, _, _)| p.as_str()).collect();
    assert!(ids.contains(&"a") && ids.contains(&"b"), "{text}");
    assert_eq!(ids.iter().filter(|p| **p == "a").count() * 2, ids.len());
    for (p, at, uri) in &variants {
        let twin = variants
            .iter()
            .find(|(q2, t, _)| q2 != p && t["STABLE-VARIANT-ID"] == at["STABLE-VARIANT-ID"])
            .expect("the same variant on the other pathway");
        assert_ne!(
            twin.1["AUDIO"], at["AUDIO"],
            "each pathway has its own audio group"
        );
        if p == "a" {
            assert!(!uri.starts_with("http"), "{uri}");
            let r = wait_ok(&a.url(&format!("/live/demo/{uri}")), WAIT).await;
            assert!(r.text().contains("#EXT-X-PART:"), "{}", r.text());
        } else {
            let want = format!("http://127.0.0.1:{pb}/live/demo/");
            assert!(
                uri.starts_with(&want) && uri.ends_with(&format!("?{tq}")),
                "{uri}"
            );
            // It plays from edge b with the same token.
            let r = wait_ok(uri, WAIT).await;
            assert!(r.text().contains("#EXT-X-PART:"), "{}", r.text());
        }
    }
    let media: Vec<String> = parse_playlist(&text)
        .into_iter()
        .filter_map(|l| match l {
            Line::Tag(n, v) if n == "EXT-X-MEDIA" => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(media.len(), 2, "one audio rendition per pathway: {text}");
    let b_audio = media
        .iter()
        .map(|m| attrs(m))
        .find(|m| m["URI"].starts_with("http"))
        .unwrap();
    assert_eq!(wait_ok(&b_audio["URI"], WAIT).await.status, 200);

    // A path-prefix token goes into b's URIs as a prefix; a cookie one as a query.
    let seg = q(&token).replace('~', "%7E");
    let path_mv = get(&a.url(&format!("/token/{seg}/live/demo/index.m3u8"))).await;
    assert_eq!(path_mv.status, 200, "{}", path_mv.text());
    let (tag, variants) = pathways(&path_mv.text());
    assert_eq!(tag["SERVER-URI"], "steering.json");
    let b_uri = &variants.iter().find(|v| v.0 == "b").unwrap().2;
    assert!(
        b_uri.starts_with(&format!("http://127.0.0.1:{pb}/token/")),
        "{b_uri}"
    );
    assert_eq!(get(b_uri).await.status, 200, "{b_uri}");
    let cookie = format!("__token__={}", q(&token));
    let cookie_mv = get_with(
        &a.url("/live/demo/index.m3u8"),
        None,
        &[("cookie", &cookie)],
    )
    .await;
    let (_, variants) = pathways(&cookie_mv.text());
    let b_uri = &variants.iter().find(|v| v.0 == "b").unwrap().2;
    assert!(b_uri.ends_with(&format!("?{tq}")), "{b_uri}");
    assert_eq!(get(b_uri).await.status, 200, "{b_uri}");

    // A node of the tier pulling gets the plain playlist; a viewer of the origin (no
    // pathway of its own) starts on the first healthy pathway, every URI absolute.
    let plain = get_auth(&origin.url("/live/demo/index.m3u8"), SECRET).await;
    assert!(!plain.text().contains("PATHWAY-ID"), "{}", plain.text());
    let at_origin = get(&origin.url(&format!("/live/demo/index.m3u8?{tq}")))
        .await
        .text();
    let (tag, variants) = pathways(&at_origin);
    assert_eq!(tag["PATHWAY-ID"], "a");
    assert!(
        variants
            .iter()
            .all(|v| v.2.starts_with("http://127.0.0.1:")),
        "{at_origin}"
    );

    // The manifests: each edge puts itself first, the viewer's current pathway first.
    let steer = |n: &Node, extra: &str| n.url(&format!("/live/demo/steering.json?{tq}{extra}"));
    let m = manifest(&steer(&a, "")).await;
    assert_eq!(m["VERSION"], 1);
    assert_eq!(m["TTL"], 1);
    assert_eq!(m["RELOAD-URI"], format!("steering.json?{tq}"));
    assert_eq!(priority(&m), ["a", "b"]);
    assert_eq!(priority(&manifest(&steer(&b, "")).await), ["b", "a"]);
    let on_a = "&_HLS_pathway=a&_HLS_throughput=5000000";
    assert_eq!(priority(&manifest(&steer(&b, on_a)).await), ["a", "b"]);
    assert_eq!(priority(&manifest(&steer(&origin, "")).await), ["a", "b"]);
    let refused = get(&a.url("/live/demo/steering.json")).await;
    assert_eq!(refused.status, 403, "the manifest is behind the token too");

    // Drain edge a, with an interaction viewer holding it open: it goes last everywhere.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/live/demo/events", a.http))
        .await
        .expect("interaction viewer on edge a");
    let drained = request_auth(hyper::Method::POST, &a.url("/admin/drain"), ADMIN)
        .await
        .status;
    assert_eq!(drained, 202, "drain accepted");
    assert_eq!(priority(&manifest(&steer(&a, on_a)).await), ["b", "a"]);
    wait_priority(&steer(&b, on_a), &["b", "a"]).await;
    wait_priority(&steer(&origin, on_a), &["b", "a"]).await;
    let health = "pathway=\"a\"";
    let draining = |v: f64| v == 1.0;
    wait_metric_until(
        &b,
        "estuary_steering_pathway_health",
        health,
        draining,
        WAIT,
    )
    .await;
    let (tag, _) = pathways(&get(&mv_a).await.text());
    assert_eq!(
        tag["PATHWAY-ID"], "b",
        "a draining node starts new viewers elsewhere"
    );

    // The last viewer leaves: edge a exits; its peers find it down, still last.
    let _ = ws.close(None).await;
    assert!(
        a.wait_exit(WAIT).is_some(),
        "edge a did not exit after its drain"
    );
    wait_metric(&b, "estuary_steering_pathway_health", health, 2.0, WAIT).await;
    wait_metric(
        &origin,
        "estuary_steering_pathway_health",
        health,
        2.0,
        WAIT,
    )
    .await;
    assert_eq!(priority(&manifest(&steer(&b, on_a)).await), ["b", "a"]);
}
