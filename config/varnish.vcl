# Varnish in front of an Estuary edge (or origin): a CDN tier for LL-HLS.
#
# - Blocking playlist reloads (_HLS_msn/_HLS_part) name a future playlist: the node
#   answers them "public, max-age=…" and Varnish's waiting list collapses every player
#   blocked on the same URL into one backend request. Query parameters are sorted so
#   players that order them differently share it.
# - Parts, segments and init segments are immutable ("max-age, immutable"): cached, and a
#   request for the preload-hinted part is likewise collapsed while the node holds it.
# - Plain playlist reloads are "no-cache" and go through (hit-for-miss, not collapsed).
# - Errors (404, 5xx) are never cached: a part that is not there yet will be soon.
# - Varnish adds the Age header itself.
#
# Run: varnishd -F -a :80 -f config/varnish.vcl -s malloc,256m
# The backend below is the node's HTTP listener; tests rewrite the port.
vcl 4.1;

import std;

backend estuary {
    .host = "127.0.0.1";
    .port = "8080";
    # A blocking reload or hinted part is held up to hls.blocking_timeout (6 s).
    .first_byte_timeout = 10s;
    .between_bytes_timeout = 10s;
    .connect_timeout = 2s;
}

sub vcl_recv {
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # The interaction channel is a WebSocket; APIs and metrics are not cached.
    if (req.url ~ "^/live/[^/]+/events" ) {
        return (pipe);
    }
    if (req.url !~ "^/live/") {
        return (pass);
    }
    unset req.http.Cookie;
    set req.url = std.querysort(req.url);
    return (hash);
}

sub vcl_pipe {
    if (req.http.upgrade) {
        set bereq.http.upgrade = req.http.upgrade;
        set bereq.http.connection = req.http.connection;
    }
}

sub vcl_backend_response {
    if (beresp.status >= 400) {
        set beresp.ttl = 0s;
        set beresp.grace = 0s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    if (bereq.url ~ "\.m3u8") {
        # A stale playlist is worse than a slow one.
        set beresp.grace = 0s;
    } else {
        set beresp.grace = 2s;
    }
    return (deliver);
}
