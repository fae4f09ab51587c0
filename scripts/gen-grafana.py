#!/usr/bin/env python3
"""Generates config/grafana-estuary.json (run from the repository root). Edit here, not the JSON."""
import json
panels=[]; y=0; pid=1
def row(title):
    global y,pid
    panels.append({"type":"row","title":title,"id":pid,"collapsed":False,"gridPos":{"h":1,"w":24,"x":0,"y":y},"panels":[]}); pid+=1; y+=1
def ts(title, targets, unit="short", w=8, x=0, desc=""):
    global pid
    p={"type":"timeseries","title":title,"id":pid,"datasource":{"type":"prometheus","uid":"${datasource}"},
       "gridPos":{"h":8,"w":w,"x":x,"y":y},"description":desc,
       "fieldConfig":{"defaults":{"unit":unit},"overrides":[]},
       "options":{"legend":{"displayMode":"list","placement":"bottom"},"tooltip":{"mode":"multi"}},
       "targets":[{"refId":chr(65+i),"expr":e,"legendFormat":l,"datasource":{"type":"prometheus","uid":"${datasource}"}} for i,(e,l) in enumerate(targets)]}
    pid+=1; panels.append(p)
def line(specs):
    global y
    w=24//len(specs); 
    for i,s in enumerate(specs):
        ts(*s, w=w, x=i*w) if False else ts(s[0], s[1], s[2] if len(s)>2 else "short", w=w, x=i*w, desc=s[3] if len(s)>3 else "")
    y+=8
I='instance=~"$instance"'
row("Ingest")
line([
 ("Publishers connected",[(f'sum by (instance) (estuary_publishers_active{{{I}}})',"{{instance}}")]),
 ("Ingest bitrate by stream",[(f'sum by (stream) (rate(estuary_ingest_bytes_total{{{I}}}[$__rate_interval])) * 8',"{{stream}}")],"bps"),
 ("SRT round-trip time",[(f'max by (stream) (estuary_srt_rtt_milliseconds{{{I}}})',"{{stream}}")],"ms"),
])
line([
 ("SRT lost / retransmitted / dropped packets",[
   (f'sum by (stream) (rate(estuary_srt_lost_packets_total{{{I}}}[$__rate_interval]))',"lost {{stream}}"),
   (f'sum by (stream) (rate(estuary_srt_retransmitted_packets_total{{{I}}}[$__rate_interval]))',"retransmitted {{stream}}"),
   (f'sum by (stream) (rate(estuary_srt_dropped_packets_total{{{I}}}[$__rate_interval]))',"dropped {{stream}}")],"pps"),
 ("Refused and kicked publishers",[
   (f'sum by (reason) (rate(estuary_srt_rejected_total{{{I}}}[$__rate_interval]))',"srt {{reason}}"),
   (f'sum by (reason) (rate(estuary_rtmp_rejected_total{{{I}}}[$__rate_interval]))',"rtmp {{reason}}"),
   (f'sum by (protocol) (rate(estuary_publishers_kicked_total{{{I}}}[$__rate_interval]))',"kicked {{protocol}}")],"ops"),
 ("Stream errors",[(f'sum by (reason) (rate(estuary_stream_errors_total{{{I}}}[$__rate_interval]))',"{{reason}}")],"ops"),
])
row("Transcode and packaging")
line([
 ("Realtime factor per rung (below 1: falling behind)",[(f'min by (stream, rendition) (estuary_rendition_realtime_factor{{{I}}})',"{{stream}}/{{rendition}}")],"short","","Media seconds produced per wall second"),
 ("Dropped frames per rung",[(f'sum by (stream, rendition) (rate(estuary_frames_dropped_total{{{I}}}[$__rate_interval]))',"{{stream}}/{{rendition}}")],"fps"),
 ("Segments cut without a keyframe",[(f'sum by (stream, rendition) (rate(estuary_segments_cut_total{{{I}}}[$__rate_interval]))',"{{stream}}/{{rendition}}")],"ops"),
])
line([
 ("Part publish latency p50 / p99",[
   (f'histogram_quantile(0.5, sum by (rendition, le) (rate(estuary_part_publish_latency_seconds_bucket{{{I}}}[$__rate_interval])))',"p50 {{rendition}}"),
   (f'histogram_quantile(0.99, sum by (rendition, le) (rate(estuary_part_publish_latency_seconds_bucket{{{I}}}[$__rate_interval])))',"p99 {{rendition}}")],"s"),
 ("Parts and segments published",[
   (f'sum by (rendition) (rate(estuary_parts_published_total{{{I}}}[$__rate_interval]))',"parts {{rendition}}"),
   (f'sum by (rendition) (rate(estuary_segments_published_total{{{I}}}[$__rate_interval]))',"segments {{rendition}}")],"ops"),
])
row("HTTP")
line([
 ("Requests by route",[(f'sum by (route) (rate(estuary_http_requests_total{{{I}}}[$__rate_interval]))',"{{route}}")],"reqps"),
 ("Errors by route and status",[(f'sum by (route, status) (rate(estuary_http_requests_total{{{I}, status=~"[45].."}}[$__rate_interval]))',"{{route}} {{status}}")],"reqps"),
 ("Blocking wait p99",[(f'histogram_quantile(0.99, sum by (route, le) (rate(estuary_http_blocking_wait_seconds_bucket{{{I}}}[$__rate_interval])))',"{{route}}")],"s"),
])
line([
 ("Blocking-reload 503s",[(f'sum by (route) (rate(estuary_http_requests_total{{{I}, route=~"media_playlist|part", status="503"}}[$__rate_interval]))',"{{route}}")],"reqps"),
 ("Connections closed",[(f'sum by (reason) (rate(estuary_http_connections_closed_total{{{I}}}[$__rate_interval]))',"{{reason}}")],"ops"),
])
row("Cache")
line([
 ("Cache size",[(f'sum by (instance) (estuary_cache_bytes{{{I}}})',"{{instance}}")],"bytes"),
 ("Cache hit ratio",[(f'sum(rate(estuary_cache_lookups_total{{{I}, result="hit"}}[$__rate_interval])) / sum(rate(estuary_cache_lookups_total{{{I}}}[$__rate_interval]))',"hit ratio")],"percentunit"),
 ("Evictions by cause (size: cache too small)",[(f'sum by (cause) (rate(estuary_cache_evicted_total{{{I}}}[$__rate_interval]))',"{{cause}}")],"ops"),
])
row("Interaction")
line([
 ("WebSocket connections and rooms",[
   (f'sum(estuary_interact_connections{{{I}}})',"connections"),
   (f'sum(estuary_interact_rooms{{{I}}})',"rooms")]),
 ("Frames in by type",[(f'sum by (type) (rate(estuary_interact_frames_in_total{{{I}}}[$__rate_interval]))',"{{type}}")],"ops"),
 ("Deliveries and broadcasts",[
   (f'sum(rate(estuary_interact_deliveries_total{{{I}}}[$__rate_interval]))',"deliveries"),
   (f'sum(rate(estuary_interact_broadcasts_total{{{I}}}[$__rate_interval]))',"broadcasts")],"ops"),
])
line([
 ("Errors, refusals, slow consumers",[
   (f'sum by (code) (rate(estuary_interact_errors_total{{{I}}}[$__rate_interval]))',"error {{code}}"),
   (f'sum by (reason) (rate(estuary_interact_refused_total{{{I}}}[$__rate_interval]))',"refused {{reason}}"),
   (f'sum(rate(estuary_interact_slow_consumer_drops_total{{{I}}}[$__rate_interval]))',"slow consumer drops")],"ops"),
 ("Bus (Redis) errors and drops",[
   (f'sum(rate(estuary_interact_bus_errors_total{{{I}}}[$__rate_interval]))',"errors"),
   (f'sum(rate(estuary_interact_bus_dropped_total{{{I}}}[$__rate_interval]))',"dropped")],"ops"),
])
row("Config")
line([
 ("Config reloads by result (error: a bad file, the running config stays)",[(f'sum by (result) (increase(estuary_config_reloads_total{{{I}}}[$__rate_interval]))',"{{result}}")],"short"),
 ("Config generation in force",[(f'max by (instance) (estuary_config_generation{{{I}}})',"{{instance}}")],"short","","1 at start, +1 per reload that changed something; instances that differ run different configs"),
 ("Config age",[(f'time() - max by (instance) (estuary_config_loaded_timestamp_seconds{{{I}}})',"{{instance}}")],"s","","Seconds since the config in force was loaded"),
])
dash={"title":"Estuary","uid":"estuary-node","editable":True,"schemaVersion":39,"version":1,
 "tags":["estuary","live","ll-hls"],"time":{"from":"now-1h","to":"now"},"refresh":"10s",
 "description":"Estuary edge nodes: ingest, transcode, LL-HLS packaging, HTTP, cache, interaction. Generated; metric names are checked against a live node by tests/ops_metrics.rs.",
 "templating":{"list":[
   {"name":"datasource","type":"datasource","query":"prometheus","label":"Prometheus"},
   {"name":"instance","type":"query","datasource":{"type":"prometheus","uid":"${datasource}"},
    "query":{"query":"label_values(estuary_publishers_active, instance)","refId":"instance"},
    "definition":"label_values(estuary_publishers_active, instance)",
    "includeAll":True,"multi":True,"allValue":".*","current":{"text":"All","value":"$__all"},"refresh":2}]},
 "annotations":{"list":[]},"panels":panels}
json.dump(dash, open('config/grafana-estuary.json','w'), indent=2, ensure_ascii=False)
print(len(panels))
