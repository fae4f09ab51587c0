// Front page: the streams this node knows (GET /api/streams), with viewer counts, player
// links and what OBS needs to publish. Refreshed every few seconds.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
  }
  function copyButton(value) {
    return el("button", {
      class: "small",
      type: "button",
      text: "Copy",
      onclick: async (ev) => {
        const b = ev.currentTarget;
        try {
          await navigator.clipboard.writeText(value);
          b.textContent = "Copied";
        } catch (e) {
          b.textContent = "Select it";
        }
        setTimeout(() => (b.textContent = "Copy"), 1500);
      },
    });
  }
  function kv(k, v) {
    return [el("span", { class: "k", text: k }), el("code", { title: v, text: v }), copyButton(v)];
  }
  function card(s) {
    const abs = (p) => location.origin + p;
    const head = el(
      "div",
      { class: "head" },
      el("span", { class: "name", text: s.name }),
      el("span", { class: "badge" + (s.live ? " live" : ""), text: s.live ? "LIVE" : "offline" }),
      el("span", { class: "badge viewers", "data-viewers": s.viewers, text: `${s.viewers} watching` })
    );
    const rows = el("div", { class: "kv" });
    rows.append(...kv("SRT URL", s.srt_url), ...kv("OBS server", s.obs.server), ...kv("Stream key", s.obs.stream_key));
    if (s.obs_rtmp) {
      // RTMP for encoders without SRT (OBS: Service Custom, these two fields).
      rows.append(...kv("RTMP server", s.obs_rtmp.server), ...kv("RTMP stream key", s.obs_rtmp.stream_key));
    }
    rows.append(...kv("HLS", abs(s.playlist)));
    const actions = el(
      "div",
      { class: "actions" },
      el("a", { class: "button" + (s.live ? "" : " off"), href: s.watch, text: s.live ? "Watch" : "Open player" })
    );
    const needs = [
      s.passphrase_required && "This stream needs its SRT passphrase (replace YOUR_PASSPHRASE; in OBS, add it to the URL).",
      s.rtmp_key_required && "RTMP needs this stream's key (replace YOUR_RTMP_KEY).",
    ].filter(Boolean);
    const note = needs.length ? el("div", { class: "muted", text: needs.join(" ") }) : null;
    return el("article", { class: "card", "data-stream": s.name }, head, rows, note, actions);
  }
  let failures = 0;
  async function refresh() {
    try {
      const r = await fetch("/api/streams", { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const list = await r.json();
      failures = 0;
      list.sort((a, b) => b.live - a.live || b.viewers - a.viewers || a.name.localeCompare(b.name));
      const cards = $("cards");
      cards.replaceChildren(...(list.length ? list.map(card) : [el("div", { class: "empty", text: "No streams configured. Add a [streams.NAME] table to the config." })]));
      const live = list.filter((s) => s.live).length;
      const viewers = list.reduce((a, s) => a + (s.viewers || 0), 0);
      $("summary").textContent = `${live} live · ${viewers} watching`;
    } catch (e) {
      failures += 1;
      $("summary").textContent = "node unreachable";
    }
  }
  refresh();
  // Slower when the node does not answer; a few minutes of failures stop the refresh.
  let ticks = 0;
  const timer = setInterval(() => {
    ticks += 1;
    if (failures > 60) return clearInterval(timer);
    if (failures === 0 || ticks % 4 === 0) refresh();
  }, 5000);
})();
