//! TEMPORARY scratch (helper 2): runs the in-process interaction server for a browser check.
mod interact_support;
use estuary::interact::Role;
#[tokio::test]
async fn scratch_ws_server() {
    if std::env::var_os("SCRATCH_WS").is_none() {
        return;
    }
    let node = interact_support::Node::start("").await.unwrap();
    println!(
        "SCRATCH http={} host={} viewer={}",
        node.http,
        interact_support::token(Role::Host, "alice"),
        interact_support::token(Role::Viewer, "bob")
    );
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(300)).await;
}
