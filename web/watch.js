// Estuary player page: LL-HLS playback (hls.js, or the browser's own HLS on Safari) with
// interaction overlays fed by the WebSocket channel. Polls are shown when *playback*
// reaches the poll's program date time, not when the WebSocket frame arrives: the frame
// is typically 1–2 s ahead of the picture.
//
// Query parameters: ?token=… (viewer, moderator or host token), role=host (show host
// controls; the server checks the token's role), q=RENDITION (start on a rendition, e.g.
// q=source), player=native|hlsjs (force an engine), __token__=… (a signed playback token:
// passed on to the multivariant playlist; the node carries it into every URI after that).
// window.estuary exposes the player state for tests and benchmarks.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const stream = decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop() || "");
  const token = params.get("token") || "";
  const wantHost = params.get("role") === "host";
  const playback = params.get("__token__");
  const manifest =
    `/live/${encodeURIComponent(stream)}/index.m3u8` +
    (playback ? `?__token__=${encodeURIComponent(playback)}` : "");
  const POLL_CLASS = "com.estuary.poll";
  const CLOSED_POLL_SHOW_MS = 15000; // final results stay on the video this long
  const DEFAULT_REACTIONS = ["❤️", "👍", "😂", "😮", "👏", "🔥"];

  document.title = `${stream} · Estuary`;
  $("stream-name").textContent = stream;

  // ---------------------------------------------------------------- helpers
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }
  let toastTimer = 0;
  function toast(msg) {
    const t = $("toast");
    t.textContent = msg;
    t.classList.remove("hidden");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.add("hidden"), 4000);
  }
  const fmtSec = (s) => (s === null || s === undefined || !isFinite(s) ? "–" : s.toFixed(2) + " s");
  const fmtRate = (bps) => (!bps ? "–" : bps >= 1e6 ? (bps / 1e6).toFixed(1) + " Mbps" : Math.round(bps / 1e3) + " kbps");
  const errText = (e) => (e && e.message) || (e && e.code) || String(e);

  // ---------------------------------------------------------------- player
  const video = $("video");
  const stats = {
    engine: "",
    fragsLoaded: 0,
    partsLoaded: 0,
    fatalErrors: [],
    errors: [],
    levelSwitches: 0,
    stalls: 0,
    // What each stall looked like (the last 20): when, where, the buffer per track and
    // the last media loaded, so a stall can be told from a late part or a slow decoder.
    stallLog: [],
    // The last few fragments or parts loaded per track (type), oldest first.
    recentLoads: {},
    playing: false,
    startedAt: 0,
  };
  let hls = null;
  let details = null; // latest LevelDetails (hls.js)
  const dateRanges = new Map(); // poll id -> {start: ms, end: ms|null}
  let retryTimer = 0;
  let retries = 0;

  function renditionName(level) {
    if (!level) return "";
    if (level.name) return level.name;
    const url = Array.isArray(level.url) ? level.url[0] : level.url || "";
    const m = /\/live\/[^/]+\/([^/]+)\/[^/]*$/.exec(url);
    return m ? decodeURIComponent(m[1]) : level.height ? level.height + "p" : "";
  }
  function levelLabel(level) {
    const parts = [renditionName(level)];
    if (level.width && level.height) parts.push(`${level.width}×${level.height}`);
    if (level.bitrate) parts.push(fmtRate(level.bitrate));
    return parts.filter(Boolean).join(" · ");
  }

  function useNative() {
    const forced = params.get("player");
    if (forced === "native") return true;
    if (forced === "hlsjs") return false;
    const hasHlsJs = typeof window.Hls === "function" && window.Hls.isSupported();
    const native = video.canPlayType("application/vnd.apple.mpegurl") !== "";
    // Safari plays LL-HLS natively (AVFoundation), which is Apple's reference player.
    return native && (!hasHlsJs || /Apple/.test(navigator.vendor || ""));
  }

  function startPlayer() {
    if (useNative()) {
      stats.engine = "native HLS";
      video.src = manifest;
      video.addEventListener("error", () => scheduleRetry("native playback error"));
      $("quality").disabled = true;
      tryPlay();
      return;
    }
    if (typeof window.Hls !== "function") {
      stats.engine = "none";
      showNotice("This browser cannot play HLS", "hls.js did not load (run scripts/setup.sh on the node).");
      return;
    }
    stats.engine = "hls.js " + window.Hls.version;
    createHls();
  }

  function createHls() {
    const Hls = window.Hls;
    hls = new Hls({
      lowLatencyMode: true,
      // Rate 1 turns off hls.js's own catch-up, which acts only with more than 1 s of
      // buffer ahead: never the case at sub-second latency. keepLatency() does it instead.
      maxLiveSyncPlaybackRate: 1,
      liveDurationInfinity: true,
      backBufferLength: 30,
      enableWorker: true,
      // A manifest 404 (stream not live yet) is retried by scheduleRetry, not hammered.
      manifestLoadPolicy: {
        default: {
          maxTimeToFirstByteMs: 10000,
          maxLoadTimeMs: 20000,
          timeoutRetry: { maxNumRetry: 2, retryDelayMs: 0, maxRetryDelayMs: 0 },
          errorRetry: { maxNumRetry: 1, retryDelayMs: 1000, maxRetryDelayMs: 8000 },
        },
      },
    });
    window.estuary.hls = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, (_e, data) => {
      retries = 0;
      fillQuality(data.levels);
      const q = params.get("q");
      if (q) {
        const idx = hls.levels.findIndex((l) => renditionName(l) === q);
        if (idx >= 0) {
          hls.currentLevel = idx;
          $("quality").value = String(idx);
        }
      }
      tryPlay();
    });
    hls.on(Hls.Events.LEVEL_UPDATED, (_e, data) => onDetails(data.details));
    hls.on(Hls.Events.LEVEL_LOADED, (_e, data) => onDetails(data.details));
    hls.on(Hls.Events.FRAG_LOADED, (_e, data) => {
      if (data.frag) {
        const f = data.frag;
        const p = data.part || f;
        const recent = (stats.recentLoads[f.type] = stats.recentLoads[f.type] || []);
        if (recent.length >= 8) recent.shift();
        recent.push({
          sn: f.sn,
          part: data.part ? data.part.index : null,
          start: +p.start.toFixed(3),
          end: +(p.start + p.duration).toFixed(3),
          at: Date.now(),
        });
      }
      if (data.frag && data.frag.type !== "main") return;
      if (data.part) stats.partsLoaded += 1;
      else stats.fragsLoaded += 1;
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, () => {
      stats.levelSwitches += 1;
      updateRendition();
    });
    hls.on(Hls.Events.ERROR, (_e, data) => {
      const rec = { type: data.type, details: data.details, fatal: !!data.fatal, t: Date.now() };
      if (stats.errors.length >= 50) stats.errors.shift();
      stats.errors.push(rec);
      if (!data.fatal) return;
      if (data.details === Hls.ErrorDetails.MANIFEST_LOAD_ERROR && !stats.playing) {
        // Not live yet: wait for the broadcaster instead of failing.
        showNotice("Waiting for the stream…", "It starts as soon as the broadcaster is live.");
        scheduleRetry("manifest not available");
        return;
      }
      stats.fatalErrors.push(rec);
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && stats.fatalErrors.length <= 3) {
        hls.recoverMediaError();
      } else {
        scheduleRetry(data.details);
      }
    });
    hls.attachMedia(video);
    hls.loadSource(manifest);
  }

  function scheduleRetry(why) {
    clearTimeout(retryTimer);
    retries += 1;
    const delay = Math.min(10000, 1000 * retries);
    retryTimer = setTimeout(() => {
      if (hls) {
        hls.destroy();
        hls = null;
        createHls();
      } else if (video.src) {
        video.src = manifest;
        tryPlay();
      }
    }, delay);
    console.debug("estuary: retry in", delay, "ms:", why);
  }

  function onDetails(d) {
    if (!d) return;
    details = d;
    $("stat-part").textContent = d.partTarget ? d.partTarget.toFixed(3) + " s" : "none";
    for (const dr of Object.values(d.dateRanges || {})) {
      if (!dr || dr.class !== POLL_CLASS) continue;
      const a = dr.attr || {};
      const id = a["X-POLL-ID"] || a["X-POLL"] || String(dr.id).replace(/^(poll[-_:.]?)/, "");
      const start = dr.startDate ? dr.startDate.getTime() : NaN;
      const end = dr.endDate ? dr.endDate.getTime() : null;
      if (isFinite(start)) dateRanges.set(id, { start, end });
    }
  }

  function fillQuality(levels) {
    const sel = $("quality");
    sel.replaceChildren(el("option", { value: "-1", text: "Auto" }));
    levels.forEach((l, i) => sel.append(el("option", { value: String(i), text: levelLabel(l) })));
    sel.disabled = levels.length < 1;
  }
  $("quality").addEventListener("change", (e) => {
    if (!hls) return;
    hls.currentLevel = Number(e.target.value);
    updateRendition();
  });
  $("golive").addEventListener("click", () => {
    if (hls && hls.liveSyncPosition) video.currentTime = hls.liveSyncPosition;
    else if (video.seekable.length) video.currentTime = video.seekable.end(video.seekable.length - 1) - 1;
    tryPlay();
  });
  $("unmute").addEventListener("click", () => {
    video.muted = !video.muted;
    $("unmute").textContent = video.muted ? "Unmute" : "Mute";
    tryPlay();
  });

  function tryPlay() {
    const p = video.play();
    if (p && p.catch) p.catch(() => {});
  }
  function showNotice(strong, sub) {
    const n = $("notice");
    n.replaceChildren(el("strong", { text: strong }), el("span", { text: sub }));
    n.classList.remove("hidden");
  }
  video.addEventListener("playing", () => {
    stats.playing = true;
    if (!stats.startedAt) stats.startedAt = Date.now();
    $("notice").classList.add("hidden");
  });

  function currentLevel() {
    if (!hls) return null;
    const i = hls.currentLevel >= 0 ? hls.currentLevel : hls.loadLevel;
    return hls.levels && hls.levels[i] ? hls.levels[i] : null;
  }
  function updateRendition() {
    const l = currentLevel();
    let txt = l ? levelLabel(l) : stats.engine === "native HLS" ? "native" : "–";
    if (hls && hls.autoLevelEnabled && l) txt = "Auto · " + txt;
    $("stat-rendition").textContent = txt;
    $("stat-bitrate").textContent = l ? fmtRate(l.bitrate) : "–";
  }

  /** Program date time of the frame on screen, ms since the epoch, or null. */
  function playingDate() {
    if (hls) {
      const d = hls.playingDate;
      return d && isFinite(d.getTime()) ? d.getTime() : null;
    }
    if (video.getStartDate) {
      const s = video.getStartDate().getTime();
      if (isFinite(s) && s > 0) return s + video.currentTime * 1000;
    }
    return null;
  }
  function liveLatency() {
    if (hls) return isFinite(hls.latency) && hls.latency > 0 ? hls.latency : null;
    if (video.seekable.length) return video.seekable.end(video.seekable.length - 1) - video.currentTime;
    return null;
  }
  function bufferAhead() {
    const b = video.buffered;
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) <= video.currentTime + 0.05 && b.end(i) >= video.currentTime) return b.end(i) - video.currentTime;
    }
    return 0;
  }

  /**
   * Holds playback near the server's hold-back (hls.targetLatency, from PART-HOLD-BACK):
   * plays slightly faster while behind and while the buffer can afford it. Playback
   * starts at a segment's independent part, so without this it stays up to a GOP late.
   */
  function keepLatency() {
    if (!hls || video.paused || !stats.playing || params.get("catchup") === "off") return;
    const lat = liveLatency();
    const target = hls.targetLatency;
    if (lat === null || !target) return;
    const ahead = lat - target;
    const buf = bufferAhead();
    let rate = 1;
    // Enough buffer to speed up on: two parts (0.35 s at most), so 100 ms parts, whose
    // whole hold-back is 0.3 s, catch up too.
    const details = currentLevel() && currentLevel().details;
    const spare = Math.min(0.35, 2 * ((details && details.partTarget) || 0.2));
    if (ahead > 0.1 && buf > spare) rate = ahead > 1 ? 1.25 : ahead > 0.4 ? 1.15 : 1.08;
    if (ahead > 6) {
      // Far behind (a long stall): jump rather than race.
      if (hls.liveSyncPosition) video.currentTime = hls.liveSyncPosition;
      return;
    }
    if (video.playbackRate !== rate) video.playbackRate = rate;
  }
  video.addEventListener("waiting", () => {
    if (!stats.playing) return;
    stats.stalls += 1;
    if (stats.stallLog.length >= 20) stats.stallLog.shift();
    stats.stallLog.push({
      t: Date.now(),
      currentTime: +video.currentTime.toFixed(3),
      latency: liveLatency(),
      buffered: trackBuffers(),
      recentLoads: JSON.parse(JSON.stringify(stats.recentLoads)),
    });
  });
  /** Buffered ranges of the element, as text, and hls.js's forward buffer per track. */
  function trackBuffers() {
    const text = (b) => {
      const r = [];
      for (let i = 0; i < b.length; i++) r.push(b.start(i).toFixed(3) + "-" + b.end(i).toFixed(3));
      return r.join(",");
    };
    const out = { media: text(video.buffered) };
    const fwd = (info) => (info && isFinite(info.len) ? +info.len.toFixed(3) : null);
    if (hls) {
      // hls.js's forward buffer per track (main = video, or muxed audio+video).
      out.mainAhead = fwd(hls.mainForwardBufferInfo);
      out.audioAhead = fwd(hls.audioForwardBufferInfo);
    }
    return out;
  }

  function snapshot() {
    const pd = playingDate();
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    const l = currentLevel();
    return {
      engine: stats.engine,
      currentTime: video.currentTime,
      paused: video.paused,
      readyState: video.readyState,
      playing: stats.playing,
      latency: liveLatency(),
      targetLatency: hls ? hls.targetLatency : null,
      playingDate: pd,
      // Wall clock minus the PDT on screen; the PDT is stamped at ingest arrival.
      g2gMs: pd === null ? null : Date.now() - pd,
      buffer: bufferAhead(),
      rendition: l ? renditionName(l) : null,
      level: hls ? hls.currentLevel : null,
      autoLevel: hls ? hls.autoLevelEnabled : null,
      levels: hls && hls.levels ? hls.levels.map(renditionName) : [],
      lowLatencyMode: hls ? hls.lowLatencyMode : null,
      partTarget: details ? details.partTarget : null,
      canBlockReload: details ? details.canBlockReload : null,
      partListLength: details && details.partList ? details.partList.length : 0,
      fragsLoaded: stats.fragsLoaded,
      partsLoaded: stats.partsLoaded,
      fatalErrors: stats.fatalErrors.slice(),
      errors: stats.errors.slice(),
      stalls: stats.stalls,
      stallLog: stats.stallLog.slice(),
      playbackRate: video.playbackRate,
      droppedFrames: q ? q.droppedVideoFrames : null,
      totalFrames: q ? q.totalVideoFrames : null,
      dateRanges: Object.fromEntries(dateRanges),
    };
  }

  function tickStats() {
    const s = snapshot();
    $("stat-latency").textContent = fmtSec(s.latency);
    $("stat-g2g").textContent = s.g2gMs === null ? "–" : fmtSec(s.g2gMs / 1000);
    $("stat-target").textContent = fmtSec(s.targetLatency);
    $("stat-buffer").textContent = fmtSec(s.buffer);
    $("stat-engine").textContent = s.engine || "–";
    $("stat-dropped").textContent = s.totalFrames ? `${s.droppedFrames} / ${s.totalFrames}` : "–";
    $("stat-ll").classList.toggle("hidden", !(s.partsLoaded > 0));
    $("unmute").classList.toggle("hidden", !s.playing);
    updateRendition();
  }

  // ---------------------------------------------------------------- interaction state
  const me = { id: null, role: "viewer", anonymous: true, name: "" };
  const polls = new Map(); // id -> {poll, arrived, myVote, tallyVersion}
  const questions = new Map(); // id -> question
  const upvoted = new Set();
  let reactionSet = DEFAULT_REACTIONS.slice();
  const reactionTotals = {};
  let slowMode = 0;
  let chatCount = 0;
  const isMod = () => me.role === "moderator" || me.role === "host";
  const isHost = () => me.role === "host";

  function setWsStatus(s) {
    const b = $("ws-badge");
    const map = {
      connecting: ["connecting…", ""],
      reconnecting: ["reconnecting…", "warn"],
      open: ["interaction on", "ok"],
      closed: ["disconnected", "warn"],
      refused: ["refused", "warn"],
      "gave-up": ["offline: reload the page", "warn"],
    };
    const [text, cls] = map[s] || [s, ""];
    b.textContent = text;
    b.className = "badge " + cls;
    window.estuary.wsStatus = s;
  }

  // ---------------------------------------------------------------- chat
  function roleOf(u) {
    return (u && u.role) || "viewer";
  }
  function chatLine(m) {
    const cls = ["msg"];
    if (m.system) cls.push("system");
    const tools = el("span", { class: "tools" });
    if (isHost()) {
      tools.append(el("button", { class: "small", type: "button", title: "pin this message", text: "Pin", onclick: () => act({ type: "pin", id: m.id }) }));
    }
    if (isMod() && m.user && m.user.id !== me.id && !m.system) {
      tools.append(
        el("button", { class: "small danger", type: "button", title: "delete", text: "Delete", onclick: () => act({ type: "delete", id: m.id }) }),
        el("button", { class: "small", type: "button", title: "mute this user for 60 s", text: "Time out", onclick: () => act({ type: "timeout", user: m.user.id, secs: 60 }) }),
        el("button", { class: "small danger", type: "button", title: "ban this user", text: "Ban", onclick: () => act({ type: "ban", user: m.user.id }) })
      );
    }
    return el(
      "div",
      { class: cls.join(" "), "data-id": m.id, "data-user": m.user ? m.user.id : "" },
      m.system ? el("span", { class: "who", text: "Host" }) : el("span", { class: "who " + roleOf(m.user), text: m.user ? m.user.name : "?" }),
      el("span", { class: "text", text: m.text }),
      tools.childNodes.length ? tools : null
    );
  }
  function addChat(m, { scroll = true } = {}) {
    const list = $("chat-list");
    if (m.id && list.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return; // resume overlap
    $("chat-empty").classList.add("hidden");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
    list.append(chatLine(m));
    chatCount += 1;
    // Keep the DOM bounded on busy rooms.
    while (list.children.length > 301) list.children[1].remove();
    if (scroll && atBottom) list.scrollTop = list.scrollHeight;
  }
  function addNote(text, cls = "system") {
    const list = $("chat-list");
    $("chat-empty").classList.add("hidden");
    list.append(el("div", { class: "msg " + cls }, el("span", { class: "text", text })));
    list.scrollTop = list.scrollHeight;
  }
  function setPinned(m) {
    const box = $("pinned");
    if (!m) {
      box.classList.add("hidden");
      return;
    }
    const t = $("pinned-text");
    t.replaceChildren(el("b", { text: (m.user ? m.user.name : "") + " " }), m.text);
    if (isHost()) t.append(" ", el("button", { class: "small", type: "button", text: "unpin", onclick: () => act({ type: "pin" }) }));
    box.classList.remove("hidden");
  }
  function updateChatHint() {
    const parts = [];
    if (me.anonymous) parts.push("You are watching anonymously: you can react. A viewer token lets you chat, vote and ask.");
    if (slowMode > 0) parts.push(`Slow mode: one message every ${slowMode} s.`);
    $("chat-hint").textContent = parts.join(" ");
    const anon = me.anonymous;
    $("chat-input").disabled = anon;
    $("qa-input").disabled = anon;
    $("chat-input").placeholder = anon ? "Chat needs a viewer token" : "Send a message";
  }
  $("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("chat-input");
    const text = input.value.trim();
    if (!text) return;
    iv.request({ type: "chat", text }).then(
      () => {
        input.value = "";
      },
      (err) => toast(errText(err))
    );
  });

  // ---------------------------------------------------------------- polls
  function upsertPoll(p) {
    const cur = polls.get(p.id);
    if (cur) {
      cur.poll = p;
    } else {
      polls.set(p.id, { poll: p, arrived: Date.now(), myVote: null, tallyVersion: -1 });
    }
    renderHostPolls();
    renderPoll();
  }
  /** When playback reaches this poll (ms since epoch): the DATERANGE if the player has it, else the event stamp. */
  function pollStart(entry) {
    const dr = dateRanges.get(entry.poll.id);
    if (dr) return dr.start;
    const t = entry.poll.opened && Date.parse(entry.poll.opened.pdt);
    return isFinite(t) ? t : entry.arrived;
  }
  function pollEnd(entry) {
    if (entry.poll.state !== "closed") return null;
    const dr = dateRanges.get(entry.poll.id);
    if (dr && dr.end) return dr.end;
    const t = entry.poll.closed && Date.parse(entry.poll.closed.pdt);
    return isFinite(t) ? t : entry.arrived;
  }
  /** Position on the program timeline, or null when nothing plays (then overlays show at once). */
  function timelineNow() {
    const pd = playingDate();
    return stats.playing && !video.paused && pd !== null ? pd : null;
  }
  function reached(t, now) {
    if (t === null) return false;
    if (now === null) return true;
    // A stamp far ahead of playback means mismatched clocks: show it rather than never.
    return now >= t || t - now > 60000;
  }
  function currentPoll() {
    const now = timelineNow();
    let best = null;
    for (const entry of polls.values()) {
      if (!reached(pollStart(entry), now)) continue;
      const end = pollEnd(entry);
      const closedOnScreen = end !== null && reached(end, now);
      if (closedOnScreen) {
        // Show final results for a while after the close reaches the screen.
        const shownFor = (now === null ? Date.now() : now) - end;
        if (shownFor > CLOSED_POLL_SHOW_MS) continue;
      }
      if (!best || pollStart(entry) >= pollStart(best.entry)) best = { entry, closedOnScreen };
    }
    return best;
  }
  let renderedPollKey = "";
  function renderPoll() {
    const slot = $("poll-slot");
    const cur = currentPoll();
    if (!cur) {
      if (renderedPollKey) slot.replaceChildren();
      renderedPollKey = "";
      return;
    }
    const { entry, closedOnScreen } = cur;
    const p = entry.poll;
    if (!window.estuary.pollShown[p.id]) {
      // For tests: when the overlay appeared, against the program time on screen.
      window.estuary.pollShown[p.id] = { at: Date.now(), arrived: entry.arrived, playingDate: timelineNow(), start: pollStart(entry), fromDateRange: dateRanges.has(p.id) };
    }
    const total = p.tallies.reduce((a, b) => a + b, 0);
    const key = JSON.stringify([p.id, p.tallies, closedOnScreen, entry.myVote, me.anonymous]);
    if (key === renderedPollKey) return;
    renderedPollKey = key;
    const max = Math.max(...p.tallies);
    const canVote = !closedOnScreen && !me.anonymous;
    const box = el(
      "div",
      { class: "poll-overlay", id: "poll", "data-poll": p.id, "data-state": closedOnScreen ? "closed" : "open" },
      el("div", { class: "kicker" + (closedOnScreen ? " closed" : ""), text: closedOnScreen ? "Poll results" : "Live poll" }),
      el("h3", { text: p.question })
    );
    p.options.forEach((opt, i) => {
      const n = p.tallies[i] || 0;
      const pct = total ? Math.round((100 * n) / total) : 0;
      const cls = ["poll-option"];
      if (entry.myVote === i) cls.push("mine");
      if (closedOnScreen && n === max && total > 0) cls.push("winner");
      const b = el(
        "button",
        { class: cls.join(" "), type: "button", "data-option": i, "data-votes": n, disabled: !canVote },
        el("span", { class: "bar", style: `width:${pct}%` }),
        el("span", { text: opt }),
        el("span", { class: "pct", text: `${pct}% · ${n}` })
      );
      b.addEventListener("click", () => vote(p.id, i));
      box.append(b);
    });
    const foot = el("div", { class: "foot" }, el("span", { class: "total", text: `${total} vote${total === 1 ? "" : "s"}` }));
    if (!closedOnScreen) foot.append(el("span", { class: "countdown", "data-closes": p.closes_at }));
    else if (me.anonymous) foot.append(el("span", { text: "" }));
    if (!closedOnScreen && me.anonymous) foot.append(el("span", { text: "token needed to vote" }));
    box.append(foot);
    slot.replaceChildren(box);
    tickCountdown();
  }
  function tickCountdown() {
    const c = document.querySelector("#poll .countdown");
    if (!c) return;
    const left = Math.max(0, Math.round((Date.parse(c.dataset.closes) - Date.now()) / 1000));
    c.textContent = isFinite(left) ? `${left} s left` : "";
  }
  function vote(pollId, option) {
    const entry = polls.get(pollId);
    iv.request({ type: "vote", poll: pollId, option }).then(
      () => {
        if (entry) entry.myVote = option;
        renderPoll();
      },
      (err) => toast(errText(err))
    );
  }
  function renderHostPolls() {
    if (!isHost()) return;
    const box = $("host-polls");
    box.replaceChildren();
    for (const { poll } of polls.values()) {
      if (poll.state !== "open") continue;
      box.append(
        el(
          "div",
          { class: "item", "data-poll": poll.id },
          el("span", { text: `${poll.question} (${poll.tallies.reduce((a, b) => a + b, 0)})` }),
          el("button", { class: "small danger", type: "button", text: "Close", onclick: () => act({ type: "poll_close", poll: poll.id }) })
        )
      );
    }
  }

  // ---------------------------------------------------------------- Q&A
  const stateRank = { pinned: 0, open: 1, answered: 2, dismissed: 3 };
  function renderQuestions() {
    const list = $("qa-list");
    const qs = [...questions.values()].filter((q) => q.state !== "dismissed");
    qs.sort((a, b) => stateRank[a.state] - stateRank[b.state] || b.votes - a.votes || a.ts.localeCompare(b.ts));
    $("qa-count").textContent = qs.length ? String(qs.length) : "";
    list.replaceChildren();
    if (!qs.length) {
      list.append(el("div", { class: "empty", text: "No questions yet." }));
      return;
    }
    for (const q of qs) {
      const voted = upvoted.has(q.id);
      const up = el(
        "button",
        { class: "up" + (voted ? " voted" : ""), type: "button", title: "upvote", disabled: voted || me.anonymous || (q.user && q.user.id === me.id) },
        el("span", { text: "▲" }),
        el("span", { class: "votes", text: String(q.votes) })
      );
      up.addEventListener("click", () =>
        iv.request({ type: "upvote", question: q.id }).then(
          () => {
            upvoted.add(q.id);
            renderQuestions();
          },
          (err) => toast(errText(err))
        )
      );
      const body = el(
        "div",
        {},
        el("div", {}, el("b", { text: q.user ? q.user.name : "" }), q.state === "pinned" || q.state === "answered" ? el("span", { class: "state " + q.state, text: q.state }) : null),
        el("div", { class: "qtext", text: q.text })
      );
      if (isMod()) {
        const tools = el("div", { class: "tools" });
        if (isHost()) {
          if (q.state !== "answered") tools.append(el("button", { class: "small", type: "button", text: "Answered", onclick: () => act({ type: "question_state", question: q.id, state: "answered" }) }));
          if (q.state !== "pinned") tools.append(el("button", { class: "small", type: "button", text: "Pin", onclick: () => act({ type: "question_state", question: q.id, state: "pinned" }) }));
          else tools.append(el("button", { class: "small", type: "button", text: "Unpin", onclick: () => act({ type: "question_state", question: q.id, state: "open" }) }));
        }
        tools.append(el("button", { class: "small danger", type: "button", text: "Dismiss", onclick: () => act({ type: "question_state", question: q.id, state: "dismissed" }) }));
        body.append(tools);
      }
      const cls = ["question"];
      if (q.state === "pinned") cls.push("pinned-q");
      if (q.state === "answered") cls.push("answered");
      list.append(el("div", { class: cls.join(" "), "data-id": q.id }, up, body));
    }
  }
  $("qa-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("qa-input");
    const text = input.value.trim();
    if (!text) return;
    iv.request({ type: "ask", text }).then(
      () => {
        input.value = "";
      },
      (err) => toast(errText(err))
    );
  });

  // ---------------------------------------------------------------- reactions
  function renderReactionButtons() {
    const box = $("reactions");
    box.replaceChildren();
    for (const emoji of reactionSet) {
      const b = el("button", { type: "button", "data-emoji": emoji, title: "react" }, emoji, el("span", { class: "count hidden", text: "0" }));
      b.addEventListener("click", () => {
        if (!iv.send({ type: "react", emoji })) toast("Not connected to the interaction channel");
      });
      box.append(b);
    }
  }
  let floaterCount = 0;
  function spawnFloaters(counts, windowMs) {
    const box = $("floaters");
    for (const [emoji, n] of Object.entries(counts)) {
      reactionTotals[emoji] = (reactionTotals[emoji] || 0) + n;
      const btn = document.querySelector(`#reactions button[data-emoji="${CSS.escape(emoji)}"] .count`);
      if (btn) {
        const t = reactionTotals[emoji];
        btn.textContent = t > 999 ? Math.round(t / 100) / 10 + "k" : String(t);
        btn.classList.remove("hidden");
      }
      // Aggregated counts: a few emoji per batch, however many people pressed.
      const shown = Math.min(n, 6);
      for (let i = 0; i < shown; i++) {
        setTimeout(() => {
          if (box.childElementCount > 60) return;
          const f = el("span", { class: "floater", text: emoji });
          f.style.left = Math.round(Math.random() * 50) + "px";
          f.style.setProperty("--dx", Math.round(Math.random() * 40 - 20) + "px");
          box.append(f);
          floaterCount += 1;
          window.estuary.floatersSpawned = floaterCount;
          f.addEventListener("animationend", () => f.remove());
        }, (i * (windowMs || 250)) / shown);
      }
    }
    window.estuary.reactionTotals = Object.assign({}, reactionTotals);
  }

  // ---------------------------------------------------------------- host actions
  function act(frame) {
    return iv.request(frame).catch((err) => toast(errText(err)));
  }
  $("poll-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const question = $("poll-question").value.trim();
    const options = $("poll-options").value.split("\n").map((s) => s.trim()).filter(Boolean);
    if (options.length < 2) return toast("A poll needs at least two options");
    iv.request({ type: "poll_open", question, options, duration_secs: Number($("poll-duration").value) }).then(
      () => {
        $("poll-question").value = "";
        $("poll-options").value = "";
      },
      (err) => toast(errText(err))
    );
  });
  $("slow-mode").addEventListener("change", (e) => act({ type: "slow_mode", secs: Number(e.target.value) }));
  $("system-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("system-input").value.trim();
    if (!text) return;
    act({ type: "system", text }).then(() => ($("system-input").value = ""));
  });

  // ---------------------------------------------------------------- frames
  function onFrame(f) {
    switch (f.type) {
      case "welcome":
        me.id = f.user && f.user.id;
        me.name = f.user && f.user.name;
        me.role = (f.user && f.user.role) || "viewer";
        me.anonymous = !!f.anonymous;
        if (f.limits) {
          if (Array.isArray(f.limits.reactions) && f.limits.reactions.length) reactionSet = f.limits.reactions;
          if (f.limits.chat_max_len) $("chat-input").maxLength = f.limits.chat_max_len;
          if (f.limits.question_max_len) $("qa-input").maxLength = f.limits.question_max_len;
        }
        renderReactionButtons();
        $("host").classList.toggle("hidden", !(wantHost && isMod()));
        $("poll-form").classList.toggle("hidden", !isHost());
        $("system-form").classList.toggle("hidden", !isHost());
        if (wantHost && !isMod()) toast("This token is not a host token: host controls are hidden");
        const rb = $("role-badge");
        rb.textContent = me.anonymous ? "anonymous" : `${me.name} · ${me.role}`;
        rb.classList.remove("hidden");
        updateChatHint();
        break;
      case "history":
        for (const m of f.messages || []) addChat(m, { scroll: false });
        $("chat-list").scrollTop = $("chat-list").scrollHeight;
        if (f.complete === false) addNote("Some messages were missed while disconnected.");
        break;
      case "state":
        for (const p of f.polls || []) upsertPoll(p);
        questions.clear();
        for (const q of f.questions || []) questions.set(q.id, q);
        renderQuestions();
        setPinned(f.pinned || null);
        slowMode = f.slow_mode_secs || 0;
        $("slow-mode").value = String(slowMode);
        updateChatHint();
        break;
      case "chat":
        addChat(f);
        break;
      case "deleted": {
        const n = $("chat-list").querySelector(`[data-id="${CSS.escape(f.id)}"]`);
        if (n) n.remove();
        break;
      }
      case "moderation":
        addNote(`A user was ${f.action === "timeout" ? "timed out" : f.action === "ban" ? "banned" : "unbanned"}.`);
        if (f.action !== "unban") {
          for (const n of $("chat-list").querySelectorAll(`[data-user="${CSS.escape(f.user)}"]`)) n.remove();
        }
        break;
      case "slow_mode":
        slowMode = f.secs || 0;
        $("slow-mode").value = String(slowMode);
        updateChatHint();
        break;
      case "pinned":
        setPinned(f.message || null);
        break;
      case "poll_opened":
      case "poll_closed":
        upsertPoll(f);
        break;
      case "poll_tally": {
        const entry = polls.get(f.poll);
        if (entry && f.version > entry.tallyVersion) {
          entry.tallyVersion = f.version;
          entry.poll = Object.assign({}, entry.poll, { tallies: f.tallies });
          renderPoll();
          renderHostPolls();
        }
        break;
      }
      case "question_asked":
        questions.set(f.id, f);
        renderQuestions();
        break;
      case "question_votes": {
        const q = questions.get(f.id);
        if (q) {
          q.votes = f.votes;
          renderQuestions();
        }
        break;
      }
      case "question_state": {
        const q = questions.get(f.id);
        if (q) {
          q.state = f.state;
          renderQuestions();
        }
        break;
      }
      case "reactions":
        spawnFloaters(f.counts || {}, f.window_ms);
        break;
      case "tip":
        addNote(`Tip: ${f.from} tipped ${(f.amount_minor / 100).toFixed(2)} ${f.currency}${f.message ? ": " + f.message : ""}`, "tip");
        break;
      case "error":
        if (!f.ref) toast(f.message || f.code);
        break;
    }
    window.estuary.framesSeen[f.type] = (window.estuary.framesSeen[f.type] || 0) + 1;
  }

  // ---------------------------------------------------------------- tabs, viewers
  for (const b of document.querySelectorAll(".tabs button")) {
    b.addEventListener("click", () => {
      for (const o of document.querySelectorAll(".tabs button")) o.classList.toggle("active", o === b);
      $("pane-chat").classList.toggle("hidden", b.dataset.tab !== "chat");
      $("pane-qa").classList.toggle("hidden", b.dataset.tab !== "qa");
    });
  }
  async function refreshStreamInfo() {
    try {
      const r = await fetch("/api/streams", { cache: "no-store" });
      if (!r.ok) return;
      const s = (await r.json()).find((x) => x.name === stream);
      if (!s) return;
      const lb = $("live-badge");
      lb.textContent = s.live ? "LIVE" : "offline";
      lb.className = "badge" + (s.live ? " live" : "");
      $("viewers").textContent = `${s.viewers} watching`;
    } catch (e) {
      /* the next tick tries again */
    }
  }

  // ---------------------------------------------------------------- start
  window.estuary = {
    stream,
    hls: null,
    stats: snapshot,
    framesSeen: {},
    pollShown: {},
    reactionTotals: {},
    floatersSpawned: 0,
    wsStatus: "connecting",
    polls: () => [...polls.values()].map((e) => ({ id: e.poll.id, state: e.poll.state, tallies: e.poll.tallies, start: pollStart(e), myVote: e.myVote })),
    chatCount: () => chatCount,
  };
  const iv = new window.EstuaryInteract(stream, { token, onFrame, onStatus: setWsStatus });
  window.estuary.interact = iv;
  renderReactionButtons();
  updateChatHint();
  startPlayer();
  iv.connect();
  refreshStreamInfo();
  setInterval(refreshStreamInfo, 10000);
  setInterval(() => {
    keepLatency();
    tickStats();
    renderPoll();
    tickCountdown();
  }, 250);
})();
