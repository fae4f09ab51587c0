// Measures latency in real Chromium: opens a player page that exposes
// window.estuary.stats() (the Estuary watch page, or the baseline page of
// scripts/latency-browser.sh), waits for playback, lets it settle, then samples every
// 250 ms for --secs seconds:
//   g2g     = Date.now() - hls.playingDate  (wall clock minus the program date time on
//             screen; what that includes depends on who stamped the PDT)
//   latency = hls.latency                   (live edge minus playhead, as hls.js sees it)
// and, every frame shown, the in-picture capture clock (web/tests/clock-reader.js, when the
// source draws one: `--demo` or scripts/clock-filter.sh):
//   clock   = wall clock when the frame is shown - capture time read from the picture
//             (camera to eye: encoder, SRT, packaging, HTTP, player buffer and decode).
// Prints one JSON line: RESULT {...} with medians and percentiles.
//
//   node web/tests/latency.mjs --url http://127.0.0.1:8080/watch/demo?q=source --secs 60 --label passthrough
import { fileURLToPath } from "node:url";
import { launch, openPage, waitFor, median, percentile, sleep, assertLoopback } from "./lib.mjs";

const CLOCK_READER = fileURLToPath(new URL("./clock-reader.js", import.meta.url));

function arg(name, dflt) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const URL_ = arg("url");
const SECS = Number(arg("secs", "60"));
const SETTLE = Number(arg("settle", "5"));
const LABEL = arg("label", "run");
if (!URL_) {
  console.error("--url is required");
  process.exit(2);
}
assertLoopback(URL_);
const hard = setTimeout(() => {
  console.error("latency.mjs: exceeded its time limit");
  process.exit(1);
}, (SECS + SETTLE + 90) * 1000);
hard.unref();

const browser = await launch();
const countBy = (xs) => xs.reduce((m, x) => ((m[x] = (m[x] || 0) + 1), m), {});

let code = 1;
try {
  const page = await openPage(browser, URL_, [CLOCK_READER]);
  await waitFor("playback", async () => {
    const s = await page.evaluate(() => window.estuary && window.estuary.stats());
    return s && s.playing && s.currentTime > 0.3 && s.playingDate ? s : null;
  }, { timeoutMs: 40000, everyMs: 250 });
  await sleep(SETTLE * 1000);
  const first = await page.evaluate(() => window.estuary.stats());
  await page.evaluate(() => window.__clock.take());
  const clock = [];
  let clockFrames = 0, clockUnreadable = 0;
  const g2g = [];
  const lat = [];
  const t0 = Date.now();
  const n = Math.round((SECS * 1000) / 250);
  for (let i = 0; i < n && Date.now() - t0 < SECS * 1000 + 5000; i++) {
    const s = await page.evaluate(() => window.estuary.stats());
    if (s.g2gMs !== null) g2g.push(s.g2gMs);
    if (s.latency !== null) lat.push(s.latency * 1000);
    const c = await page.evaluate(() => window.__clock.take());
    clock.push(...c.samples);
    clockFrames += c.frames;
    clockUnreadable += c.unreadable;
    const next = t0 + (i + 1) * 250;
    await sleep(Math.max(0, next - Date.now()));
  }
  const last = await page.evaluate(() => window.estuary.stats());
  const wall = (Date.now() - t0) / 1000;
  const round = (x) => (x === null ? null : Math.round(x));
  const out = {
    label: LABEL,
    url: URL_,
    engine: last.engine,
    rendition: last.rendition,
    samples: g2g.length,
    window_s: +wall.toFixed(1),
    g2g_median_ms: round(median(g2g)),
    g2g_p10_ms: round(percentile(g2g, 10)),
    g2g_p90_ms: round(percentile(g2g, 90)),
    hls_latency_median_ms: round(median(lat)),
    clock_median_ms: round(median(clock)),
    clock_p10_ms: round(percentile(clock, 10)),
    clock_p90_ms: round(percentile(clock, 90)),
    clock_frames: clockFrames,
    clock_unreadable: clockUnreadable,
    target_latency_s: last.targetLatency,
    part_target_s: last.partTarget,
    parts_loaded: last.partsLoaded - first.partsLoaded,
    segments_loaded: last.fragsLoaded - first.fragsLoaded,
    playback_rate_ok: +((last.currentTime - first.currentTime) / wall).toFixed(3),
    dropped_frames: last.droppedFrames - (first.droppedFrames || 0),
    stalls: (last.stalls || 0) - (first.stalls || 0),
    fatal_errors: last.fatalErrors.length,
    // Each stall in the window (see watch.js), and the player's other errors by kind.
    stall_log: (last.stallLog || []).filter((x) => x.t >= t0),
    errors: countBy((last.errors || []).filter((e) => e.t >= t0).map((e) => e.details)),
  };
  console.log("RESULT " + JSON.stringify(out));
  code = out.samples > 0 && out.fatal_errors === 0 ? 0 : 1;
} catch (e) {
  console.error(`latency.mjs (${LABEL}): ${e && e.stack ? e.stack : e}`);
} finally {
  await browser.close().catch(() => {});
}
process.exit(code);
