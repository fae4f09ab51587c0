// Content steering in real Chromium: hls.js plays the watch page of one edge (pathway
// --from, reached at --from-host), then the test stops that edge; hls.js must move to the
// other pathway (--to, at --to-host) and keep playing.
//
// Protocol with the caller (tests/e2e_steering_browser.rs), one line each on stdout/stdin:
//   stdout "PLAYING {...}"  playback runs on --from and a steering manifest was loaded
//   stdin  "killed"         the caller stopped the --from edge
//   stdout "RESULT {...}"   what happened in the --secs after the kill
//
//   node web/tests/steering.mjs --url http://127.0.0.1:PA/watch/demo --from a \
//        --from-host 127.0.0.1:PA --to b --to-host 127.0.0.1:PB --secs 40 \
//        [--manifest-after-kill no]
import readline from "node:readline";
import { launch, openPage, waitFor, sleep, assertLoopback } from "./lib.mjs";

function arg(name, dflt) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const URL_ = arg("url");
const FROM = arg("from");
const FROM_HOST = arg("from-host");
const TO = arg("to");
const TO_HOST = arg("to-host");
const SECS = Number(arg("secs", "40"));
// "yes": a steering manifest loaded after the kill must put --to first (a steering
// server that outlives the stopped edge); "no": the stopped edge was the steering server,
// so hls.js moves on its own errors, down the last PATHWAY-PRIORITY it got.
const MANIFEST_AFTER_KILL = arg("manifest-after-kill", "yes") === "yes";
if (!URL_ || !FROM || !TO || !FROM_HOST || !TO_HOST) {
  console.error("--url, --from, --from-host, --to and --to-host are required");
  process.exit(2);
}
assertLoopback(URL_);
const hard = setTimeout(() => {
  console.error("steering.mjs: exceeded its time limit");
  process.exit(1);
}, (SECS + 150) * 1000);
hard.unref();

const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

// In the page: records hls.js's steering manifests and pathway changes.
function watchSteering() {
  const hls = window.estuary && window.estuary.hls;
  if (!hls) return false;
  if (!window.steeringLog) {
    window.steeringLog = { manifests: [], levelsUpdated: 0 };
  }
  if (hls.__steeringWatched) return true;
  hls.__steeringWatched = true;
  const Events = window.Hls.Events;
  hls.on(Events.STEERING_MANIFEST_LOADED, (_e, d) => {
    window.steeringLog.manifests.push({
      t: Date.now(),
      url: d.url,
      priority: d.steeringManifest["PATHWAY-PRIORITY"],
    });
  });
  hls.on(Events.LEVELS_UPDATED, () => {
    window.steeringLog.levelsUpdated += 1;
  });
  return true;
}

function state() {
  const hls = window.estuary.hls;
  const s = window.estuary.stats();
  const lvl = hls && hls.levels[hls.loadLevel >= 0 ? hls.loadLevel : hls.currentLevel];
  return {
    currentTime: s.currentTime,
    playing: s.playing,
    levelUrl: lvl ? lvl.uri : null,
    pathway: lvl ? lvl.pathwayId : null,
    manifests: window.steeringLog ? window.steeringLog.manifests : [],
    levelsUpdated: window.steeringLog ? window.steeringLog.levelsUpdated : 0,
    fatalErrors: s.fatalErrors.length,
  };
}

// The last state seen, for the error message when a wait times out.
let lastState = null;
async function poll(page) {
  await page.evaluate(watchSteering);
  lastState = await page.evaluate(state);
  return lastState;
}

const browser = await launch();
let code = 1;
try {
  const page = await openPage(browser, URL_);
  await waitFor("hls.js", () => page.evaluate(watchSteering), { timeoutMs: 20000, everyMs: 100 });
  const before = await waitFor(
    `playback on pathway ${FROM} with a steering manifest`,
    async () => {
      const s = await poll(page);
      const onFrom = s.pathway === FROM && s.levelUrl && s.levelUrl.includes(FROM_HOST);
      return s.playing && s.currentTime > 1 && onFrom && s.manifests.length > 0 ? s : null;
    },
    { timeoutMs: 60000, everyMs: 250 },
  );
  console.log("PLAYING " + JSON.stringify(before));
  const answer = await Promise.race([nextLine(), sleep(60000).then(() => null)]);
  if (answer !== "killed") throw new Error(`expected "killed" on stdin, got ${answer}`);
  const killedAt = Date.now();
  const t0 = (await page.evaluate(state)).currentTime;
  // Moved: on the other pathway's host, a manifest loaded since the kill putting it
  // first, and at least 4 s of media played since the kill.
  let after = null;
  try {
    after = await waitFor(
      `pathway ${TO} and playback advancing`,
      async () => {
        const s = await poll(page);
        const steered =
          !MANIFEST_AFTER_KILL || s.manifests.some((m) => m.t >= killedAt && m.priority[0] === TO);
        const onTo = s.pathway === TO && s.levelUrl && s.levelUrl.includes(TO_HOST);
        return onTo && steered && s.currentTime >= t0 + 4 ? s : null;
      },
      { timeoutMs: SECS * 1000, everyMs: 250 },
    );
  } catch (e) {
    console.error(`${e && e.message ? e.message : e}; last state ${JSON.stringify(lastState)}`);
  }
  const last = after || (await page.evaluate(state));
  const out = {
    switched: !!after,
    pathway: last.pathway,
    level_url: last.levelUrl,
    advanced_s: +(last.currentTime - t0).toFixed(2),
    manifests_after_kill: last.manifests.filter((m) => m.t >= killedAt).map((m) => m.priority),
    levels_updated: last.levelsUpdated,
    fatal_errors: last.fatalErrors,
  };
  console.log("RESULT " + JSON.stringify(out));
  code = out.switched && out.fatal_errors === 0 ? 0 : 1;
} catch (e) {
  console.error(`steering.mjs: ${e && e.stack ? e.stack : e}; last state ${JSON.stringify(lastState)}`);
} finally {
  await browser.close().catch(() => {});
}
process.exit(code);
