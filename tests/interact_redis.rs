//! Two nodes sharing rooms through a real `redis-server` that the test starts: a message
//! and a vote on node A are seen on node B, tallies agree, history survives a node, votes
//! count once per user across nodes, and rooms stay responsive through Redis outages.

mod interact_support;

use std::{net::TcpListener, process::Stdio, time::Duration};

use anyhow::{Context, Result};
use estuary::interact::Role;
use interact_support::{one_ack_one_duplicate, token, Node};
use serde_json::{json, Value};

/// A redis-server on a free loopback port, killed on drop.
struct Redis {
    child: std::process::Child,
    port: u16,
}

/// A redis-server on `port`, loopback only, with no persistence.
fn spawn_redis(port: u16) -> Result<std::process::Child> {
    std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("redis-server must be installed")
}

impl Redis {
    fn start() -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = spawn_redis(port)?;
        // Bounded wait until it accepts connections.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Self { child, port });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("redis-server did not start")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_nodes_share_chat_votes_and_history() -> Result<()> {
    let redis = Redis::start()?;
    let bus = format!("bus = \"redis://127.0.0.1:{}\"", redis.port);
    let a = Node::start(&bus).await?;
    let b = Node::start(&bus).await?;
    let host = token(Role::Host, "host");
    let mut on_b = b.connect("show", None).await?;
    on_b.expect("state").await?;
    // Chat on A is seen on B.
    let mut alice = a
        .connect("show", Some(&token(Role::Viewer, "alice")))
        .await?;
    let r = alice
        .request(json!({"type":"chat","text":"hello from A"}), "1")
        .await?;
    assert_eq!(r["type"], "ack", "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let m = on_b.expect("chat").await?;
    assert_eq!(m["text"], "hello from A");
    assert_eq!(m["id"], id.as_str());
    // A poll opened through A's API; votes on both nodes; both see the same tallies.
    let (status, body) = a
        .http(
            "POST",
            "/api/streams/show/polls",
            Some(&host),
            r#"{"question":"Q?","options":["x","y"],"duration_secs":60}"#,
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let poll = serde_json::from_str::<Value>(&body)?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    on_b.expect("poll_opened").await?;
    let mut bob = b.connect("show", Some(&token(Role::Viewer, "bob"))).await?;
    assert_eq!(
        bob.request(json!({"type":"vote","poll": poll, "option": 1}), "v")
            .await?["type"],
        "ack"
    );
    assert_eq!(
        alice
            .request(json!({"type":"vote","poll": poll, "option": 1}), "v")
            .await?["type"],
        "ack"
    );
    // The same user voting again through the other node replaces, not adds.
    let mut bob_on_a = a.connect("show", Some(&token(Role::Viewer, "bob"))).await?;
    assert_eq!(
        bob_on_a
            .request(json!({"type":"vote","poll": poll, "option": 0}), "v2")
            .await?["type"],
        "ack"
    );
    let want = |f: &Value| f["type"] == "poll_tally" && f["tallies"] == json!([1, 1]);
    on_b.expect_where("tally [1,1] on B", want).await?;
    alice.expect_where("tally [1,1] on A", want).await?;
    // Q&A upvotes are counted once across nodes.
    let q = alice
        .request(json!({"type":"ask","text":"Shared?"}), "q")
        .await?;
    let qid = q["id"].as_str().unwrap().to_owned();
    on_b.expect("question_asked").await?;
    assert_eq!(
        bob.request(json!({"type":"upvote","question": qid}), "u")
            .await?["type"],
        "ack"
    );
    assert_eq!(
        bob_on_a
            .request(json!({"type":"upvote","question": qid}), "u2")
            .await?["code"],
        "duplicate"
    );
    // Losing node A loses no history: a fresh node C has it from Redis.
    drop(alice);
    drop(bob_on_a);
    let mut a = a;
    a.stop().await;
    let c = Node::start(&bus).await?;
    let mut late = c.connect("show", None).await?;
    let hist = late.expect("history").await?;
    assert_eq!(hist["messages"][0]["text"], "hello from A");
    let state = late.expect("state").await?;
    assert_eq!(state["polls"][0]["tallies"], json!([1, 1]));
    assert_eq!(state["questions"][0]["votes"], 1);
    Ok(())
}

#[tokio::test]
async fn node_recovers_when_redis_restarts() -> Result<()> {
    let mut redis = Redis::start()?;
    let port = redis.port;
    let bus = format!("bus = \"redis://127.0.0.1:{port}\"");
    let a = Node::start(&bus).await?;
    let mut alice = a
        .connect("show", Some(&token(Role::Viewer, "alice")))
        .await?;
    alice.expect("state").await?;
    let r = alice
        .request(json!({"type":"chat","text":"before"}), "1")
        .await?;
    assert_eq!(r["type"], "ack", "{r}");
    // Redis goes away and comes back on the same port, empty.
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let child = spawn_redis(port)?;
    redis.child = child;
    // Bounded: chat is accepted again within a few seconds, with no reconnect by the
    // client and no restart of the node.
    assert!(
        alice.chat_until_ack().await?,
        "chat never recovered after redis restarted"
    );
    Ok(())
}

#[tokio::test]
async fn moderation_reaches_nodes_started_later() -> Result<()> {
    let redis = Redis::start()?;
    let bus = format!("bus = \"redis://127.0.0.1:{}\"", redis.port);
    let a = Node::start(&bus).await?;
    let mut host = a.connect("show", Some(&token(Role::Host, "host"))).await?;
    host.expect("state").await?;
    let r = host
        .request(json!({"type":"ban","user":"mallory"}), "b")
        .await?;
    assert_eq!(r["type"], "ack", "{r}");
    let r = host
        .request(json!({"type":"slow_mode","secs":7}), "s")
        .await?;
    assert_eq!(r["type"], "ack", "{r}");
    // A node that starts after the decisions loads them from Redis.
    let c = Node::start(&bus).await?;
    let mut mallory = c
        .connect("show", Some(&token(Role::Viewer, "mallory")))
        .await?;
    let state = mallory.expect("state").await?;
    assert_eq!(state["slow_mode_secs"], 7, "{state}");
    let r = mallory
        .request(json!({"type":"chat","text":"spam"}), "m")
        .await?;
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["code"], "muted", "{r}");
    // Lifting the ban on A reaches C's room through the bus and Redis alike.
    let r = host
        .request(json!({"type":"unban","user":"mallory"}), "u")
        .await?;
    assert_eq!(r["type"], "ack", "{r}");
    let d = Node::start(&bus).await?;
    let mut again = d
        .connect("show", Some(&token(Role::Viewer, "mallory")))
        .await?;
    again.expect("state").await?;
    let r = again
        .request(json!({"type":"chat","text":"sorry"}), "m2")
        .await?;
    assert_eq!(r["type"], "ack", "{r}");
    Ok(())
}

/// One user voting through node A and node B at the same moment counts once; so does an
/// upvote. The Lua scripts make it atomic across nodes.
#[tokio::test]
async fn votes_count_once_per_user_across_nodes() -> Result<()> {
    let redis = Redis::start()?;
    let bus = format!(
        "bus = \"redis://127.0.0.1:{}\"\npoll_vote_change = false",
        redis.port
    );
    let a = Node::start(&bus).await?;
    let b = Node::start(&bus).await?;
    let poll = a.open_poll("show", &token(Role::Host, "host")).await?;
    let carol = token(Role::Viewer, "carol");
    let mut on_a = a.connect("show", Some(&carol)).await?;
    let mut on_b = b.connect("show", Some(&carol)).await?;
    on_b.expect_where("poll on B", |f| {
        f["type"] == "poll_opened" || f["type"] == "state" && f["polls"][0]["id"].is_string()
    })
    .await?;
    // The same user votes through both nodes before either reads its reply.
    on_a.send_ref(json!({"type":"vote","poll": poll, "option": 0}), "a")
        .await?;
    on_b.send_ref(json!({"type":"vote","poll": poll, "option": 1}), "b")
        .await?;
    one_ack_one_duplicate(&on_a.reply("a").await?, &on_b.reply("b").await?);
    let one = |f: &Value| {
        f["type"] == "poll_tally"
            && f["tallies"]
                .as_array()
                .is_some_and(|t| t.iter().filter_map(Value::as_u64).sum::<u64>() == 1)
    };
    on_a.expect_where("tally of one vote on A", one).await?;
    on_b.expect_where("tally of one vote on B", one).await?;

    let q = on_a
        .request(json!({"type":"ask","text":"Counted once?"}), "q")
        .await?;
    let qid = q["id"].as_str().unwrap().to_owned();
    on_b.expect("question_asked").await?;
    on_a.send_ref(json!({"type":"upvote","question": qid}), "ua")
        .await?;
    on_b.send_ref(json!({"type":"upvote","question": qid}), "ub")
        .await?;
    one_ack_one_duplicate(&on_a.reply("ua").await?, &on_b.reply("ub").await?);
    let c = Node::start(&bus).await?;
    let mut late = c.connect("show", None).await?;
    let state = late.expect("state").await?;
    assert_eq!(state["questions"][0]["votes"], 1, "{state}");
    let tally: u64 = state["polls"][0]["tallies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(tally, 1, "{state}");
    Ok(())
}

/// While Redis is down for seconds, every action gets a prompt error frame (the room never
/// stalls waiting for a reconnect); when Redis is back, chat is accepted again.
#[tokio::test]
async fn rooms_stay_responsive_through_a_long_redis_outage() -> Result<()> {
    let mut redis = Redis::start()?;
    let port = redis.port;
    let a = Node::start(&format!("bus = \"redis://127.0.0.1:{port}\"")).await?;
    // A host: exempt from the chat rate limit, so every refusal is the bus's.
    let mut alice = a.connect("show", Some(&token(Role::Host, "alice"))).await?;
    alice.expect("state").await?;
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    // Four seconds without Redis: each request is answered (within the client's bounded
    // wait), with an error while the bus is away.
    let outage = std::time::Instant::now();
    let mut i = 0;
    while outage.elapsed() < Duration::from_secs(4) {
        i += 1;
        let r = alice
            .request(
                json!({"type":"chat","text":format!("during {i}")}),
                &format!("d{i}"),
            )
            .await?;
        assert_eq!(r["type"], "error", "{r}");
        assert_eq!(r["code"], "unavailable", "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.child = spawn_redis(port)?;
    assert!(
        alice.chat_until_ack().await?,
        "chat never recovered after the outage"
    );
    Ok(())
}
