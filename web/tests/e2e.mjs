// End-to-end check of the player and front pages in real Chromium (Debian's, driven by
// playwright-core) against a running node that is receiving a live stream.
//
// Run by tests/e2e_browser.rs; by hand:
//   ESTUARY_URL=http://127.0.0.1:8080 STREAM=demo HOST_TOKEN=… VIEWER_TOKEN=… \
//   OUT_DIR=/tmp/shots node web/tests/e2e.mjs
//
// Checks: the front page lists the stream; the player plays (currentTime advances, no
// fatal hls.js error) in low-latency mode with LL-HLS parts; over the interaction channel,
// chat crosses pages both ways, a host poll appears on the viewer's video once playback
// reaches its program date time and a vote moves the tally, a reaction floats up on the
// other page, and a question is asked, upvoted and answered. Every check runs, each
// failure is printed, and the exit status is 1 if any failed. A missing interaction
// endpoint is a failure, not a skip.
import fs from "node:fs";
import path from "node:path";
import { launch, loopbackContext, waitFor, median, sleep, assertLoopback } from "./lib.mjs";

const BASE = (process.env.ESTUARY_URL || "").replace(/\/+$/, "");
const STREAM = process.env.STREAM || "demo";
const HOST_TOKEN = process.env.HOST_TOKEN || "";
const VIEWER_TOKEN = process.env.VIEWER_TOKEN || "";
const OUT_DIR = process.env.OUT_DIR || ".";
const PLAY_SECS = Number(process.env.PLAY_SECS || 20);
const HARD_LIMIT_MS = Number(process.env.HARD_LIMIT_MS || 150000);

if (!BASE) {
  console.error("ESTUARY_URL is required (e.g. http://127.0.0.1:8080)");
  process.exit(2);
}
assertLoopback(BASE);
fs.mkdirSync(OUT_DIR, { recursive: true });

// The whole script is bounded: a stuck browser must not hang the test.
const hard = setTimeout(() => {
  console.error(`FAIL - whole script exceeded ${HARD_LIMIT_MS} ms`);
  process.exit(1);
}, HARD_LIMIT_MS);
hard.unref();

const results = [];
const measures = {};
async function check(name, fn) {
  const t0 = Date.now();
  try {
    const detail = await fn();
    results.push({ name, ok: true });
    console.log(`ok - ${name}${detail ? ": " + detail : ""} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push({ name, ok: false, error: String(e && e.message ? e.message : e) });
    console.log(`FAIL - ${name}: ${e && e.message ? e.message : e}`);
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}
const stats = (page) => page.evaluate(() => window.estuary.stats());

const browser = await launch();
let exitCode = 1;
try {
  const viewerCtx = await loopbackContext(browser);
  const hostCtx = await loopbackContext(browser);
  const logs = [];
  const watchUrl = (q) => `${BASE}/watch/${encodeURIComponent(STREAM)}${q}`;

  // ------------------------------------------------------------ front page
  const home = await viewerCtx.newPage();
  home.on("pageerror", (e) => logs.push(`home pageerror: ${e.message}`));
  await check("front page lists the stream as live, with its SRT URL and player link", async () => {
    await home.goto(`${BASE}/`, { waitUntil: "load", timeout: 15000 });
    const card = home.locator(`article[data-stream="${STREAM}"]`);
    await card.locator(".badge.live").waitFor({ timeout: 10000 });
    const text = await card.innerText();
    assert(text.includes("srt://"), `no SRT URL on the card: ${text}`);
    const href = await card.locator("a.button").getAttribute("href");
    assert(href === `/watch/${STREAM}`, `player link is ${href}`);
    await home.screenshot({ path: path.join(OUT_DIR, "home.png") });
    return `card: ${text.replace(/\s+/g, " ").slice(0, 120)}`;
  });
  await home.close();

  // ------------------------------------------------------------ player
  const viewer = await viewerCtx.newPage();
  const host = await hostCtx.newPage();
  for (const [name, p] of [["viewer", viewer], ["host", host]]) {
    p.on("pageerror", (e) => logs.push(`${name} pageerror: ${e.message}`));
    p.on("console", (m) => {
      if (m.type() === "error" && logs.length < 200) logs.push(`${name} console: ${m.text()}`);
    });
  }
  await viewer.goto(watchUrl(VIEWER_TOKEN ? `?token=${encodeURIComponent(VIEWER_TOKEN)}` : ""), { waitUntil: "load" });
  await host.goto(watchUrl(`?role=host&token=${encodeURIComponent(HOST_TOKEN)}`), { waitUntil: "load" });

  let playStart = null;
  await check("the page starts playing with hls.js", async () => {
    const s = await waitFor("playback to start", async () => {
      const s = await stats(viewer);
      return s.playing && s.currentTime > 0.5 ? s : null;
    }, { timeoutMs: 30000, everyMs: 250 });
    playStart = { wall: Date.now(), currentTime: s.currentTime };
    assert(s.engine.startsWith("hls.js"), `engine is ${s.engine}`);
    return `${s.engine}, rendition ${s.rendition}`;
  });

  // ------------------------------------------------------------ interaction
  let wsOk = false;
  await check("interaction channel /live/{stream}/events is open on both pages", async () => {
    try {
      await waitFor("WebSocket open on both pages", async () => {
        const [a, b] = await Promise.all([viewer.evaluate(() => window.estuary.wsStatus), host.evaluate(() => window.estuary.wsStatus)]);
        return a === "open" && b === "open" && (await host.evaluate(() => window.estuary.framesSeen.welcome > 0));
      }, { timeoutMs: 10000 });
    } catch (e) {
      // Say why: an HTTP probe of the endpoint tells "not wired" (404) from other trouble.
      let probe = "";
      try {
        const r = await fetch(`${BASE}/live/${STREAM}/events`);
        probe = ` GET /live/${STREAM}/events answered ${r.status} ${(await r.text()).slice(0, 80)}`;
      } catch (pe) {
        probe = ` probe failed: ${pe.message}`;
      }
      throw new Error(`the interaction endpoint is missing or refuses connections;${probe}`);
    }
    const role = await host.evaluate(() => document.getElementById("role-badge").textContent);
    assert(/host/.test(role), `host page role badge says ${role}`);
    assert(await host.locator("#host").isVisible(), "host controls are hidden on the host page");
    assert(!(await viewer.locator("#host").isVisible()), "host controls are visible to a viewer");
    wsOk = true;
    return `host: ${role}`;
  });

  await check("chat: a message sent from one page appears on the other (both ways)", async () => {
    assert(wsOk, "no interaction channel");
    const a = `hello from the viewer ${Date.now() % 100000}`;
    await viewer.fill("#chat-input", a);
    await viewer.click("#chat-form button[type=submit]");
    await host.locator("#chat-list .msg .text", { hasText: a }).waitFor({ timeout: 5000 });
    const b = `welcome, says the host ${Date.now() % 100000}`;
    await host.fill("#chat-input", b);
    await host.press("#chat-input", "Enter");
    await viewer.locator("#chat-list .msg .text", { hasText: b }).waitFor({ timeout: 5000 });
    const who = await host.locator("#chat-list .msg", { hasText: a }).locator(".who").innerText();
    return `sender shown as ${who}`;
  });

  await check("poll: host creates it, it appears on the viewer's video at its program date time, a vote moves the tally", async () => {
    assert(wsOk, "no interaction channel");
    await host.fill("#poll-question", "Which codec next?");
    await host.fill("#poll-options", "AV1\nHEVC\nVVC");
    const created = Date.now();
    await host.click("#poll-create");
    const overlay = viewer.locator("#poll[data-state=open]");
    await overlay.waitFor({ timeout: 10000 });
    const id = await overlay.getAttribute("data-poll");
    const shown = await viewer.evaluate((id) => window.estuary.pollShown[id], id);
    assert(shown, "no record of the overlay being shown");
    // Shown when playback reached the poll's program date time, not when the frame came.
    assert(shown.playingDate !== null && shown.playingDate >= shown.start, `overlay shown before playback reached the poll: ${JSON.stringify(shown)}`);
    measures.poll_frame_to_overlay_ms = shown.at - shown.arrived;
    measures.poll_from_daterange = shown.fromDateRange;
    await viewer.click("#poll .poll-option[data-option='1']");
    await host.locator("#poll .poll-option[data-option='1'][data-votes='1']").waitFor({ timeout: 5000 });
    await viewer.locator("#poll .poll-option[data-option='1'][data-votes='1']").waitFor({ timeout: 5000 });
    const mine = await viewer.locator("#poll .poll-option.mine").getAttribute("data-option");
    assert(mine === "1", `viewer's own choice marked on option ${mine}`);
    return `poll ${id}: overlay ${shown.at - shown.arrived} ms after the frame (${shown.at - created} ms after the click), gate from ${shown.fromDateRange ? "EXT-X-DATERANGE" : "event stamp"}; tally 0→1 on both pages`;
  });

  await check("reactions: a reaction from the viewer floats up on the host's page", async () => {
    assert(wsOk, "no interaction channel");
    const emoji = await viewer.locator("#reactions button").first().getAttribute("data-emoji");
    await viewer.locator("#reactions button").first().click();
    await waitFor("reaction counts on the host page", () => host.evaluate((e) => (window.estuary.reactionTotals[e] || 0) >= 1 && window.estuary.floatersSpawned > 0, emoji), { timeoutMs: 5000 });
    const badge = await host.locator(`#reactions button[data-emoji="${emoji}"] .count`).innerText();
    return `${emoji} counted ${badge} on the host page`;
  });

  await check("Q&A: a viewer asks, the host upvotes and answers, the viewer sees it", async () => {
    assert(wsOk, "no interaction channel");
    await viewer.click(".tabs button[data-tab=qa]");
    await host.click(".tabs button[data-tab=qa]");
    const q = `Which part duration is this? ${Date.now() % 100000}`;
    await viewer.fill("#qa-input", q);
    await viewer.press("#qa-input", "Enter");
    const hq = host.locator("#qa-list .question", { hasText: q });
    await hq.waitFor({ timeout: 5000 });
    await hq.locator("button.up").click();
    await viewer.locator("#qa-list .question", { hasText: q }).locator(".votes", { hasText: "1" }).waitFor({ timeout: 5000 });
    await host.locator("#qa-list .question", { hasText: q }).locator("button", { hasText: "Answered" }).click();
    await viewer.locator("#qa-list .question.answered", { hasText: q }).waitFor({ timeout: 5000 });
    await viewer.click(".tabs button[data-tab=chat]");
    return "asked, upvoted to 1, marked answered";
  });

  // ------------------------------------------------------------ play on, then measure
  const samples = [];
  await check(`playback continues for ${PLAY_SECS} s with LL-HLS parts and no fatal error`, async () => {
    assert(playStart, "playback never started");
    const until = playStart.wall + PLAY_SECS * 1000;
    for (let i = 0; i < PLAY_SECS + 60 && Date.now() < until; i++) {
      const s = await stats(viewer);
      samples.push({ t: Date.now() - playStart.wall, latency: s.latency, g2gMs: s.g2gMs, currentTime: s.currentTime });
      await sleep(Math.min(1000, Math.max(0, until - Date.now())));
    }
    const s = await stats(viewer);
    const wall = (Date.now() - playStart.wall) / 1000;
    const advanced = s.currentTime - playStart.currentTime;
    measures.play_wall_s = +wall.toFixed(2);
    measures.current_time_advanced_s = +advanced.toFixed(2);
    measures.latency_s = s.latency;
    measures.target_latency_s = s.targetLatency;
    measures.g2g_ms = s.g2gMs;
    const tail = samples.filter((x) => x.t >= (PLAY_SECS - 5) * 1000);
    measures.latency_median_last5s = median(tail.map((x) => x.latency));
    measures.g2g_median_last5s_ms = median(tail.map((x) => x.g2gMs));
    measures.parts_loaded = s.partsLoaded;
    measures.segments_loaded = s.fragsLoaded;
    measures.part_target_s = s.partTarget;
    measures.rendition = s.rendition;
    measures.dropped_frames = `${s.droppedFrames}/${s.totalFrames}`;
    measures.non_fatal_errors = s.errors.filter((e) => !e.fatal).map((e) => e.details);
    assert(s.fatalErrors.length === 0, `fatal hls.js errors: ${JSON.stringify(s.fatalErrors)}`);
    assert(advanced > wall * 0.8, `currentTime advanced ${advanced.toFixed(2)} s in ${wall.toFixed(2)} s of wall time`);
    assert(s.lowLatencyMode === true, "hls.js is not in lowLatencyMode");
    assert(s.canBlockReload === true, "hls.js did not see CAN-BLOCK-RELOAD=YES");
    assert(s.partListLength > 0, "the media playlist hls.js holds has no EXT-X-PART");
    assert(s.partsLoaded > 0, `hls.js loaded no parts (${s.fragsLoaded} whole segments)`);
    assert(s.playingDate !== null, "hls.js has no playingDate (no EXT-X-PROGRAM-DATE-TIME?)");
    return `currentTime +${advanced.toFixed(2)} s in ${wall.toFixed(2)} s; ${s.partsLoaded} parts and ${s.fragsLoaded} segments loaded`;
  });

  await check("the page shows latency and rendition", async () => {
    const lat = await viewer.locator("#stat-latency").innerText();
    const rend = await viewer.locator("#stat-rendition").innerText();
    assert(/\d/.test(lat), `latency chip says ${lat}`);
    assert(rend && rend !== "–", `rendition chip says ${rend}`);
    const opts = await viewer.locator("#quality option").allInnerTexts();
    assert(opts.length >= 2, `quality menu has ${opts.length} entries`);
    await viewer.selectOption("#quality", "0");
    await waitFor("manual level", () => viewer.evaluate(() => window.estuary.hls.autoLevelEnabled === false), { timeoutMs: 3000 });
    await viewer.selectOption("#quality", "-1");
    return `latency ${lat}, rendition ${rend}, menu ${JSON.stringify(opts)}`;
  });

  await viewer.screenshot({ path: path.join(OUT_DIR, "viewer.png") });
  await host.screenshot({ path: path.join(OUT_DIR, "host.png") });

  const failed = results.filter((r) => !r.ok);
  console.log("MEASURES " + JSON.stringify(measures));
  console.log(
    `hls.js live latency after ${measures.play_wall_s} s: ${measures.latency_s?.toFixed?.(3)} s (median of last 5 s ${measures.latency_median_last5s?.toFixed?.(3)} s); ` +
      `wall clock minus playingDate: ${measures.g2g_ms} ms (median ${measures.g2g_median_last5s_ms} ms). ` +
      "The PDT is stamped at ingest arrival, so this excludes encoder and SRT latency."
  );
  console.log(`screenshots: ${path.join(OUT_DIR, "home.png")}, viewer.png, host.png`);
  if (logs.length) console.log("page log:\n  " + logs.slice(0, 40).join("\n  "));
  console.log(`browser: ${results.length - failed.length} passed, ${failed.length} failed`);
  exitCode = failed.length ? 1 : 0;
} catch (e) {
  console.log(`FAIL - script error: ${e && e.stack ? e.stack : e}`);
  exitCode = 1;
} finally {
  await browser.close().catch(() => {});
}
process.exit(exitCode);
