// Shared helpers of the browser scripts: launching Debian's Chromium through playwright-core
// on a closed machine, bounded waits, medians.
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** Flags for a headless Chromium on a machine whose only network is loopback. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
  // Resolve no host name at all: every page here talks to 127.0.0.1 literally.
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
  // Keep timers and rendering running in a headless tab, so playback is measured as a
  // visible tab would play it.
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
];

/**
 * Launches Chromium. playwright-core gives each launch a fresh temporary --user-data-dir
 * and removes it on close.
 */
export async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, timeout: 30000 });
}

/** A browser context that refuses any request not aimed at the loopback interface. */
export async function loopbackContext(browser, opts = {}) {
  const ctx = await browser.newContext(Object.assign({ viewport: { width: 1280, height: 760 } }, opts));
  await ctx.route("**/*", (route) => {
    const u = new URL(route.request().url());
    if (u.hostname === "127.0.0.1" || u.hostname === "localhost" || u.hostname === "[::1]") return route.continue();
    return route.abort("blockedbyclient");
  });
  return ctx;
}

/**
 * A new loopback-only page (see loopbackContext) that has loaded `url`; each file of
 * `initScripts` runs in the page before its own scripts.
 */
export async function openPage(browser, url, initScripts = []) {
  const ctx = await loopbackContext(browser);
  for (const path of initScripts) await ctx.addInitScript({ path });
  const page = await ctx.newPage();
  await page.goto(url, { waitUntil: "load", timeout: 20000 });
  return page;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `fn` (async, returns a truthy value when done) every `everyMs` for at most
 * `timeoutMs`; returns the value or throws `what` with the last value seen.
 */
export async function waitFor(what, fn, { timeoutMs = 10000, everyMs = 200 } = {}) {
  const deadline = Date.now() + timeoutMs;
  const maxTries = Math.ceil(timeoutMs / everyMs) + 1;
  let last;
  for (let i = 0; i < maxTries; i++) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e && e.message ? e.message : e;
    }
    if (Date.now() >= deadline) break;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

export function median(xs) {
  const v = xs.filter((x) => typeof x === "number" && isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function percentile(xs, p) {
  const v = xs.filter((x) => typeof x === "number" && isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  return v[Math.min(v.length - 1, Math.floor((p / 100) * v.length))];
}

/** Checks that a URL points at the loopback interface; these scripts talk to nothing else. */
export function assertLoopback(url) {
  const u = new URL(url);
  if (!["127.0.0.1", "localhost", "[::1]"].includes(u.hostname)) {
    throw new Error(`refusing non-loopback URL ${url}`);
  }
  return u;
}
